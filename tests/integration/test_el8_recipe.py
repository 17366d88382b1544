"""manifests/k8s-1.23.17-el8.yaml (CentOS 8.5 + Docker CE 20.10.24),
manifests/k8s-1.30-el8-containerd.yaml (Rocky 8.9 + containerd + pkgs.k8s.io v1.30) and
manifests/k8s-1.30-el9-containerd.yaml (Rocky 9.4 + containerd + pkgs.k8s.io v1.30) built against
the mirror world's EL8/EL9 slice with upstream-shaped and China-shaped presets, linted, checked
for packages of the non-default container-tools stream (the slice's decoy), and judged by real
dnf: a minimal EL8 root with podman and runc installed has them removed as the recipe says, then
takes every package of the bundle from the bundle's repo alone, gpgcheck=1; a minimal EL9 root
takes every package of the EL9 bundle the same way."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
import zipfile

import pytest
import requests
from lab import hostworld, osreleases
from lab.dnfroot import dnf, installed, write_config
from lab.tools import require_tool

from builder.inputs.mirrors import load_preset
from builder.inputs.recipefile import load_recipe
from builder.rpm.modules import parse_modules
from builder.rpm.repodata import load_repos
from installer.format.imagearchive import list_images
from installer.render import render
from tests.integration.builder.test_build import kubecrate
from tests.integration.elbuilds import (
    EL8,
    EL9_DNF,
    RECIPE,
    RECIPE_ROCKY8,
    minimal_el9_root,
)

pytestmark = pytest.mark.integration

def removals(have, recipe=RECIPE) -> list:
    """The packages host prep removes for `recipe` (its `remove:`), of those installed; a
    recipe without the key says it in a comment (`#   dnf remove ...`)."""
    names = list(load_recipe(recipe).remove)
    if not names:
        found = re.search(r"^#\s+dnf remove (.+)$", recipe.read_text(), re.M)
        assert found, f"{recipe.name} names no packages to remove"
        names = found.group(1).split()
    return [name for name in names if name in have]


@pytest.fixture(scope="module")
def builds(el_builds):
    return el_builds


def rpm_names(bundle) -> dict:
    with tarfile.open(bundle) as tar:
        return {m.name.rsplit("/", 1)[1]: m for m in tar.getmembers()
                if m.name.startswith("repo/Packages/") and m.name.endswith(".rpm")}


def bundle_repo(bundle, tmp_path):
    """The bundle's repo/ unpacked under `tmp_path` behind the installer's repo file, the only
    repo of a dnf.conf of its own; returns (dnf.conf, reposdir, package names)."""
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "bundle", members=[m for m in tar.getmembers()
                                                      if m.name.startswith("repo/")])
    repo = tmp_path / "bundle" / "repo"
    keys = sorted(str(k) for k in repo.glob("RPM-GPG-KEY-*"))
    bundle_d = tmp_path / "bundle.d"
    bundle_d.mkdir()
    (bundle_d / "kubecrate.repo").write_text(render(
        "kubecrate.repo.j2", bundle_name=bundle.stem, main=[], enabled=1, baseurl=str(repo),
        gpgkeys=keys))
    bconf = tmp_path / "bundle.conf"
    bconf.write_text(f"[main]\ngpgcheck=1\nreposdir={bundle_d}\ncachedir={tmp_path / 'bc'}\n"
                     "plugins=False\ninstall_weak_deps=False\n")
    return bconf, bundle_d, sorted({n.rsplit("-", 2)[0] for n in rpm_names(bundle)})


def test_both_presets_give_the_same_packages(builds):
    assert sorted(rpm_names(builds["upstream"])) == sorted(rpm_names(builds["china"]))
    assert sorted(rpm_names(builds["rocky8-upstream"])) == sorted(rpm_names(builds["rocky8-china"]))
    assert sorted(rpm_names(builds["el9-upstream"])) == sorted(rpm_names(builds["el9-china"]))
    assert sorted(rpm_names(builds["el9-1.31-upstream"])) == \
        sorted(rpm_names(builds["el9-1.31-china"]))
    assert sorted(rpm_names(builds["el9-1.32-upstream"])) == \
        sorted(rpm_names(builds["el9-1.32-china"]))
    assert sorted(rpm_names(builds["el9-1.33-upstream"])) == \
        sorted(rpm_names(builds["el9-1.33-china"]))
    assert sorted(rpm_names(builds["el9-aarch64-upstream"])) == \
        sorted(rpm_names(builds["el9-aarch64-china"]))


EL8_CASES = {
    # variant: (preset attribute, default-stream container-selinux, what the bundle must hold,
    #           the recipe, what dnf installs: name -> version-release.arch)
    "upstream": ("preset_el8", "2.167.0-1.module_el8.5.0+911+f19012f9",
                 {"containerd.io-1.6.32-3.1.el8.x86_64.rpm", "docker-ce-20.10.24-3.el8.x86_64.rpm",
                  "iproute-tc-5.12.0-4.el8.x86_64.rpm"}, RECIPE,
                 {"containerd.io": "1.6.32-3.1.el8.x86_64", "docker-ce": "20.10.24-3.el8.x86_64"}),
    "rocky8-upstream": ("preset_rocky8", "2.221.0-1.module+el8.9.0+1506+ad3a12f9",
                        {"containerd.io-1.6.32-3.1.el8.x86_64.rpm",
                         "kubeadm-1.30.14-150500.1.1.x86_64.rpm",
                         "iproute-tc-6.2.0-5.el8_9.x86_64.rpm"}, RECIPE_ROCKY8,
                        {"containerd.io": "1.6.32-3.1.el8.x86_64",
                         "kubeadm": "1.30.14-150500.1.1.x86_64"}),
}


@pytest.mark.parametrize("variant", sorted(EL8_CASES))
def test_nothing_from_the_non_default_stream(builds, mirror_world, variant):
    attr, selinux, wanted, _recipe, _got = EL8_CASES[variant]
    appstream = load_repos(load_preset(getattr(mirror_world, attr)), ["appstream"],
                           requests.Session())[0]
    streams, defaults = parse_modules(appstream.metadata("modules"), "appstream")
    assert defaults == {"container-tools": "rhel8"}
    decoys = {f"{a[0]}-{a[2]}-{a[3]}.{a[4]}.rpm" for s in streams if s.stream != "rhel8"
              for a in s.artifacts}
    assert any(d.startswith("container-selinux-2.229.0-2.module") for d in decoys), decoys
    shipped = set(rpm_names(builds[variant]))
    assert not shipped & decoys
    assert f"container-selinux-{selinux}.noarch.rpm" in shipped
    assert wanted <= shipped


@pytest.mark.parametrize("variant", sorted(EL8_CASES))
def test_real_dnf_installs_the_bundle_after_the_removals(builds, mirror_world, tmp_path, variant):
    attr, selinux, _wanted, recipe, expected = EL8_CASES[variant]
    for tool in ("dnf", "rpm"):
        require_tool(tool)
    # A minimal EL8 root with podman (and so runc) from the world's BaseOS/AppStream.
    preset = load_preset(getattr(mirror_world, attr))
    world = {r.id: (r.baseurl, [k.url for k in r.gpgkeys]) for r in preset.yum.values()
             if r.id in ("baseos", "appstream")}
    conf, repos_d = write_config(tmp_path / "world", world)
    root = tmp_path / "root"
    root.mkdir()
    dnf(root, conf, repos_d, *EL8, "install", "filesystem", "bash", "podman")
    before = installed(root)
    assert "runc" in before and "podman" in before

    bconf, bundle_d, names = bundle_repo(builds[variant], tmp_path)
    # Without the removals dnf refuses: containerd.io conflicts with runc, podman needs runc.
    refused = dnf(root, bconf, bundle_d, *EL8, "install", *names, check=False)
    assert refused.returncode != 0 and "runc" in refused.stdout + refused.stderr
    dnf(root, conf, repos_d, *EL8, "remove", *removals(before, recipe))
    assert not {"runc", "podman"} & set(installed(root))
    dnf(root, bconf, bundle_d, *EL8, "install", *names)
    got = installed(root)
    for name, vra in expected.items():
        assert got[name] == [vra]
    assert got["container-selinux"] == [f"{selinux}.noarch"]
    assert "runc" not in got and "podman" not in got
    assert set(names) <= set(got)


def test_a_release_the_preset_lacks_is_refused_naming_repo_and_file(mirror_world, tmp_path):
    """The same recipe for EL9: the EL8 preset resolves it, but dnf on an EL9 host would be
    handed EL8 builds. The build stops at the lock, naming the recipe's key, the repo and its
    primary file."""
    recipe = tmp_path / "k8s-el9.yaml"
    recipe.write_text(RECIPE.read_text().replace('release: "8.5"', 'release: "9"'))
    done = kubecrate("lock", recipe, "--mirrors", mirror_world.preset_el8,
                     "--cache", tmp_path / "cache")
    assert done.returncode != 0
    assert "targets EL9" in done.stderr and "target.release" in done.stderr, done.stderr
    assert "repo baseos (" in done.stderr and "primary.xml.gz) serves EL8 (" in done.stderr
    assert "repo docker-ce-stable (" in done.stderr
    assert not (tmp_path / "k8s-el9.lock").exists()


EL9_CASES = {
    # variant: (preset attribute, name -> version-release.arch installed, images the archive
    #           holds, images it must not hold)
    "el9-upstream": ("preset_el9", {"kubeadm": "1.30.14-150500.1.1.x86_64",
                                    "containerd.io": "1.6.33-3.1.el9.x86_64"},
                     {"registry.k8s.io/kube-apiserver:v1.30.14", "registry.k8s.io/pause:3.9",
                      "registry.k8s.io/etcd:3.5.15-0", "registry.k8s.io/coredns/coredns:v1.11.3",
                      "docker.io/flannel/flannel:v0.25.7", "docker.io/calico/node:v3.28.5",
                      "docker.io/calico/cni:v3.28.5", "docker.io/calico/kube-controllers:v3.28.5"},
                     ("v1.23.17", ":3.6", "v1.33.7", "v3.31.3")),
    # the minor `upgrade` takes the 1.30 profile to: v1beta4, pause 3.10, containerd 1.7
    "el9-1.31-upstream": ("preset_el9_131", {"kubeadm": "1.31.14-150500.1.1.x86_64",
                                             "kubelet": "1.31.14-150500.1.1.x86_64",
                                             "cri-tools": "1.31.1-150500.1.1.x86_64",
                                             "containerd.io": "1.7.27-3.1.el9.x86_64"},
                          {"registry.k8s.io/kube-apiserver:v1.31.14", "registry.k8s.io/pause:3.10",
                           "registry.k8s.io/etcd:3.5.15-0",
                           "registry.k8s.io/coredns/coredns:v1.11.3",
                           "docker.io/flannel/flannel:v0.25.7", "docker.io/calico/node:v3.28.5"},
                          ("v1.30.14", ":3.9", "v1.33.7", "v3.31.3")),
    # the middle step of a 1.30 -> 1.33 walk: kubeadm's RPM requires nothing from 1.32, etcd
    # 3.5.21-0, calico v3.31 (tested with 1.32-1.35)
    "el9-1.32-upstream": ("preset_el9_132", {"kubeadm": "1.32.9-150500.1.1.x86_64",
                                             "kubelet": "1.32.9-150500.1.1.x86_64",
                                             "cri-tools": "1.32.0-150500.1.1.x86_64",
                                             "kubernetes-cni": "1.6.0-150500.1.1.x86_64",
                                             "containerd.io": "1.7.27-3.1.el9.x86_64"},
                          {"registry.k8s.io/kube-apiserver:v1.32.9", "registry.k8s.io/pause:3.10",
                           "registry.k8s.io/etcd:3.5.21-0",
                           "registry.k8s.io/coredns/coredns:v1.11.3",
                           "docker.io/flannel/flannel:v0.25.7", "docker.io/calico/node:v3.31.3"},
                          ("v1.31.14", "v1.33.7", ":3.9", "3.5.24-0", "v3.28.5")),
    # a current release: v1beta4 configs (test_render_kubeadm.py), pause 3.10, containerd 1.7
    "el9-1.33-upstream": ("preset_el9_133", {"kubeadm": "1.33.7-150500.1.1.x86_64",
                                             "kubelet": "1.33.7-150500.1.1.x86_64",
                                             "containerd.io": "1.7.27-3.1.el9.x86_64"},
                          {"registry.k8s.io/kube-apiserver:v1.33.7", "registry.k8s.io/pause:3.10",
                           "registry.k8s.io/etcd:3.5.24-0",
                           "registry.k8s.io/coredns/coredns:v1.12.0",
                           "docker.io/flannel/flannel:v0.25.7", "docker.io/calico/node:v3.31.3",
                           "docker.io/calico/cni:v3.31.3",
                           "docker.io/calico/kube-controllers:v3.31.3"},
                          ("v1.30.14", ":3.9", ":3.6", "v3.28.5")),
}


@pytest.mark.parametrize("variant,version", [("el9-upstream", "v3.28.5"),
                                             ("rocky8-china", "v3.28.5"),
                                             ("el9-1.33-china", "v3.31.3")])
def test_the_containerd_bundles_carry_calico(builds, variant, version):
    """bundle.json's addons.calico names addons/calico/calico.yaml; it runs calico's node, cni
    and kube-controllers of one release, all in the bundle's image archive (lint checked each
    `image:` line against it), and the installer's customisation takes it as it is."""
    from installer.steps import calico

    with tarfile.open(builds[variant]) as tar:
        info = json.load(tar.extractfile("bundle.json"))
        text = tar.extractfile("addons/calico/calico.yaml").read().decode()
    addon = info["addons"]["calico"]
    assert addon["manifest"] == "addons/calico/calico.yaml" and addon["version"] == version
    refs = {ref for _i, ref in re.findall(r"^(\s+)image: (\S+)$", text, re.M)}
    assert refs == {f"docker.io/calico/{n}:{version}" for n in ("node", "cni",
                                                                 "kube-controllers")}
    assert set(addon["images"]) == refs
    custom = calico.customize(text, "10.32.0.0/16", "9")
    assert '"value": "10.32.0.0/16"' in custom and '"value": "kubernetes-internal-ip"' in custom


