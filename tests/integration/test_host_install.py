"""The host steps on a real `@core` root: install a worker from a mirror-world bundle with the
real dnf (behind the yum stand-in) and the real Docker 20.10, then prove idempotence, resume
after a kill, dry-run/plan purity, and that preflight failures exit 4 and change nothing."""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from lab import osreleases
from lab.hostworld import dnf_into, snapshot
from lab.runtimes import docker_images

pytestmark = pytest.mark.integration
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "worker"
GOLDEN_FILES = [
    "etc/hostname", "etc/hosts", "etc/fstab", "etc/selinux/config", "etc/chrony.conf",
    "etc/modules-load.d/kubecrate.conf", "etc/sysctl.d/90-kubecrate.conf",
    "etc/yum.repos.d/kubecrate.repo", "etc/docker/daemon.json", "etc/sysconfig/kubelet",
    "usr/lib/systemd/system/kubelet.service",
    "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
]


def args(host, bundle, *extra, tar=None):
    return ("--bundle", str(tar or bundle.tar), "--cluster", str(host.cluster),
            "--key", str(bundle.public_key), "--root", str(host.root), *extra)


def worker_images(dockerd):
    return {ref: image_id for ref, image_id in docker_images(dockerd).items()}


def expected_worker_images(bundle):
    short = {"docker.io/flannel/flannel:v0.21.5": "flannel/flannel:v0.21.5"}
    return {short.get(i["reference"], i["reference"]): i["config_digest"]
            for i in bundle.images if "worker" in i["roles"]}


def check_golden(host, digest_dir):
    update = os.environ.get("KUBECRATE_UPDATE_GOLDEN")
    for rel in GOLDEN_FILES:
        text = host.file(rel).read_text().replace(digest_dir, "<digest>")
        golden = GOLDEN / rel
        if update:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert text == golden.read_text(), rel


def only_bundle_repo(calls):
    """Every yum call names only the kubecrate repo; nothing else names a repository."""
    for argv in calls:
        if argv[0] == "yum":
            assert "--disablerepo=*" in argv and "--enablerepo=kubecrate" in argv, argv
        assert not any(re.search(r"https?://", a) for a in argv), argv


