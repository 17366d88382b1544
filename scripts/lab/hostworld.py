"""Test hosts for the installer's host steps: a signed bundle packed by hand from mirror-world
artifacts, and per-test host roots holding a real `@core` install (dnf --installroot), a fake
kernel (/proc and /sys files for the installer's probes) and recording stand-ins on PATH.
The fixtures that make them are in tests/integration/conftest.py:

    def test_x(host_bundle, test_host):
        done = test_host.installer("install", "--bundle", host_bundle.tar, ...)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from mirrorworld import yum as yumworld

from builder.cache import Cache
from builder.registry.image_archive import bundle_images, write_archive
from builder.registry.images import PulledImage
from builder.registry.mediatypes import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST
from lab import osreleases, py36
from lab.bundles import REPO, make_key, pack_source
from lab.dnfroot import dnf, write_config

MW = Path(os.environ.get("KUBECRATE_MW_CACHE", REPO / ".cache" / "mirror-world"))
STANDINS = Path(__file__).resolve().with_name("hoststandins.py")
STANDIN_NAMES = ("yum", "rpm", "systemctl", "modprobe", "sysctl", "swapoff", "setenforce",
                 "getenforce", "setsebool", "getsebool", "semanage", "restorecon",
                 "hostnamectl", "firewall-cmd", "docker", "chronyc", "ctr", "crictl")
PACKAGES = ["docker-ce-20.10.24-3.el7", "docker-ce-cli-20.10.24-3.el7", "containerd.io",
            "conntrack-tools", "socat"]
KERNEL = "3.10.0-1160.el7.x86_64"
WORKER_IMAGES = ["registry.k8s.io/pause:3.6", "registry.k8s.io/kube-proxy:v1.23.17",
                 "docker.io/flannel/flannel:v0.21.5"]
CONTROL_PLANE_ONLY = ["registry.k8s.io/kube-apiserver:v1.23.17", "registry.k8s.io/etcd:3.5.6-0"]
CLUSTER_YAML = """\
cluster_name: test
control_plane:
  vip: 10.0.0.100
  dns_name: cluster-endpoint
  port: 8443
networking:
  pod_cidr: 10.244.0.0/16
  service_cidr: 10.96.0.0/12
ntp_servers: [10.0.0.1]
upstream_dns: [10.0.0.53]
firewall: disable
load_balancer: {interface: eth0, auth_pass: k8sVIP42}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
"""
CENTOS7 = osreleases.CENTOS7


def _tar_gz(members: Dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _layer(files: Dict[str, bytes]) -> tuple[bytes, str]:
    """(gzip layer, diff_id) of a layer holding `files`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def _image(cache: Cache, reference: str, base: tuple[bytes, str]) -> PulledImage:
    own = _layer({"etc/image-name": reference.encode() + b"\n"})
    layers = [base, own]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/true"], "Labels": {"ref": reference}},
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}},
                        sort_keys=True).encode()
    config_digest = cache.put_bytes(config)
    layer_digests = tuple(cache.put_bytes(blob) for blob, _ in layers)
    media = DOCKER_LAYER
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG,
                   "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": media, "size": len(blob), "digest": digest}
                   for (blob, _), digest in zip(layers, layer_digests)],
    }).encode()
    return PulledImage(reference, "linux/amd64", cache.put_bytes(manifest),
                       DOCKER_MANIFEST, config_digest,
                       layer_digests, (media, media), tuple(len(b) for b, _ in layers))


@dataclass
class HostBundle:
    tar: Path
    public_key: Path
    other_arch_tar: Path
    images: List[dict]
    www: Path
    repos: Dict[str, str]