@pytest.mark.parametrize("variant", sorted(EL9_CASES))
def test_real_dnf_installs_the_el9_containerd_bundle(builds, mirror_world, tmp_path, variant):
    """The five Kubernetes RPMs from the pkgs.k8s.io-shaped repo, containerd.io from centos/9,
    the rest from Rocky 9.4: all of it on a minimal EL9 root from the bundle repo alone."""
    attr, expected, _images, _absent = EL9_CASES[variant]
    for tool in ("dnf", "rpm"):
        require_tool(tool)
    root = minimal_el9_root(getattr(mirror_world, attr), tmp_path / "root")
    el9 = EL9_DNF
    bconf, bundle_d, names = bundle_repo(builds[variant], tmp_path)
    assert {"kubeadm", "kubelet", "kubectl", "cri-tools", "kubernetes-cni"} <= set(names)
    dnf(root, bconf, bundle_d, *el9, "install", *names)
    got = installed(root)
    for name, vra in expected.items():
        assert got[name] == [vra]
    assert set(names) <= set(got)
    # the runtime step (and upgrade, after containerd.io 1.6 -> 1.7) restarts this unit
    assert (root / "usr/lib/systemd/system/containerd.service").is_file()


@pytest.mark.parametrize("variant", sorted(EL9_CASES))
def test_real_containerd_imports_the_el9_bundles_images(builds, containerd, tmp_path,
                                                       variant):
    """containerd 1.6's `ctr -n k8s.io images import` of the EL9 bundle's archive: kubeadm's
    images of the recipe's version, flannel and the load balancer's, each under its name."""
    _attr, _expected, images, absent = EL9_CASES[variant]
    with tarfile.open(builds[variant]) as tar:
        tar.extract("images/images.tar", tmp_path)
    refs = containerd.references()
    if refs:
        containerd.ctr("images", "rm", "--sync", *refs)
    containerd.ctr("images", "import", str(tmp_path / "images" / "images.tar"))
    got = containerd.references()
    assert images <= set(got), got
    assert not [r for r in got if any(a in r for a in absent)]


