"""The kube stand-ins refuse what the real kubelet, kubeadm 1.23 and systemd refuse
(docs/testing.md), each against a host root that tests/integration/readyhost.py made ready and
then spoiled in one way. The upstream source of each refusal is cited in the stand-in's code and
in docs/testing.md.
"""

import json
import os
import time

import pytest
from lab.hostruntime import seed_images

from installer.render import render
from tests.integration import readyhost
from tests.integration.test_mirrorworld_standins import (  # noqa: F401 (fixtures)
    _free_port,
    _init_config,
    hosts,
    tree,
)

pytestmark = pytest.mark.integration

NEVER = "  imagePullPolicy: Never\n"
SHORT = {"KUBECRATE_STANDIN_TIMEOUT": "6"}  # init is expected to fail in wait-control-plane


def _with_policy(path: str, policy_line: str) -> str:
    """The init config with nodeRegistration.imagePullPolicy set (as the installer does)."""
    text = open(path).read().replace("  criSocket:", policy_line + "  criSocket:", 1)
    with open(path, "w") as out:
        out.write(text)
    return path


def _kubelet_log(host) -> str:
    log = host.path("/var/log/kubecrate-standin/kubelet.log")
    return log.read_text() if log.exists() else ""


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _pods(host, want, limit=15.0) -> dict:
    """pods.json of the kubelet stand-in once `want(pods)` holds (bounded wait)."""
    deadline = time.monotonic() + limit
    pods = {}
    while time.monotonic() < deadline:
        path = host.path("/run/kubecrate-standin/pods.json")
        try:
            pods = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            pods = {}
        if want(pods):
            return pods
        time.sleep(0.3)
    return pods


def test_preflight_refuses_an_unprepared_host_and_honours_ignore(hosts):  # noqa: F811
    host = hosts("raw")
    kernel = host.kernel / "proc"
    (kernel / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n"
                                  "/dev/dm-1\tpartition\t16760828\t0\t-2\n")
    (kernel / "sys/net/bridge/bridge-nf-call-iptables").unlink()
    (kernel / "sys/net/ipv4/ip_forward").write_text("0\n")
    (kernel / "cpuinfo").write_text("processor\t: 0\n")
    (kernel / "meminfo").write_text("MemTotal:        1000000 kB\n")
    host.path("/usr/sbin/conntrack").unlink()
    host.path("/usr/sbin/tc").unlink()
    config = _init_config(host, _free_port())
    refused = host.run("kubeadm", "init", "--config", config)
    assert refused.returncode == 1
    for line in (
            "[ERROR Swap]: running with swap on is not supported. Please disable swap",
            "[ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: "
            "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist",
            "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward "
            "contents are not set to 1",
            "[ERROR NumCPU]: the number of available CPUs 1 is less than the required 2",
            "[ERROR Mem]: the system RAM (976 MB) is less than the minimum 1700 MB",
            "[ERROR FileExisting-conntrack]: conntrack not found in system path"):
        assert line in refused.stderr, refused.stderr
    assert "[WARNING FileExisting-tc]: tc not found in system path" in refused.stdout
    assert not host.path("/etc/kubernetes/manifests/kube-apiserver.yaml").exists()
    ignored = host.run("kubeadm", "init", "--config", config, "--ignore-preflight-errors",
                       "swap,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables,"
                       "FileContent--proc-sys-net-ipv4-ip_forward,NumCPU,Mem,"
                       "FileExisting-conntrack", extra=SHORT)
    assert "[WARNING Swap]: running with swap on is not supported" in ignored.stdout
    # ...but the kubelet itself still refuses swap (its own failSwapOn), so init cannot finish
    assert ignored.returncode == 1
    assert "error execution phase wait-control-plane" in ignored.stderr
    assert "failed to run Kubelet: running with swap on is not supported, please disable swap! " \
           "or set --fail-swap-on flag to false. /proc/swaps contained: [" in _kubelet_log(host)


def test_kubelet_refuses_a_cgroup_driver_other_than_dockers(hosts):  # noqa: F811
    host = hosts("cgroupfs")
    host.path("/etc/docker/daemon.json").write_text('{"log-driver": "json-file"}\n')
    result = host.run("kubeadm", "init", "--config", _init_config(host, _free_port()),
                      extra=SHORT)
    assert '[WARNING IsDockerSystemdCheck]: detected "cgroupfs" as the Docker cgroup driver' \
        in result.stdout
    assert result.returncode == 1 and "wait-control-plane" in result.stderr
    assert 'misconfiguration: kubelet cgroup driver: "systemd" is different from docker cgroup ' \
           'driver: "cgroupfs"' in _kubelet_log(host)