def build_source(folder: Path, www: Path, repos: Dict[str, str], cache: Cache) -> List[dict]:
    """The bundle tree: repo/ (every mirror-world RPM, gz repodata, vendor keys), bin/, images/."""
    packages = folder / "repo" / "Packages"
    packages.mkdir(parents=True)
    for rel in repos.values():
        for rpm in sorted((www / rel / "Packages").glob("*.rpm")):
            shutil.copyfile(rpm, packages / rpm.name)
    subprocess.run(["createrepo_c", "--general-compress-type=gz", "--checksum=sha256",
                    "--no-database", "--revision=1700000000", "--set-timestamp-to-revision",
                    str(folder / "repo")], check=True, capture_output=True, timeout=300)
    shutil.copyfile(www / "vault.centos.org/RPM-GPG-KEY-CentOS-7",
                    folder / "repo" / "RPM-GPG-KEY-CentOS-7")
    shutil.copyfile(www / "download.docker.com/linux/centos/gpg",
                    folder / "repo" / "RPM-GPG-KEY-Docker")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name in ("kubeadm", "kubelet", "kubectl"):
        (bin_dir / name).write_bytes(f"#!/bin/sh\necho {name} v1.23.17 stand-in\n".encode())
        (bin_dir / name).chmod(0o755)
    (bin_dir / "crictl-v1.23.0-linux-amd64.tar.gz").write_bytes(
        _tar_gz({"crictl": b"#!/bin/sh\necho crictl v1.23.0\n"}))
    (bin_dir / "cni-plugins-linux-amd64-v1.1.1.tgz").write_bytes(_tar_gz(
        {"./" + n: f"#!/bin/sh\necho {n}\n".encode()
         for n in ("bridge", "host-local", "loopback", "portmap", "flannel")}))
    base = _layer({"bin/true": b"\x7fELF stand-in\n"})
    pulled = [_image(cache, ref, base) for ref in WORKER_IMAGES + CONTROL_PLANE_ONLY]
    summary = write_archive(pulled, cache, folder / "images" / "images.tar", mtime=1700000000)
    roles = {ref: ["control-plane", "worker"] for ref in WORKER_IMAGES}
    roles.update({ref: ["control-plane"] for ref in CONTROL_PLANE_ONLY})
    return [image.to_json() for image in bundle_images(summary, roles)]


def metadata(images: List[dict], arch: str = "x86_64") -> dict:
    return {
        "target": {"os": "centos", "release": "7", "arch": arch},
        "kubernetes_version": "v1.23.17",
        "runtime": "docker",
        "pause_image": "registry.k8s.io/pause:3.6",
        "roles": {"worker": {"packages": PACKAGES}, "control-plane": {"packages": PACKAGES}},
        "images": images,
    }


def build_host_bundle(top: Path) -> HostBundle:
    """Pack the host bundle (and its aarch64 twin) under `top` from the mirror world's yum
    repos, with a throwaway key (the `host_bundle` fixture, tests/integration/conftest.py)."""
    www = MW / "www"
    generated = yumworld.generate(www, MW / "work")
    source = top / "source"
    images = build_source(source, www, generated["repos"], Cache(top / "cache"))
    key, _, public = make_key(top / "keys")
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    tar = top / "k8s-1.23.17-el7.tar"
    pack_source(source, tar, key, name="k8s-1.23.17-el7", metadata=metadata(images))
    other = top / "k8s-1.23.17-el7-aarch64.tar"
    pack_source(source, other, key, name="k8s-1.23.17-el7-aarch64",
                metadata=metadata(images, "aarch64"))
    return HostBundle(tar, public, other, images, www, generated["repos"])


def dnf_into(root: Path, www: Path, repos: Dict[str, str], *args: str) -> None:
    """Run the real dnf on `root` from the mirror world's repos (to prepare hosts only)."""
    def key(rid: str) -> str:
        return ("download.docker.com/linux/centos/gpg" if rid.startswith("docker")
                else "vault.centos.org/RPM-GPG-KEY-CentOS-7")

    folder = Path(tempfile.mkdtemp(prefix="dnf-", dir=root.parent))
    conf, repos_d = write_config(folder, {
        rid: (f"file://{www / rel}", [f"file://{www / key(rid)}"]) for rid, rel in repos.items()})
    dnf(root, conf, repos_d, "-q", "--nodocs", *args)


def install_core(root: Path, bundle: HostBundle) -> Path:
    """Install `@core` into the empty folder `root` from `bundle`'s base repos (not Docker's):
    the pristine root that each test host copies."""
    root.mkdir()
    dnf_into(root, bundle.www, {k: v for k, v in bundle.repos.items()
                                if not k.startswith("docker")}, "group", "install", "core")
    return root