def test_the_aarch64_bundle_is_arm64_throughout(builds, tmp_path):
    """k8s-1.30-el9-containerd-aarch64: every RPM is aarch64 or noarch (rpm reads each header),
    every binary is the arm64 build, every image manifest in the archive is linux/arm64, and the
    installer .pyz is byte for byte the x86_64 bundle's."""
    for variant in ("el9-aarch64-upstream", "el9-aarch64-china"):
        bundle = builds[variant]
        with tarfile.open(bundle) as tar:
            tar.extractall(tmp_path / variant, members=[
                m for m in tar.getmembers() if m.name.startswith(("repo/Packages/", "bin/",
                                                                   "images/"))])
        top = tmp_path / variant
        rpms = sorted(str(p) for p in (top / "repo" / "Packages").glob("*.rpm"))
        assert len(rpms) == len(rpm_names(builds["el9-upstream"]))
        arches = subprocess.run([require_tool("rpm"), "-qp", "--nosignature", "--qf",
                                 "%{NAME} %{ARCH}\n", *rpms], capture_output=True, text=True,
                                check=True).stdout.split("\n")
        by_name = dict(line.split() for line in arches if line)
        assert set(by_name.values()) == {"aarch64", "noarch"}, by_name
        assert by_name["containerd.io"] == by_name["kubeadm"] == "aarch64"
        # kubeadm/kubelet/kubectl (the world's stand-ins carry their build's arch), crictl, CNI
        binaries = sorted(p.relative_to(top).as_posix() for p in (top / "bin").rglob("*")
                          if p.is_file())
        assert binaries and not [b for b in binaries if "amd64" in b or "x86" in b], binaries
        for tool in ("kubeadm", "kubelet", "kubectl"):
            with zipfile.ZipFile(top / "bin" / tool) as zf:
                assert "ARCH = 'arm64'" in zf.read("_build.py").decode(), tool
        tarballs = [b for b in binaries if b.endswith((".tar.gz", ".tgz"))]
        assert len(tarballs) == 2 and all("linux-arm64" in b or "-arm64-" in b for b in tarballs)
        images = list_images(str(top / "images" / "images.tar"))
        # (arm64/v8 is arm64: the haproxy index names its variant)
        assert images and {i.platform for i in images} <= {"linux/arm64", "linux/arm64/v8"}
        with tarfile.open(top / "images" / "images.tar") as archive:
            for image in images:
                manifest = json.load(archive.extractfile(
                    f"blobs/sha256/{image.manifest_digest.split(':', 1)[1]}"))
                config = json.load(archive.extractfile(
                    f"blobs/sha256/{manifest['config']['digest'].split(':', 1)[1]}"))
                assert (config["os"], config["architecture"]) == ("linux", "arm64"), \
                    image.reference
    pyz = {v: hashlib.sha256((builds[v].parent / "kubecrate-installer.pyz").read_bytes())
           .hexdigest() for v in ("el9-upstream", "el9-aarch64-upstream", "el9-aarch64-china")}
    assert len(set(pyz.values())) == 1, pyz