def test_worker_install_plan_dry_run_idempotent_reset(host_bundle, test_host, dockerd,
                                                       installer_pyz):
    # The real .pyz, through its preamble on CPython 3.6, in a session without LANG.
    test_host.pyz = installer_pyz
    host, before = test_host, snapshot(test_host.root)
    kernel_before = snapshot(host.kernel)

    plan = host.installer("plan", *args(host, host_bundle))
    assert plan.returncode == 0, plan.stderr
    for step in ("preflight", "unpack", "host-prep", "local-repo", "runtime", "images",
                 "binaries"):
        assert step in plan.stdout
    assert "load 3 image(s)" in plan.stdout and "install 5 package(s)" in plan.stdout
    # --host-only: a worker joins with join.yaml from a control plane (tests/e2e), which this
    # single-host test does not have; the host steps are what it proves.
    dry = host.installer("install", "--dry-run", "--host-only", *args(host, host_bundle))
    assert dry.returncode == 0, dry.stderr
    assert "would run: yum -y --disablerepo=* --enablerepo=kubecrate install" in dry.stderr
    assert snapshot(host.root) == before and snapshot(host.kernel) == kernel_before
    assert worker_images(dockerd) == {}

    first = host.installer("install", "--host-only", *args(host, host_bundle))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "made" in first.stdout
    digest_dir = next((host.root / "var/lib/kubecrate/bundles").iterdir()).name
    check_golden(host, digest_dir)
    assert worker_images(dockerd) == expected_worker_images(host_bundle)
    rpms = subprocess.run(["rpm", "--root", str(host.root), "-q", "docker-ce", "socat"],
                          capture_output=True, text=True)
    assert rpms.returncode == 0, rpms.stdout
    assert (host.root / "usr/bin/kubeadm").stat().st_mode & 0o777 == 0o755
    assert (host.root / "usr/bin/crictl").exists() and (host.root / "opt/cni/bin/flannel").exists()
    original = host.file("etc/fstab.kubecrate-orig").read_text()
    assert "\n/dev/mapper/centos-swap swap" in original and "kubecrate" not in original
    assert not list(host.root.rglob("*.kubecrate-tmp"))
    only_bundle_repo(host.calls())

    calls_before = len(host.calls())
    second = host.installer("install", "--host-only", *args(host, host_bundle))
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout
    mutating = [c for c in host.calls()[calls_before:]
                if c[0] in ("yum", "modprobe", "swapoff", "setenforce", "hostnamectl")
                or c[:2] in (["docker", "load"], ["rpm", "--import"])
                or (c[0] == "systemctl" and c[1] not in ("is-active", "is-enabled"))]
    assert mutating == []

    report_file = host.top / "report.json"
    status = host.installer("status", "--json", "--report", str(report_file),
                            "--root", str(host.root))
    assert '"prepared": true' in status.stdout and '"joined": false' in status.stdout
    # What an auditor keeps per host: the file is what --json printed.
    report = json.loads(report_file.read_text())
    assert report == json.loads(status.stdout)
    public = host_bundle.public_key.read_text().splitlines()[1]
    key_id = base64.b64decode(public)[2:10][::-1].hex().upper()
    assert report["signature"]["key_id"].upper() == key_id
    assert digest_dir in report["signature"]["trusted_comment"]
    rpm_q = subprocess.run(["rpm", "--root", str(host.root), "-q", "--qf",
                            "%{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}", "docker-ce"],
                           capture_output=True, text=True).stdout
    assert report["rpms"]["docker-ce"] == rpm_q and report["rpms"]["socat"] != "not installed"
    worker = expected_worker_images(host_bundle)
    assert set(worker.values()) <= set(report["images"].values())  # IDs as docker has them
    assert report["preflight_findings"] and \
        all(f["level"] in ("pass", "warn") for f in report["preflight_findings"])

    units = json.loads((host.top / "state/units.json").read_text())
    assert "firewalld" not in units["active"] + units["enabled"]  # firewall: disable
    reset = host.installer("reset", "--host", "--root", str(host.root))
    assert reset.returncode == 0, reset.stderr
    assert "kubecrate-installer.pyz install --host-only" in host.python36_runs()
    # what host prep stopped comes back; what the install started (docker) stops; chronyd,
    # which ran before kubecrate, is left as it was
    units = json.loads((host.top / "state/units.json").read_text())
    assert {"firewalld", "chronyd"} <= set(units["active"]) and "docker" not in units["active"]
    assert set(units["enabled"]) == {"firewalld", "chronyd"}
    after = snapshot(host.root)
    for rel in ("etc/fstab", "etc/selinux/config", "etc/hosts", "etc/hostname"):
        assert after[rel] == before[rel], rel
        assert not host.file(rel + ".kubecrate-orig").exists()
    assert not host.file("etc/docker/daemon.json").exists()
    assert not host.file("usr/bin/kubeadm").exists()
    assert (host.root / "var/lib/kubecrate/bundles" / digest_dir / "bundle.json").exists()
    reinstall_from_the_cache_alone(host, host_bundle, digest_dir)


def reinstall_from_the_cache_alone(host, bundle, digest_dir):
    """With the tar gone, `install --bundle <cache folder>` rebuilds the host
    from the cache, its kept signature and every file checked; with one cached RPM changed,
    the same run is refused before it changes anything, naming the RPM, exit 3."""
    cached = host.root / "var/lib/kubecrate/bundles" / digest_dir
    signature = bundle.tar.with_name(bundle.tar.name + ".minisig")
    away = [(path, path.with_name("away-" + path.name)) for path in (bundle.tar, signature)]
    for path, aside in away:
        os.replace(path, aside)
    try:
        rpm = next((cached / "repo").rglob("socat-*.rpm"))
        good = rpm.read_bytes()
        rpm.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        before = snapshot(host.root)
        refused = host.installer("install", "--host-only", *args(host, bundle, tar=cached))
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert str(rpm.relative_to(cached)) in refused.stderr
        assert snapshot(host.root) == before
        rpm.write_bytes(good)
        plan = host.installer("plan", "--host-only", *args(host, bundle, tar=cached))
        assert plan.returncode == 0 and "unpack: nothing to change" in plan.stdout, plan.stderr
        again = host.installer("install", "--host-only", *args(host, bundle, tar=cached))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "made" in again.stdout and host.file("usr/bin/kubeadm").exists()
        assert host.file("etc/docker/daemon.json").exists()
    finally:
        for path, aside in away:
            os.replace(aside, path)


