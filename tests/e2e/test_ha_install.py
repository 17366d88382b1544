"""The whole HA install on four network-namespace hosts (three control planes and a worker),
each with its own --root, driven through the real .pyz built by `kubecrate build` against the
mirror world: node 1 brings up keepalived + haproxy (the real daemons, on the configs the
installer rendered), holds the VIP and runs `kubeadm init`; the others join with join.yaml
through the VIP; `kubectl get nodes` through the VIP then shows four nodes, and a second
install on every host changes nothing.

The kube binaries are the mirror world's stand-ins (from the bundle), systemd is its systemctl
stand-in, which really starts kubelet, keepalived and haproxy (tests/e2e/lbdaemon.py), and
yum/rpm/docker are the recording stand-ins of tests/integration/hoststandins.py (yum and rpm
run the real dnf/rpm on each root; Docker is recorded, docs/testing.md says why).
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from mirrorworld import releases
from mirrorworld import yum as yumworld

from tests.bundles import make_key
from tests.conftest import require_tool
from tests.e2e.netns import netns_lab, require_root  # noqa: F401 (fixture)
from tests.integration import hostworld
from tests.integration.hostworld import MW, STANDINS, dnf_into, write_host_files, write_kernel
from tests.integration.test_build import NAME, RECIPE, kubecrate, seeded_cache

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
SUBNET = 3
VIP = "10.213.{}.100".format(SUBNET)
NAMES = ("cp1", "cp2", "cp3", "w1")
RECORDED = ("yum", "rpm", "modprobe", "sysctl", "swapoff", "setenforce", "hostnamectl",
            "firewall-cmd", "docker")
CLUSTER = """\
cluster_name: e2e
control_plane: {{vip: {vip}, port: 8443}}
networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}
firewall: disable
load_balancer: {{mode: services, interface: eth0, router_id: 61, auth_pass: kcE2e01}}
nodes:
  - {{name: cp1, address: 10.213.{s}.11, role: control-plane}}
  - {{name: cp2, address: 10.213.{s}.12, role: control-plane}}
  - {{name: cp3, address: 10.213.{s}.13, role: control-plane}}
  - {{name: w1, address: 10.213.{s}.14, role: worker}}
""".format(vip=VIP, s=SUBNET)


@pytest.fixture(scope="module")
def built(mirror_world, tmp_path_factory):
    """The primary bundle and the .pyz, built once from the mirror world."""
    require_root()
    root = tmp_path_factory.mktemp("ha-build")
    _key, secret, _public = make_key(root / "keys")
    done = kubecrate("build", RECIPE, "--mirrors", mirror_world.preset, "--key", secret,
                     "--out", root / "out", "--lock", root / (NAME + ".lock"),
                     "--cache", seeded_cache(root / "cache"), timeout=1200)
    assert done.returncode == 0, done.stderr
    return root / "out"


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """A pristine @core root (real dnf), copied per host."""
    require_root()
    generated = yumworld.generate(MW / "www", MW / "work")
    root = tmp_path_factory.mktemp("ha-core") / "root"
    root.mkdir()
    dnf_into(root, MW / "www", {k: v for k, v in generated["repos"].items()
                                if not k.startswith("docker")}, "group", "install", "core")
    return root


def prepare(lab, core, host, shiv_root):
    """Root, fake kernel, host files and PATH of one namespace host."""
    top = host.dir
    test_host = hostworld.TestHost(top, top / "root", top / "kernel", top / "bin")
    shutil.copytree(core, test_host.root, symlinks=True)
    test_host.bin_dir.mkdir()
    for name in RECORDED:
        (test_host.bin_dir / name).symlink_to(STANDINS)
    for name in ("keepalived", "haproxy"):
        (test_host.bin_dir / name).symlink_to(HERE / "lbdaemon.py")
    for script in (STANDINS, HERE / "lbdaemon.py"):
        script.chmod(0o755)
    for name in ("kubeadm", "kubelet", "kubectl"):  # what the binaries step installs
        (test_host.bin_dir / name).symlink_to(test_host.root / "usr/bin" / name)
    releases.write_host_tools(test_host.bin_dir)  # the systemctl stand-in
    (top / "state").mkdir()
    (top / "state/units.json").write_text(json.dumps(
        {"active": [], "enabled": [], "ports": [], "protocols": []}))
    write_kernel(test_host, host.address)
    write_host_files(test_host)
    (top / "cluster.yaml").write_text(CLUSTER)
    env = {"PATH": "{}:{}".format(test_host.bin_dir, os.environ["PATH"]),
           "KUBECRATE_PROBE_ROOT": str(test_host.kernel),
           "KUBECRATE_STANDIN_STATE": str(top / "state"),
           "KUBECRATE_STANDIN_LOG": str(top / "calls.jsonl"),
           "KUBECRATE_SYSTEMCTL_RUN": "kubelet,keepalived,haproxy",
           "KUBECRATE_STANDIN_TIMEOUT": "60", "KUBECRATE_STANDIN_MAX_LIFETIME": "1800",
           "SHIV_ROOT": str(shiv_root)}
    return test_host, env


def pyz(host, env, built, *args, timeout=900):
    """Run the real .pyz inside the host's namespace with its environment."""
    argv = ["env"] + ["{}={}".format(k, v) for k, v in sorted(env.items())] + [
        sys.executable, built / "kubecrate-installer.pyz"] + [str(a) for a in args]
    return host.run(argv, timeout=timeout, check=False)