def test_control_plane_images_must_be_in_this_hosts_runtime(hosts):  # noqa: F811
    """A control-plane node given only the worker images cannot init."""
    host = hosts("workerset")
    store = host.path("/var/lib/docker/kubecrate-standin-images.json")
    store.unlink()
    seed_images(host.root, readyhost.WORKER_IMAGES)
    config = _init_config(host, _free_port())
    pulled = host.run("kubeadm", "init", "--config", config)
    assert pulled.returncode == 1
    assert "[ERROR ImagePull]: failed to pull image registry.k8s.io/kube-apiserver:v1.23.17" \
        in pulled.stderr
    assert "registry.k8s.io/pause:3.6" not in pulled.stderr  # that one is loaded
    # imagePullPolicy Never (what the installer renders): kubeadm skips the check, as 1.23
    # does, and the kubelet keeps the pod waiting for its image.
    never = host.run("kubeadm", "init", "--config", _with_policy(config, NEVER), extra=SHORT)
    assert never.returncode == 1 and "wait-control-plane" in never.stderr
    pods = _pods(host, lambda p: "kube-apiserver" in p)
    assert pods["kube-apiserver"]["reason"] == "ImagePullBackOff", pods
    assert "registry.k8s.io/kube-apiserver:v1.23.17" in pods["kube-apiserver"]["message"]


def test_no_pod_starts_without_the_pause_image(hosts):  # noqa: F811
    host = hosts("nopause")
    host.path("/var/lib/docker/kubecrate-standin-images.json").unlink()
    seed_images(host.root, [i for i in readyhost.CONTROL_PLANE_IMAGES if "pause" not in i])
    config = _with_policy(_init_config(host, _free_port()), NEVER)
    result = host.run("kubeadm", "init", "--config", config, extra=SHORT)
    assert result.returncode == 1
    pods = _pods(host, lambda p: "etcd" in p)
    assert pods["etcd"]["reason"] == "CreatePodSandboxError", pods
    assert 'failed pulling image "registry.k8s.io/pause:3.6"' in pods["etcd"]["message"]


def test_static_pods_run_the_host_daemon_only_when_their_image_is_loaded(hosts, tmp_path):  # noqa: F811,E501
    host = hosts("lbpods")
    fake = tmp_path / "daemons"
    fake.mkdir()
    marker = tmp_path / "keepalived.ran"
    (fake / "keepalived").write_text("#!/bin/sh\necho \"$@\" > %s\nexec sleep 60\n" % marker)
    (fake / "keepalived").chmod(0o755)
    host.path("/etc/keepalived").mkdir(parents=True)
    host.path("/etc/keepalived/keepalived.conf").write_text("# rendered\n")
    pod = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {0}\n  namespace: kube-system\nspec:\n"
           "  hostNetwork: true\n  containers:\n  - name: {0}\n    image: \"{1}\"\n"
           "    imagePullPolicy: IfNotPresent\n  volumes:\n  - name: config\n    hostPath:\n"
           "      path: {2}\n      type: File\n")
    manifests = host.path("/etc/kubernetes/manifests")
    manifests.mkdir(parents=True)
    (manifests / "keepalived.yaml").write_text(pod.format(
        "keepalived", "docker.io/osixia/keepalived:2.0.20", "/etc/keepalived/keepalived.conf"))
    (manifests / "haproxy.yaml").write_text(pod.format(
        "haproxy", "docker.io/library/haproxy:2.8", "/etc/haproxy/haproxy.cfg"))
    host.path("/var/lib/kubelet").mkdir(parents=True)
    host.path("/var/lib/kubelet/config.yaml").write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "cgroupDriver: systemd\nstaticPodPath: /etc/kubernetes/manifests\n")
    host.path("/var/lib/kubelet/kubeadm-flags.env").write_text(
        'KUBELET_KUBEADM_ARGS="--network-plugin=cni '
        '--pod-infra-container-image=registry.k8s.io/pause:3.6"\n')
    started = host.run("systemctl", "start", "kubelet", path_first=fake)
    assert started.returncode == 0, started.stderr
    pods = _pods(host, lambda p: {"keepalived", "haproxy"} <= set(p))
    assert pods["keepalived"]["reason"] == "ImagePullBackOff", pods
    assert not marker.exists()  # no image, no keepalived
    seed_images(host.root, ["docker.io/osixia/keepalived:2.0.20"])
    pods = _pods(host, lambda p: p.get("keepalived", {}).get("phase") == "Running")
    assert pods["keepalived"]["phase"] == "Running", pods
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "--kubecrate-root=%s" % host.root in marker.read_text()
    keepalived = pods["keepalived"]["pid"] or _pods(host, lambda p: p["keepalived"]["pid"])[
        "keepalived"]["pid"]
    assert keepalived and os.path.exists("/proc/%d" % keepalived)
    # haproxy's image is loaded too now, but its config file is missing
    seed_images(host.root, ["docker.io/library/haproxy:2.8"])
    pods = _pods(host, lambda p: p.get("haproxy", {}).get("reason") == "FailedMount")
    assert "hostPath type check failed: /etc/haproxy/haproxy.cfg is not a file" in \
        pods["haproxy"]["message"], pods
    # kubeadm reset removes "all containers": keepalived would otherwise keep the VIP
    assert host.run("kubeadm", "reset", "-f").returncode == 0
    deadline = time.monotonic() + 10
    while _alive(keepalived) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(keepalived)