def test_selinux_enforcing_install_keeps_the_host_enforcing(host_bundle, test_host):
    """`selinux: enforcing` (docs/selinux.md): the host stays enforcing (the getenforce and
    setenforce stand-ins act on the fake kernel's /sys/fs/selinux/enforce), its
    /etc/selinux/config is not touched, preflight finds container-selinux in the bundle, and
    Docker labels its containers."""
    host = test_host
    host.cluster.write_text(host.cluster.read_text() + "selinux: enforcing\n")
    config_before = host.file("etc/selinux/config").read_text()
    first = host.installer("install", "--host-only", *args(host, host_bundle))
    assert first.returncode == 0, first.stdout + first.stderr
    assert (host.kernel / "sys/fs/selinux/enforce").read_text() == "1\n"
    getenforce = subprocess.run(["getenforce"], env=host.env, capture_output=True, text=True)
    assert getenforce.stdout == "Enforcing\n", getenforce.stderr
    assert host.file("etc/selinux/config").read_text() == config_before
    assert not host.file("etc/selinux/config.kubecrate-orig").exists()
    assert not [c for c in host.calls() if c[0] == "setenforce"]
    assert json.loads(host.file("etc/docker/daemon.json").read_text())["selinux-enabled"] is True
    # what kubecrate copied carries the labels an RPM install would give it
    labels = json.loads((host.kernel / "selinux-labels.json").read_text())
    assert labels["/usr/bin/kubelet"] == "kubelet_exec_t"
    assert labels["/usr/bin/kubeadm"] == "bin_t"
    assert labels["/usr/lib/systemd/system/kubelet.service"] == "systemd_unit_file_t"
    assert labels["/opt/cni/bin/flannel"] == "usr_t"
    report = json.loads(host.installer("status", "--json", "--root", str(host.root)).stdout)
    found = {f["check"]: f for f in report["preflight_findings"]}
    assert found["selinux"]["level"] == "pass", found["selinux"]
    assert found["container-selinux"]["level"] == "pass", found["container-selinux"]
    assert "container-selinux" in found["container-selinux"]["message"]


def test_selinux_enforcing_refuses_a_host_without_selinux(host_bundle, test_host):
    """A disabled host cannot be made enforcing by setenforce (the stand-in refuses as the
    real one does): preflight fails (exit 4) before anything changes."""
    host = test_host
    host.cluster.write_text(host.cluster.read_text() + "selinux: enforcing\n")
    (host.kernel / "sys/fs/selinux/enforce").unlink()
    refused = subprocess.run(["setenforce", "1"], env=host.env, capture_output=True, text=True)
    assert refused.returncode == 1 and "SELinux is disabled" in refused.stderr
    before = snapshot(host.root)
    result = host.installer("install", "--host-only", *args(host, host_bundle))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "selinux: enforcing, but SELinux is disabled on this host" in \
        result.stdout + result.stderr
    assert snapshot(host.root) == before


