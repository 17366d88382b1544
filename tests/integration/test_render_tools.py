"""Rendered configs judged by the real tools: `haproxy -c`, `keepalived -t` inside a network
namespace whose interface is the configured one, and the kubeadm stand-in's `init` (it has no
--dry-run, so a real init on a throwaway root on 127.0.0.1, then reset and kill)."""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from lab import lbsamples
from lab.procs import kill_standins
from lab.tools import require_tool
from mirrorworld import releases

from installer import joinfile, kubeadmconfig, lbconfig
from installer.format import lbspec
from installer.runner import Runner
from tests.integration import readyhost

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["services", "static-pods"])
def test_haproxy_accepts_rendered_config(tmp_path, mode):
    haproxy = require_tool("haproxy")
    lb = lbsamples.load_balancer(mode)
    cfg = tmp_path / "haproxy.cfg"
    # with images.mode registry's frontend: the superset of what either mode renders
    cfg.write_text(lbconfig.haproxy_cfg(lb, static_pod=mode == "static-pods", registry=True))
    check = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ALERT" not in check.stdout + check.stderr


def test_haproxy_rejects_a_broken_config(tmp_path):
    haproxy = require_tool("haproxy")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(lbconfig.haproxy_cfg(lbsamples.load_balancer()).replace(
        "balance roundrobin", "balance nosuchalgorithm"))
    check = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode != 0


def test_keepalived_accepts_rendered_configs_where_the_interface_exists(netns_lab):
    keepalived = require_tool("keepalived")
    lb = lbsamples.load_balancer()
    lab = netns_lab("kat", ["cp1"])
    (host,) = lab.hosts
    # both profiles: VRRPv2 at 1 s (CentOS 7's 1.3.5) and VRRPv3 at 0.2 s (keepalived >= 1.3.7)
    for vrrp in (lbconfig.VRRP_V2, lbconfig.VRRP_V3):
        for peer in lb.peers:
            script = host.dir / "check.sh"
            script.write_text(lbconfig.check_script(lb, peer.name))
            script.chmod(0o755)
            conf = host.dir / "keepalived-{}-v{}.conf".format(peer.name, vrrp.version)
            conf.write_text(lbconfig.keepalived_conf(lb, peer.name, check_script=str(script),
                                                     vrrp=vrrp))
            check = host.run([keepalived, "-t", "-f", conf], check=False)
            assert check.returncode == 0, check.stdout + check.stderr
    # The same test fails when the configured interface is missing: it is a real check.
    other = lbsamples.load_balancer(interface="ens3")
    conf = host.dir / "keepalived-ens3.conf"
    conf.write_text(lbconfig.keepalived_conf(other, "cp1", check_script=str(script)))
    check = host.run([keepalived, "-t", "-f", conf], check=False)
    assert check.returncode != 0
    assert "ens3" in check.stdout + check.stderr


# --- kubeadm stand-in ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube_bin(tmp_path_factory):
    require_tool("openssl")
    base = tmp_path_factory.mktemp("releases")
    paths = releases.generate(base / "www", base / "work")
    bindir = base / "bin"
    bindir.mkdir()
    arch_dir = base / "www" / paths["kubernetes"]["v1.23.17"] / "bin/linux/amd64"
    for tool in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy2(str(arch_dir / tool), str(bindir / tool))
    releases.write_host_tools(bindir)
    readyhost.link_docker(bindir)
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def standin_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    readyhost.write_root(root)  # what the host steps leave for kubeadm
    readyhost.write_kernel(tmp_path / "kernel")
    yield root
    kill_standins(root)


def test_standin_kubeadm_inits_from_rendered_config(kube_bin, standin_root):
    port = _free_port()
    k = lbspec.parse_kubeadm(None, "v1.23.17", "registry.k8s.io", "docker",
                             "127.0.0.1:{}".format(port), "10.244.0.0/16", "10.96.0.0/12")
    token, key = joinfile.new_token(), joinfile.new_certificate_key()
    config = standin_root / "kubeadm-init.yaml"
    config.write_text(kubeadmconfig.init_config(
        k, kubeadmconfig.NodeAddress("cp1", "127.0.0.1"), token, key, apiserver_port=port))
    runner = Runner(str(standin_root), env={
        "PATH": "{}:{}".format(kube_bin, os.environ["PATH"]),
        "KUBECRATE_PROBE_ROOT": str(standin_root.parent / "kernel"),
        "KUBECRATE_STANDIN_TIMEOUT": "20", "KUBECRATE_STANDIN_MAX_LIFETIME": "600"})
    try:
        init = runner.run(["kubeadm", "init", "--config", str(config), "--upload-certs"],
                          timeout=120)
        flags = (standin_root / "var/lib/kubelet/kubeadm-flags.env").read_text()
        assert "--network-plugin=cni" in flags and "--node-ip=127.0.0.1" in flags
        assert "--container-runtime=remote" not in flags
        # The join command kubeadm prints carries our token, our key and the CA hash that
        # openssl (through the runner) and the pure-Python oracle both compute.
        ca = str(standin_root / "etc/kubernetes/pki/ca.crt")
        digest = joinfile.ca_cert_hash(runner, ca)
        assert digest == joinfile.spki_sha256(Path(ca).read_text())
        printed = re.search(r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})", init.stdout)
        assert printed and printed.group(1) == digest
        assert "--token {}".format(token) in init.stdout
        assert "--certificate-key {}".format(key) in init.stdout
        info = joinfile.new_join_info("127.0.0.1:{}".format(port), digest,
                                      joinfile.utcnow(), token, key)
        assert joinfile.parse(joinfile.dump(info)) == info
    finally:
        runner.run(["kubeadm", "reset", "-f"], check=False, timeout=60)
