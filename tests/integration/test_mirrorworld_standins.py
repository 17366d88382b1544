"""The mirror world's release-file tree and kube stand-ins (docs/testing.md).

Hosts are separate KUBECRATE_ROOT folders on 127.0.0.1 with their own apiserver ports; every
daemon a test starts names its root on its command line and is killed at teardown.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from lab.procs import kill_standins
from lab.tools import require_tool
from mirrorworld import releases

from tests.integration import readyhost

pytestmark = pytest.mark.integration

VERSION = "v1.23.17"
CERT_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
TOKEN = "abcdef.0123456789abcdef"
INIT_CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- token: "{token}"
  ttl: 24h0m0s
certificateKey: {key}
localAPIEndpoint:
  advertiseAddress: 127.0.0.1
  bindPort: {port}
nodeRegistration:
  name: cp1
  criSocket: {cri}
  kubeletExtraArgs:
    node-ip: 127.0.0.1
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: {version}
controlPlaneEndpoint: "127.0.0.1:{port}"
imageRepository: registry.k8s.io
networking:
  podSubnet: 10.244.0.0/16
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"""
JOIN_CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "{endpoint}"
    token: "{token}"
    caCertHashes:
    - "{hash}"
nodeRegistration:
  name: worker1
  criSocket: /var/run/dockershim.sock
  kubeletExtraArgs:
    node-ip: 127.0.0.1
"""
FLANNEL = """\
apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  template:
    spec:
      containers:
      - name: kube-flannel
        image: docker.io/flannel/flannel:v0.22.3
        args: ["--ip-masq", "--kube-subnet-mgr", "--iface=lo"]