def test_kubelet_gets_the_command_line_systemd_builds(hosts):  # noqa: F811
    host = hosts("flags")
    host.path("/etc/sysconfig").mkdir(parents=True)
    host.path("/etc/sysconfig/kubelet").write_text("KUBELET_EXTRA_ARGS=--node-ip=127.0.0.1\n")
    result = host.run("kubeadm", "init", "--config", _init_config(host, _free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    started = [line for line in _kubelet_log(host).splitlines() if "started v1.23.17" in line]
    assert started, _kubelet_log(host)
    for flag in ("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                 "--config=/var/lib/kubelet/config.yaml", "--network-plugin=cni",
                 "--pod-infra-container-image=registry.k8s.io/pause:3.6", "--node-ip=127.0.0.1"):
        assert flag in started[-1], started[-1]


def test_systemctl_refuses_a_unit_without_a_unit_file(hosts):  # noqa: F811
    host = hosts("units")
    start = host.run("systemctl", "start", "chronyd")
    assert start.returncode == 5
    assert "Failed to start chronyd.service: Unit chronyd.service not found." in start.stderr
    assert host.run("systemctl", "enable", "chronyd").returncode == 1
    assert host.run("systemctl", "is-active", "chronyd").returncode == 3  # no error, inactive


def test_kubeadm_refuses_flags_mixed_with_config(hosts):  # noqa: F811
    host = hosts("mixed")
    config = _init_config(host, _free_port())
    init = host.run("kubeadm", "init", "--config", config, "--certificate-key", "a" * 64)
    assert init.returncode == 1
    assert "can not mix '--config' with arguments [certificate-key]" in init.stderr
    join = host.run("kubeadm", "join", "--config", config, "--token", "abcdef.0123456789abcdef")
    assert "can not mix '--config' with arguments [token]" in join.stderr


@pytest.mark.parametrize("old, new, message", [
    ("  kubeletExtraArgs:", "  kubeletExtraArg:",
     'unknown field "nodeRegistration.kubeletExtraArg"'),
    ("  podSubnet: 10.244.0.0/16", "  podSubnet: 10.244.0.0/16\n  podCIDR: 10.244.0.0/16",
     'unknown field "networking.podCIDR"'),
    ("cgroupDriver: systemd", "cgroupDriver: systemd\ncgroupdriver: systemd",
     'unknown field "cgroupdriver"'),
    ("  ttl: 24h0m0s", "  ttl: 24h0m0s\n  ttl: 2h0m0s", "duplicate key 'ttl'"),
])
def test_kubeadm_decodes_every_kind_strictly(hosts, old, new, message):  # noqa: F811
    host = hosts("strict")
    path = _init_config(host, _free_port())
    text = open(path).read()
    assert old in text
    with open(path, "w") as out:
        out.write(text.replace(old, new, 1))
    result = host.run("kubeadm", "init", "--config", path)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert not host.path("/etc/kubernetes/manifests").exists()


def test_recorded_containerd_store_is_per_host_and_answers_crictl(tmp_path):
    """The containerd side of the per-host image stores: `ctr -n k8s.io images import -` keeps
    the references of the OCI index's io.containerd.image.name annotations under that host's
    root, and `crictl inspecti` (how kubeadm's CRI runtime asks) answers from them."""
    import io
    import subprocess
    import tarfile

    bindir = tmp_path / "bin"
    bindir.mkdir()
    readyhost.link_docker(bindir)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "digest": "sha256:" + "1" * 64, "annotations": {
            "io.containerd.image.name": "registry.k8s.io/pause:3.9"}}]}).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        member = tarfile.TarInfo("index.json")
        member.size = len(index)
        tar.addfile(member, io.BytesIO(index))

    def run(root, *argv, data=None):
        env = dict(os.environ, KUBECRATE_ROOT=str(root))
        return subprocess.run([str(bindir / argv[0])] + list(argv[1:]), input=data, env=env,
                              capture_output=True, timeout=60)

    one, two = tmp_path / "one", tmp_path / "two"
    loaded = run(one, "ctr", "-n", "k8s.io", "images", "import", "-", data=archive.getvalue())
    assert loaded.returncode == 0, loaded.stderr
    sock = "unix:///run/containerd/containerd.sock"
    assert run(one, "crictl", "-r", sock, "inspecti", "registry.k8s.io/pause:3.9").returncode == 0
    missing = run(two, "crictl", "-r", sock, "inspecti", "registry.k8s.io/pause:3.9")
    assert missing.returncode == 1 and b"no such image" in missing.stderr
    assert b"registry.k8s.io/pause:3.9" in run(one, "ctr", "-n", "k8s.io", "images", "ls").stdout