def test_real_dnf_installs_the_aarch64_bundle_on_an_aarch64_root(builds, mirror_world, tmp_path):
    """The aarch64 bundle judged like the others: a minimal EL9 aarch64 root from the world's
    aarch64 BaseOS, then every package of the bundle from its repo alone, gpgcheck=1. dnf
    resolves and rpm installs for the forced arch; scriptlets (aarch64 code) are not run."""
    for tool in ("dnf", "rpm"):
        require_tool(tool)
    arm = ("--forcearch=aarch64", "--setopt=tsflags=noscripts")
    root = minimal_el9_root(mirror_world.preset_el9_aarch64, tmp_path / "root", *arm)
    bconf, bundle_d, names = bundle_repo(builds["el9-aarch64-upstream"], tmp_path)
    dnf(root, bconf, bundle_d, *EL9_DNF, *arm, "install", *names)
    got = installed(root)
    assert set(names) <= set(got)
    assert {vra.rsplit(".", 1)[1] for name in names for vra in got[name]} <= \
        {"aarch64", "noarch"}
    assert got["kubeadm"] == ["1.30.14-150500.1.1.aarch64"]


@pytest.mark.parametrize("os_release, refused_as", [
    (osreleases.ROCKY94, None), (osreleases.ALMA9, None), (osreleases.RHEL9, None),
    (osreleases.CENTOS8, "platform:el8 (CentOS Linux 8)"),
    (osreleases.CENTOS7, "platform:el7 (CentOS Linux 7)"),
], ids=["rocky9.4", "alma9", "rhel9", "centos8.5", "centos7"])
def test_preflight_of_the_el9_bundle_by_host_platform(builds, tmp_path, os_release, refused_as):
    """The signed Rocky 9.4 bundle's preflight (`python -m installer preflight`, its real
    bundle.json) on hosts with each os-release: Alma 9 and RHEL 9 are served because the recipe
    lists them in target.hosts; CentOS 8.5 and CentOS 7 are refused with both platforms
    named. Only the `os` check is judged here; the host has nothing else to offer."""
    host = hostworld.TestHost(tmp_path, tmp_path / "root", tmp_path / "kernel", tmp_path / "bin")
    host.bin_dir.mkdir()
    for name in hostworld.STANDIN_NAMES:
        (host.bin_dir / name).symlink_to(hostworld.STANDINS)
    hostworld.write_kernel(host)
    host.file("/etc/os-release").parent.mkdir(parents=True, exist_ok=True)
    host.file("/etc/os-release").write_text(os_release)
    host.cluster.write_text(hostworld.CLUSTER_YAML)
    (tmp_path / "state").mkdir()
    host.env = {**os.environ, "PATH": f"{host.bin_dir}:{os.environ['PATH']}",
                "KUBECRATE_PROBE_ROOT": str(host.kernel),
                "KUBECRATE_STANDIN_STATE": str(tmp_path / "state")}
    bundle = builds["el9-upstream"]
    done = host.installer("preflight", "--bundle", str(bundle), "--cluster", str(host.cluster),
                          "--key", str(builds["public_key"]),
                          "--root", str(host.root), "--node", "w1")
    output = done.stdout + done.stderr
    assert done.returncode == 4, output  # this bare root fails other checks either way
    refused = re.search(r"^\s*os: (.*)$", done.stderr, re.M)
    if refused_as is None:
        assert refused is None, output
    else:
        assert refused and refused.group(1).startswith(
            "bundle k8s-1.30-el9-containerd is for platform:el9 (rocky 9.4) but this host is "
            + refused_as), output