def install(host, env, built, *extra):
    top = host.dir
    return pyz(host, env, built, "install", "--bundle", built / (NAME + ".tar"),
               "--cluster", top / "cluster.yaml", "--root", top / "root", "--node", host.name,
               *extra)


def test_three_control_planes_and_a_worker_through_the_vip(netns_lab, mirror_world, built,  # noqa: F811
                                                           core, tmp_path):
    for tool in ("keepalived", "haproxy", "curl", "openssl", "unshare"):
        require_tool(tool)
    lab = netns_lab("ha", NAMES, subnet=SUBNET)
    hosts = {h.name: (h,) + prepare(lab, core, h, tmp_path / "shiv") for h in lab.hosts}
    join = tmp_path / "join.yaml"

    cp1, cp1_host, cp1_env = hosts["cp1"]
    first = install(cp1, cp1_env, built, "--join-out", join)
    assert first.returncode == 0, first.stdout + first.stderr + _logs(cp1)
    assert VIP in cp1.addresses()  # keepalived on node 1 holds the VIP
    assert "the VIP {} is up on eth0".format(VIP) in first.stdout  # before kubeadm init
    assert first.stdout.index("is up on eth0") < first.stdout.index("kubeadm init")
    assert oct(join.stat().st_mode & 0o777) == "0o600"

    for name in ("cp2", "cp3", "w1"):
        host, test_host, env = hosts[name]
        done = install(host, env, built, "--join", join)
        assert done.returncode == 0, name + "\n" + done.stdout + done.stderr + _logs(host)
        assert "kubeadm join {}:8443".format(VIP) in done.stdout
        if name != "w1":  # its own keepalived and haproxy, started only after the join
            assert (test_host.root / "etc/keepalived/keepalived.conf").exists()
            assert "state BACKUP" in (test_host.root / "etc/keepalived/keepalived.conf"
                                      ).read_text()

    w1, w1_host, w1_env = hosts["w1"]
    admin = cp1_host.root / "etc/kubernetes/admin.conf"
    assert "https://{}:8443".format(VIP) in admin.read_text()
    got = w1.run(["env", "KUBECRATE_ROOT=" + str(cp1_host.root), cp1_host.root / "usr/bin/kubectl",
                  "--kubeconfig", admin, "get", "nodes"], timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    rows = [line.split() for line in got.stdout.splitlines()[1:]]
    assert sorted(r[0] for r in rows) == list(NAMES), got.stdout
    assert {r[1] for r in rows} == {"Ready"}, got.stdout  # flannel applied from addons/

    for name, (host, _test_host, env) in hosts.items():  # a second install changes nothing
        again = install(host, env, built, *(("--join", join) if name != "cp1" else ()))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to change" in again.stdout, name + "\n" + again.stdout


def _logs(host) -> str:
    text = ""
    folder = host.dir / "root/var/log/kubecrate-standin"
    for log in sorted(folder.glob("*.log")) if folder.exists() else []:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        text += "\n--- {} (last lines)\n{}".format(log.name, tail)
    return text