STOCK_CONTAINERD = 'disabled_plugins = ["cri"]\n'  # containerd.io's /etc/containerd/config.toml
CONTAINERD = "unix:///run/containerd/containerd.sock"


def _v130(files, tool: str) -> str:
    return str(files["www"] / files["paths"]["kubernetes"]["v1.30.14"] / "bin/linux/amd64" / tool)


def test_containerd_without_its_cri_plugin_is_refused_by_kubeadm_and_the_kubelet(  # noqa: F811
        hosts, tree):  # noqa: F811
    """containerd.io's stock config.toml disables the CRI plugin, and a stopped
    containerd does not answer at all. kubeadm 1.30's preflight ([ERROR CRI]) and the 1.30
    kubelet (at start) refuse both, in the words of the real CRI client; with the config the
    installer writes the kubelet keeps running."""
    host = hosts("ctrd")
    host.path("/etc/containerd").mkdir(parents=True)
    host.path("/etc/containerd/config.toml").write_text(STOCK_CONTAINERD)
    config = _init_config(host, _free_port(), cri=CONTAINERD, version="v1.30.14")
    refused = host.run(_v130(tree, "kubeadm"), "init", "--config", config)
    assert refused.returncode == 1
    assert ('[ERROR CRI]: container runtime is not running: validate service connection: '
            'validate CRI v1 runtime API for endpoint "unix:///run/containerd/containerd.sock": '
            'rpc error: code = Unimplemented desc = unknown service runtime.v1.RuntimeService'
            ) in refused.stdout + refused.stderr, refused.stdout + refused.stderr

    kubelet_config = host.path("/var/lib/kubelet/config.yaml")
    kubelet_config.parent.mkdir(parents=True)
    kubelet_config.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\n"
                              "kind: KubeletConfiguration\ncgroupDriver: systemd\n")
    argv = [_v130(tree, "kubelet"), "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=" + CONTAINERD]
    done = host.run(*argv, timeout=30)
    assert done.returncode == 1
    assert "failed to run Kubelet: validate service connection: validate CRI v1 runtime API " \
           "for endpoint" in done.stderr and "Unimplemented" in done.stderr, done.stderr

    units = host.path("/run/kubecrate-standin/units")  # the systemctl stand-in's records
    units.mkdir(parents=True)
    (units / "containerd.json").write_text('{"active": false}')
    host.path("/etc/containerd/config.toml").write_text(render(
        "containerd-config.toml.j2", pause_image="registry.k8s.io/pause:3.9", mirrors=[],
        insecure=[]))
    stopped = host.run(*argv, timeout=30)
    assert stopped.returncode == 1
    assert "code = Unavailable desc = connection error" in stopped.stderr, stopped.stderr
    assert "dial unix /run/containerd/containerd.sock: connect: no such file" in stopped.stderr

    (units / "containerd.json").write_text('{"active": true}')
    running = host.run(*argv, timeout=30, extra={"KUBECRATE_STANDIN_MAX_LIFETIME": "3"})
    assert running.returncode == 0, running.stderr  # ran until its test lifetime ended
    assert "failed to run Kubelet" not in running.stderr