@dataclass
class TestHost:
    top: Path
    root: Path
    kernel: Path
    bin_dir: Path
    env: Dict[str, str] = field(default_factory=dict)
    # When set, `installer()` runs this .pyz through its sh preamble on CPython 3.6, in a
    # session without LANG (scripts/lab/py36.py), instead of `python -m installer` from the
    # checkout.
    pyz: Optional[Path] = None

    @property
    def cluster(self) -> Path:
        return self.top / "cluster.yaml"

    @property
    def calls_log(self) -> Path:
        return self.top / "calls.jsonl"

    def calls(self) -> List[List[str]]:
        if not self.calls_log.exists():
            return []
        return [json.loads(line) for line in self.calls_log.read_text().splitlines()]

    def installer_argv(self, *args: str) -> List[str]:
        if self.pyz is not None:
            return [str(self.pyz), *args]
        return [sys.executable, "-m", "installer", *args]

    def installer(self, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
        environment = {**self.env, **env}
        if self.pyz is not None:
            environment = py36.operator_variables(environment,
                                                  py36.python3_shim(self.top / "python"))
            environment.setdefault("SHIV_ROOT", str(self.top / "shiv"))
        return subprocess.run(self.installer_argv(*args), cwd=REPO, env=environment,
                              capture_output=True, text=True, timeout=timeout)

    def python36_runs(self) -> str:
        return py36.python36_runs(self.top / "python")

    def kernel_file(self, path: str, text: str) -> None:
        target = self.kernel / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def file(self, path: str) -> Path:
        return self.root / path.lstrip("/")


KERNEL_EL8 = "4.18.0-348.el8.x86_64"  # CentOS 8.5.2111
KERNEL_EL9 = "5.14.0-427.13.1.el9_4.x86_64"  # Rocky 9.4


def write_kernel(host: TestHost, address: str = "10.0.0.21", kernel: str = KERNEL) -> None:
    k = host.kernel_file
    k("/proc/sys/kernel/arch", "x86_64\n")
    k("/proc/sys/kernel/osrelease", kernel + "\n")
    k("/proc/sys/kernel/hostname", "localhost.localdomain\n")
    k("/proc/cpuinfo", "processor\t: 0\n\nprocessor\t: 1\n\n")
    k("/proc/meminfo", "MemTotal:        3880000 kB\n")
    k("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
    k("/proc/modules", "")
    k("/proc/mounts", "/dev/sda1 / ext4 rw 0 0\n")
    k("/proc/sys/net/ipv4/ip_forward", "0\n")
    # As CentOS 7's kernel package lists them (the ip_vs modules too: kube_proxy_mode: ipvs);
    # EL8/EL9 kernels have nf_conntrack only (installer/steps/preflight.py required_modules).
    ipvs = "kernel/net/netfilter/ipvs/ip_vs.ko.xz"
    conntrack = "kernel/net/ipv4/netfilter/nf_conntrack_ipv4.ko.xz" if kernel.startswith("3.") \
        else "kernel/net/netfilter/nf_conntrack.ko.xz"
    k(f"/lib/modules/{kernel}/modules.dep",
      "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/net/bridge/br_netfilter.ko.xz:\n"
      f"{conntrack}:\n" + f"{ipvs}:\n" + "".join(
          f"kernel/net/netfilter/ipvs/{m}.ko.xz: {ipvs}\n" for m in ("ip_vs_rr", "ip_vs_wrr",
                                                                     "ip_vs_sh"))
      # what calico's felix needs with a VXLAN pool (installer/steps/calico.py MODULES)
      + "kernel/net/netfilter/ipset/ip_set.ko.xz:\n"
      "kernel/net/netfilter/xt_set.ko.xz: kernel/net/netfilter/ipset/ip_set.ko.xz\n"
      "kernel/drivers/net/vxlan.ko.xz:\n")
    k("/sys/fs/selinux/enforce", "1\n")
    (host.kernel / "sys/fs/bpf").mkdir(parents=True, exist_ok=True)  # the bpf mount point
    # Each host its own machine: product UUID, MAC and machine-id derived from its address,
    # as separately installed VMs have (a cloned set would be refused at join).
    octets = [int(part) for part in address.split(".")]
    k("/sys/class/dmi/id/product_uuid",
      "4C4C4544-0042-3510-8051-{:02X}{:02X}{:02X}{:02X}4E32\n".format(*octets))
    k("/sys/class/net/eth0/address", "52:54:00:{:02x}:{:02x}:{:02x}\n".format(*octets[1:]))
    machine_id = host.file("/etc/machine-id")
    machine_id.parent.mkdir(parents=True, exist_ok=True)
    machine_id.write_text("{:08x}".format(sum(o << (8 * (3 - i)) for i, o in enumerate(octets)))
                          * 4 + "\n")
    k("/proc/net/fib_trie", "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n"
      f"        /32 host LOCAL\n     |-- {address}\n        /32 host LOCAL\n")


def write_host_files(host: TestHost, os_release: str = CENTOS7) -> None:
    files = {
        "/etc/os-release": os_release,
        "/etc/hostname": "localhost.localdomain\n",
        "/etc/hosts": "127.0.0.1   localhost localhost.localdomain\n"
                      "::1         localhost localhost.localdomain\n",
        "/etc/fstab": "/dev/mapper/centos-root /    xfs  defaults 0 0\n"
                      "/dev/mapper/centos-swap swap swap defaults 0 0\n",
        "/etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    }
    for path, text in files.items():
        host.file(path).parent.mkdir(parents=True, exist_ok=True)
        host.file(path).write_text(text)


def build_installer_pyz(folder: Path) -> Path:
    """The installer .pyz built under `folder` from this checkout (a snapshot of installer/),
    for the tests that run it as an operator does; it embeds a throwaway key (pass --key)."""
    from builder import zipapp

    source = folder / "src" / "installer"
    shutil.copytree(zipapp.INSTALLER_SOURCE, source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _key, _secret, public = make_key(folder / "keys")
    return zipapp.build_zipapp(folder / zipapp.INSTALLER_NAME, public.read_text(),
                               cache=Cache(), installer_source=source).path


def make_host(top: Path, core: Path, os_release: str = CENTOS7, kernel: str = KERNEL,
              **env: str) -> TestHost:
    """A test host under `top`: a copy of the root `core`, a fake kernel, the stand-ins first
    on PATH, firewalld and chronyd running, CLUSTER_YAML; `env` adds to its environment."""
    root = top / "root"
    shutil.copytree(core, root, symlinks=True)
    host = TestHost(top, root, top / "kernel", top / "bin")
    host.bin_dir.mkdir()
    for name in STANDIN_NAMES:
        (host.bin_dir / name).symlink_to(STANDINS)
    STANDINS.chmod(0o755)
    (top / "state").mkdir()
    (top / "state" / "units.json").write_text(json.dumps(
        {"active": ["firewalld", "chronyd"], "enabled": ["firewalld", "chronyd"],
         "ports": [], "protocols": []}))
    host.cluster.write_text(CLUSTER_YAML)
    write_kernel(host, kernel=kernel)
    write_host_files(host, os_release)
    host.env = {**os.environ,
                "PATH": f"{host.bin_dir}:{os.environ['PATH']}",
                "KUBECRATE_PROBE_ROOT": str(host.kernel),
                "KUBECRATE_STANDIN_STATE": str(top / "state"),
                "KUBECRATE_STANDIN_LOG": str(host.calls_log), **env}
    for name in ("DOCKER_HOST", "KUBECRATE_ROOT"):
        host.env.pop(name, None)
    return host


def snapshot(folder: Path) -> Dict[str, tuple]:
    """Every path under `folder` with its kind, mode and content digest; the rpm database's
    shared-memory files, which every read query touches, and the installer's own run logs
    (var/log/kubecrate, installer/runlog.py: every run writes one) excepted."""
    found: Dict[str, tuple] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel.endswith("-shm") or path.name.startswith("__db.") or rel in ("var/log", "var") \
                or rel.startswith("var/log/kubecrate"):
            continue
        st = path.lstat()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_file():
            found[rel] = ("file", st.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            found[rel] = ("dir", st.st_mode)
    return found