def test_killed_during_images_resumes_without_repeating_work(host_bundle, test_host,
                                                             dockerd):
    host = test_host
    marker = host.top / "load-started"
    proc = subprocess.Popen(host.installer_argv("install", "--host-only",
                                                *args(host, host_bundle)),
                            env={**host.env, "KUBECRATE_TEST_SLOW_LOAD": str(marker)},
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate(timeout=30)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert worker_images(dockerd) == {}
    calls_before = len(host.calls())

    again = host.installer("install", "--host-only", *args(host, host_bundle))
    assert again.returncode == 0, again.stdout + again.stderr
    lines = again.stdout
    for step in ("unpack", "host-prep", "local-repo", "runtime"):
        assert re.search(r"\d\. {}: unchanged".format(step), lines), lines
    assert "loaded 3 image(s)" in lines
    repeated = [c for c in host.calls()[calls_before:]
                if c[0] in ("yum", "modprobe") or c[:2] == ["rpm", "--import"]]
    assert repeated == []
    assert worker_images(dockerd) == expected_worker_images(host_bundle)
    assert not list(host.root.rglob("*.kubecrate-tmp"))
    assert not [p for p in (host.root / "var/lib/kubecrate/bundles").iterdir()
                if p.name.startswith(".")]


def test_swap_on_is_a_change_host_prep_makes_not_a_preflight_failure(host_bundle,
                                                                     test_host):
    """README and docs/cluster.md say host prep turns swap off: preflight must let it."""
    host = test_host
    host.kernel_file("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n"
                     "/dev/dm-1 partition 2097148 0 -2\n")
    checked = host.installer("preflight", *args(host, host_bundle))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "swap is on (/dev/dm-1); host prep turns it off" in checked.stdout + checked.stderr
    plan = host.installer("plan", *args(host, host_bundle))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "turn swap off (/dev/dm-1)" in plan.stdout
    assert "mask dev-dm\\x2d1.swap" in plan.stdout
    assert "mask dev-mapper-centos\\x2dswap.swap" in plan.stdout


def _wrong_release(host, bundle):
    host.file("/etc/os-release").write_text(osreleases.CENTOS8)
    return args(host, bundle), ("bundle k8s-1.23.17-el7 is for platform:el7 (centos 7) but this "
                                "host is platform:el8 (CentOS Linux 8)")


def _other_arch(host, bundle):
    return args(host, bundle, tar=bundle.other_arch_tar), "is for aarch64 but this host is x86_64"


def _conflicting_package(host, bundle):
    dnf_into(host.root, bundle.www, bundle.repos, "install", "docker")
    return args(host, bundle), "conflicts with"


def _etcd_host_without_certs(host, bundle):
    with host.cluster.open("a") as cluster:
        cluster.write("etcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n"
                      "  - {name: etcd2, address: 10.0.0.32}\n")
    return args(host, bundle, "--node", "etcd2"), (
        "etcd-certs: etcd2 is an etcd.external host after the first: install needs "
        "--etcd-certs FILE, the etcd CA of this cluster -> the first etcd host etcd1 (10.0.0.31) "
        "writes /etc/kubernetes/kubecrate/etcd-certs.json when kubecrate installs it")


@pytest.mark.parametrize("make", [_wrong_release, _other_arch, _conflicting_package,
                                  _etcd_host_without_certs],
                         ids=["wrong-os-release", "other-arch", "conflicting-package",
                              "etcd-host-without-certs"])
def test_preflight_failures_exit_4_and_change_nothing(host_bundle, test_host, make):
    host = test_host
    argv, message = make(host, host_bundle)
    before, kernel_before = snapshot(host.root), snapshot(host.kernel)
    for command in ("preflight", "install"):
        done = host.installer(command, *argv)
        assert done.returncode == 4, done.stdout + done.stderr
        assert message in done.stderr, done.stderr
        assert snapshot(host.root) == before and snapshot(host.kernel) == kernel_before
    assert [c for c in host.calls() if c[0] not in ("yum", "rpm", "systemctl")
            and c != ["chronyc", "tracking"]] == []  # read-only queries only
    assert all("--assumeno" in c for c in host.calls() if c[0] == "yum")


def test_preflight_fails_on_an_occupied_apiserver_port(host_bundle, test_host):
    host = test_host
    before = snapshot(host.root)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 6443))
        busy.listen(1)
        done = host.installer("install", *args(host, host_bundle, "--node", "cp1"))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "port 6443/tcp is already in use" in done.stderr
    assert snapshot(host.root) == before