"""


REFRESH_CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
{init}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: {version}
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    require_tool("openssl")
    require_tool("python3")
    base = tmp_path_factory.mktemp("releases")
    www, work = base / "www", base / "work"
    paths = releases.generate(www, work)
    bindir = base / "bin"
    arch_dir = www / paths["kubernetes"][VERSION] / "bin/linux/amd64"
    for tool in ("kubeadm", "kubelet", "kubectl"):
        bindir.mkdir(exist_ok=True)
        shutil.copy2(arch_dir / tool, bindir / tool)
    releases.write_host_tools(bindir)
    readyhost.link_docker(bindir)
    return {"www": www, "work": work, "paths": paths, "bin": bindir}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    def __init__(self, root: Path, bindir: Path):
        self.root, self.bindir = root, bindir
        self.kernel = root.parent / (root.name + "-kernel")
        root.mkdir(parents=True)
        readyhost.write_root(root)
        readyhost.write_kernel(self.kernel)

    def run(self, *argv, fake_now=None, stdin=None, timeout=90, path_first=None, extra=None):
        env = dict(os.environ, KUBECRATE_ROOT=str(self.root), KUBECRATE_STANDIN_TIMEOUT="20",
                   KUBECRATE_STANDIN_MAX_LIFETIME="900", KUBECRATE_PROBE_ROOT=str(self.kernel),
                   PATH="%s:%s" % (self.bindir, os.environ["PATH"]))
        if path_first:
            env["PATH"] = "%s:%s" % (path_first, env["PATH"])
        env.update(extra or {})
        env.pop("KUBECRATE_FAKE_NOW", None)
        if fake_now is not None:
            env["KUBECRATE_FAKE_NOW"] = str(fake_now)
        return subprocess.run(list(argv), env=env, input=stdin, capture_output=True, text=True,
                              timeout=timeout)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")


@pytest.fixture
def hosts(tree, tmp_path):
    made = []

    def make(name):
        host = Host(tmp_path / name, tree["bin"])
        made.append(host)
        return host

    yield make
    for host in made:
        kill_standins(host.root)


def _init_config(host, port, **overrides):
    values = {"token": TOKEN, "key": CERT_KEY, "port": port, "cri": "/var/run/dockershim.sock",
              "version": VERSION}
    values.update(overrides)
    path = host.root / "kubeadm-init.yaml"
    path.write_text(INIT_CONFIG.format(**values))
    return str(path)


def _ca_hash(host) -> str:
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in",
                          str(host.path("/etc/kubernetes/pki/ca.crt"))],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


# --- the release tree ------------------------------------------------------------------------


def test_checksum_files_match_and_generation_is_deterministic(tree, tmp_path):
    www, paths = tree["www"], tree["paths"]
    assert set(paths) == {"kubernetes", "crictl", "cni"}
    for rel in paths["kubernetes"].values():
        for arch in ("amd64", "arm64"):
            for tool in ("kubeadm", "kubelet", "kubectl"):
                binary = www / rel / "bin/linux" / arch / tool
                data = binary.read_bytes()
                assert data.startswith(b"#!/usr/bin/env python3\n")
                assert os.access(binary, os.X_OK)
                # dl.k8s.io style: the bare hex digest, checkable with `sha256sum --check`
                hex256 = binary.with_name(tool + ".sha256").read_text()
                assert hex256 == hashlib.sha256(data).hexdigest()
                assert binary.with_name(tool + ".sha512").read_text() == \
                    hashlib.sha512(data).hexdigest()
    tarballs = [www / paths["crictl"]["v1.23.0"] / "crictl-v1.23.0-linux-amd64.tar.gz",
                www / paths["cni"]["v1.1.1"] / "cni-plugins-linux-arm64-v1.1.1.tgz"]
    for tgz in tarballs:
        line = Path(str(tgz) + ".sha256").read_text()
        assert line == "%s  %s\n" % (hashlib.sha256(tgz.read_bytes()).hexdigest(), tgz.name)
        check = subprocess.run(["sha256sum", "--check", tgz.name + ".sha256"], cwd=tgz.parent,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    with tarfile.open(tarballs[0]) as tar:
        assert tar.getnames() == ["crictl"]
    with tarfile.open(tarballs[1]) as tar:
        assert {"./bridge", "./host-local", "./loopback", "./portmap"} <= set(tar.getnames())
        assert {m.mtime for m in tar.getmembers()} == {releases.MTIME}
    assert tarballs[0].read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0

    again = releases.generate(tmp_path / "www", tmp_path / "work")
    assert again == paths
    first = {p.relative_to(www): p.read_bytes() for p in www.rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "www"): p.read_bytes()
              for p in (tmp_path / "www").rglob("*") if p.is_file()}
    assert first == second

    # A warm start (stamp matches) rewrites nothing.
    sample = www / paths["kubernetes"][VERSION] / "bin/linux/amd64/kubeadm"
    before = sample.stat().st_mtime_ns
    releases.generate(www, tree["work"])
    assert sample.stat().st_mtime_ns == before


def test_binaries_report_their_baked_in_version(tree, hosts):
    host = hosts("h")
    www, paths = tree["www"], tree["paths"]
    for version, rel in paths["kubernetes"].items():
        folder = www / rel / "bin/linux/arm64"
        assert host.run(str(folder / "kubeadm"), "version", "-o", "short").stdout == version + "\n"
        assert host.run(str(folder / "kubelet"), "--version").stdout == \
            "Kubernetes %s\n" % version
        assert version in host.run(str(folder / "kubectl"), "version", "--client").stdout


def test_config_images_list_matches_tech_facts(hosts):
    host = hosts("h")
    out = host.run("kubeadm", "config", "images", "list", "--kubernetes-version", VERSION)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "registry.k8s.io/kube-apiserver:v1.23.17",
        "registry.k8s.io/kube-controller-manager:v1.23.17",
        "registry.k8s.io/kube-scheduler:v1.23.17", "registry.k8s.io/kube-proxy:v1.23.17",
        "registry.k8s.io/pause:3.6", "registry.k8s.io/etcd:3.5.6-0",
        "registry.k8s.io/coredns/coredns:v1.8.6"]
    mirror = "registry.aliyuncs.com/google_containers"
    out = host.run("kubeadm", "config", "images", "list", "--kubernetes-version", "v1.30.14",
                   "--image-repository", mirror)
    assert out.stdout.split()[-3:] == [mirror + "/pause:3.9", mirror + "/etcd:3.5.15-0",
                                       mirror + "/coredns:v1.11.3"]


# --- kubeadm init: validation --------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ({"version": "v1.23.16"}, 'kubernetesVersion: Invalid value: "v1.23.16"'),
    ({"token": "abc.0123456789abcdef"}, 'the bootstrap token "abc.0123456789abcdef" was not of'),
    ({"token": "ABCDEF.0123456789abcdef"}, "bootstrapTokens[0].token: Invalid value"),
    ({"key": "0123abcd"}, 'certificateKey: Invalid value: "0123abcd"'),
    ({"key": "0123"}, "certificateKey: json: cannot unmarshal int"),
])
def test_init_rejects_bad_config(hosts, override, message):
    host = hosts("bad")
    result = host.run("kubeadm", "init", "--config", _init_config(host, _free_port(), **override),
                      "--upload-certs")
    assert result.returncode != 0
    assert message in result.stderr
    assert not host.path("/etc/kubernetes/manifests").exists()


def test_cri_socket_with_unix_prefix_writes_remote_flags_and_kubelet_fails(hosts):
    host = hosts("cri")
    config = _init_config(host, _free_port(), cri="unix:///var/run/dockershim.sock")
    result = host.run("kubeadm", "init", "--config", config, "--upload-certs")
    flags = host.path("/var/lib/kubelet/kubeadm-flags.env").read_text()
    assert "--container-runtime=remote" in flags
    assert "--container-runtime-endpoint=unix:///var/run/dockershim.sock" in flags
    assert "--network-plugin" not in flags
    assert result.returncode != 0
    assert "error execution phase wait-control-plane" in result.stderr
    assert "kubelet isn't running or healthy" in result.stderr
    log = host.path("/var/log/kubecrate-standin/kubelet.log").read_text()
    assert "dial unix /var/run/dockershim.sock" in log


# --- an HA cluster: init, joins, expiry, kubectl, reset ----------------------------------------


def test_ha_init_joins_expiry_kubectl_and_reset(hosts):
    cp1, cp2, worker, dirty = hosts("cp1"), hosts("cp2"), hosts("worker"), hosts("dirty")
    port1, port2 = _free_port(), _free_port()
    endpoint = "127.0.0.1:%d" % port1

    init = cp1.run("kubeadm", "init", "--config", _init_config(cp1, port1), "--upload-certs")
    assert init.returncode == 0, init.stdout + init.stderr
    for path in ("/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf",
                 "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key",
                 "/etc/kubernetes/manifests/kube-apiserver.yaml",
                 "/etc/kubernetes/manifests/etcd.yaml"):
        assert cp1.path(path).is_file(), path
    flags = cp1.path("/var/lib/kubelet/kubeadm-flags.env").read_text()
    assert "--network-plugin=cni --pod-infra-container-image=registry.k8s.io/pause:3.6" in flags
    ca_hash = _ca_hash(cp1)
    assert "kubeadm join %s --token %s" % (endpoint, TOKEN) in init.stdout
    assert "--discovery-token-ca-cert-hash %s" % ca_hash in init.stdout
    assert "--control-plane --certificate-key %s" % CERT_KEY in init.stdout
    assert cp1.run("systemctl", "is-active", "kubelet").stdout.strip() == "active"

    join_cp = ["kubeadm", "join", endpoint, "--token", TOKEN, "--discovery-token-ca-cert-hash",
               ca_hash, "--control-plane", "--apiserver-advertise-address", "127.0.0.1",
               "--apiserver-bind-port", str(port2), "--node-name", "cp2"]

    missing_key = cp2.run(*join_cp)
    assert missing_key.returncode != 0
    assert "One or more conditions for hosting a new control plane instance is not satisfied" \
        in missing_key.stderr

    dirty.path("/etc/kubernetes/manifests").mkdir(parents=True)
    dirty.path("/etc/kubernetes/manifests/haproxy.yaml").write_text("kind: Pod\n")
    refused = dirty.run("kubeadm", "join", endpoint, "--token", TOKEN,
                        "--discovery-token-ca-cert-hash", ca_hash, "--node-name", "dirty")
    assert refused.returncode != 0
    assert "[ERROR DirAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not " \
           "empty" in refused.stderr

    wrong_pin = worker.run("kubeadm", "join", endpoint, "--token", TOKEN,
                           "--discovery-token-ca-cert-hash", "sha256:" + "0" * 64)
    assert wrong_pin.returncode != 0
    assert "none of the public keys \"%s\" are pinned" % ca_hash in wrong_pin.stderr

    bad_token = worker.run("kubeadm", "join", endpoint, "--token", "abcdef.0123456789",
                           "--discovery-token-ca-cert-hash", ca_hash)
    assert bad_token.returncode != 0 and "was not of the form" in bad_token.stderr

    # Two hours and a minute later the uploaded certificates are gone, the token is not.
    later = time.time() + 2 * 3600 + 60
    expired = cp2.run(*join_cp, "--certificate-key", CERT_KEY, fake_now=later)
    assert expired.returncode != 0
    assert "error execution phase control-plane-prepare/download-certs" in expired.stderr
    assert 'Secret "kubeadm-certs" was not found' in expired.stderr
    wrong_key = cp2.run(*join_cp, "--certificate-key", "f" * 64)
    assert wrong_key.returncode != 0 and "message authentication failed" in wrong_key.stderr

    reupload = cp1.run("kubeadm", "init", "phase", "upload-certs", "--upload-certs",
                       "--certificate-key", CERT_KEY, fake_now=later)
    assert reupload.returncode == 0, reupload.stderr
    # without a config's kubernetesVersion kubeadm asks dl.k8s.io first
    assert "could not fetch a Kubernetes version from the internet" in reupload.stderr
    assert "[upload-certs] Using certificate key:\n" + CERT_KEY in reupload.stdout
    secret_config = cp1.root / "refresh.yaml"
    secret_config.write_text(REFRESH_CONFIG.format(
        version=VERSION, init="certificateKey: \"%s\"" % CERT_KEY))
    mixed = cp1.run("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config",
                    str(secret_config), "--certificate-key", CERT_KEY, fake_now=later)
    assert mixed.returncode == 1
    assert mixed.stderr.strip() == "can not mix '--config' with arguments [certificate-key]"
    quiet = cp1.run("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config",
                    str(secret_config), "--skip-certificate-key-print", fake_now=later)
    assert quiet.returncode == 0, quiet.stderr
    assert CERT_KEY not in quiet.stdout + quiet.stderr and "dl.k8s.io" not in quiet.stderr
    joined = cp2.run(*join_cp, "--certificate-key", CERT_KEY, fake_now=later)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "a new control plane instance was created" in joined.stdout
    assert cp2.path("/etc/kubernetes/pki/ca.key").read_bytes() == \
        cp1.path("/etc/kubernetes/pki/ca.key").read_bytes()

    # A day later the init token has expired; a fresh one from `token create` works.
    day_later = time.time() + 25 * 3600
    stale = worker.run("kubeadm", "join", endpoint, "--token", TOKEN,
                       "--discovery-token-ca-cert-hash", ca_hash, fake_now=day_later)
    assert stale.returncode != 0
    assert 'could not find a JWS signature in the cluster-info ConfigMap for token ID "abcdef"' \
        in stale.stderr
    token_config = cp2.root / "token.yaml"
    token_config.write_text(REFRESH_CONFIG.format(version=VERSION, init=(
        "bootstrapTokens:\n- token: \"zyxwvu.9876543210zyxwvu\"\n  ttl: 2h0m0s")))
    mixed = cp2.run("kubeadm", "token", "create", "--config", str(token_config), "--ttl", "1h",
                    fake_now=day_later)
    assert mixed.returncode == 1
    assert mixed.stderr.strip() == "can not mix '--config' with arguments [ttl]"
    made = cp2.run("kubeadm", "token", "create", "--config", str(token_config),
                   fake_now=day_later)
    assert made.returncode == 0 and made.stdout == "zyxwvu.9876543210zyxwvu\n", made.stderr
    listed = cp2.run("kubeadm", "token", "list", fake_now=day_later).stdout
    assert re.search(r"^zyxwvu\.9876543210zyxwvu +[12]h ", listed, re.M), listed
    printed = cp2.run("kubeadm", "token", "create", "--print-join-command", fake_now=day_later)
    assert printed.returncode == 0, printed.stderr
    command = printed.stdout.split()
    assert command[:3] == ["kubeadm", "join", endpoint] and ca_hash in command
    join_config = worker.root / "join.yaml"
    join_config.write_text(JOIN_CONFIG.format(endpoint=endpoint, hash=ca_hash,
                                              token=command[command.index("--token") + 1]))
    worker_join = worker.run("kubeadm", "join", "--config", str(join_config),
                             fake_now=day_later)
    assert worker_join.returncode == 0, worker_join.stdout + worker_join.stderr
    assert "This node has joined the cluster" in worker_join.stdout
    assert worker.path("/etc/kubernetes/pki/ca.crt").is_file()

    kubeconfig = ["--kubeconfig", "/etc/kubernetes/admin.conf"]
    nodes = cp1.run("kubectl", *kubeconfig, "get", "nodes")
    assert nodes.returncode == 0, nodes.stderr
    rows = {line.split()[0]: line.split() for line in nodes.stdout.splitlines()[1:]}
    assert set(rows) == {"cp1", "cp2", "worker1"}
    assert rows["cp2"][2] == "control-plane,master" and rows["worker1"][2] == "<none>"
    assert {r[1] for r in rows.values()} == {"NotReady"}
    # The second apiserver holds the same state (the stand-ins replicate like etcd).
    direct = cp2.run("kubectl", *kubeconfig, "--server", "https://127.0.0.1:%d" % port2,
                     "get", "nodes", "-o", "name")
    assert direct.stdout.split() == ["node/cp1", "node/cp2", "node/worker1"]

    manifest = cp1.root / "flannel.yaml"
    manifest.write_text(FLANNEL)
    applied = cp1.run("kubectl", *kubeconfig, "apply", "-f", str(manifest))
    assert applied.stdout.splitlines() == ["namespace/kube-flannel created",
                                           "daemonset.apps/kube-flannel-ds created"]
    again = cp1.run("kubectl", *kubeconfig, "apply", "-f", str(manifest))
    assert again.stdout.splitlines()[1] == "daemonset.apps/kube-flannel-ds unchanged"
    listing = json.loads(cp1.run("kubectl", *kubeconfig, "get", "nodes", "-o", "json").stdout)
    assert {n["status"]["conditions"][0]["status"] for n in listing["items"]} == {"True"}

    reset = cp2.run("kubeadm", "reset", "-f")
    assert reset.returncode == 0, reset.stderr
    assert not cp2.path("/etc/kubernetes/admin.conf").exists()
    assert not any(cp2.path("/etc/kubernetes/manifests").iterdir())
    assert cp2.run("systemctl", "is-active", "kubelet").stdout.strip() == "inactive"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port2), timeout=2).close()
    # cp1 keeps serving once cp2 left the member list.
    assert cp1.run("kubectl", *kubeconfig, "get", "nodes").returncode == 0


def test_kubectl_without_a_cluster_fails_clearly(hosts):
    host = hosts("nocluster")
    out = host.run("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes")
    assert out.returncode != 0
    assert re.search(r"unable to read .*admin\.conf", out.stderr)
