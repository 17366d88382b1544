"""kubeadm's external etcd topology (cluster.yaml `etcd.external`) against the real etcd 3.5.1.

kubecrate's etcd-host step (installer/steps/etcdhost.py) installs three etcd hosts on --root
hosts with the kube stand-ins, as kubeadm's "Set up a High Availability etcd cluster with
kubeadm" has it: the kubelet made etcd's service manager by a systemd drop-in and restarted
(the systemctl stand-in runs the kubelet stand-in on the drop-in's command line, which runs
the real etcd from etcd.yaml), the etcd CA made on etcd1 and carried to the others in
etcd-certs.json (`install --etcd-certs`), each member's certificates and etcd.yaml from
`kubeadm init phase certs|etcd`. The first control plane takes the etcd CA certificate and the
apiserver-etcd-client pair from the same file; `kubeadm init` with ClusterConfiguration
etcd.external (the installer's rendering, tests/unit/installer/test_render_kubeadm.py) writes
no etcd.yaml and points the apiserver at the three members; a second control plane gets the
files with upload-certs, and a worker joins. The apiserver stand-ins keep the cluster in that
etcd over TLS, and with one etcd host lost (reset by kubecrate) the cluster still writes.
"""

import json
import os
import subprocess
import time
from types import SimpleNamespace

import pytest
from lab import procs
from lab.etcdlab import PREFIX, EtcdLab, etcd_bin

from installer import etcdcerts, etcdmembers, kubeadmconfig, reset, session
from installer.format.cluster import find_node, load_cluster
from installer.host import Host, Probes
from installer.runner import Runner
from installer.state import State
from installer.steps import Context, etcdhost, run_steps
from tests.integration import test_mirrorworld_standins as standins
from tests.integration.test_mirrorworld_standins import (
    CERT_KEY,
    JOIN_CONFIG,
    TOKEN,
    VERSION,
    _ca_hash,
    _free_port,
)

tree, hosts = standins.tree, standins.hosts  # the release tree and --root hosts (fixtures)

pytestmark = pytest.mark.integration

FILES = ("etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key")
INIT = """\
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- token: "{token}"
certificateKey: "{key}"
localAPIEndpoint: {{advertiseAddress: 127.0.0.1, bindPort: {port}}}
nodeRegistration:
  name: cp1
  criSocket: /var/run/dockershim.sock
  kubeletExtraArgs: {{node-ip: 127.0.0.1}}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: {version}
controlPlaneEndpoint: "127.0.0.1:{port}"
etcd:
  external:
    endpoints: [{endpoints}]
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
"""
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {0}, namespace: default}}\n"
ETCD_HOSTS = [("etcd{}".format(n), PREFIX + str(30 + n)) for n in (1, 2, 3)]
CLUSTER = """\
cluster_name: ehlab
control_plane: {{vip: {0}100, port: 8443}}
networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}
load_balancer: {{mode: services, interface: lo, router_id: 72, auth_pass: kcEtcd2}}
nodes:
  - {{name: cp1, address: {0}21, role: control-plane}}
  - {{name: cp2, address: {0}22, role: control-plane}}
  - {{name: w1, address: {0}23, role: worker}}
etcd:
  external:
{1}"""


def _etcd_host_context(host, cluster, name, certs_path=None):
    """The installer's Context for `name` on a --root host of the kube stand-ins; the bundle
    is only what the etcd-host step reads of it (runtime, version, images)."""
    env = {"PATH": "{}:{}".format(host.bindir, os.environ["PATH"]),
           "KUBECRATE_PROBE_ROOT": str(host.kernel), "KUBECRATE_STANDIN_TIMEOUT": "20",
           "KUBECRATE_STANDIN_MAX_LIFETIME": "900", "KUBECRATE_TEST_ETCD_BIN": str(etcd_bin())}
    info = SimpleNamespace(runtime="docker", kubernetes_version=VERSION, images=(), digest="d",
                           pause_image="registry.k8s.io/pause:3.6")
    certs = etcdcerts.load(str(certs_path), cluster) if certs_path else None
    (host.root / "var/run").mkdir(parents=True, exist_ok=True)
    (host.root / "var/run/docker.sock").write_text("")  # the runtime: Docker, no bundle
    return Context(Host(str(host.root), probes=Probes(str(host.kernel))),
                   Runner(str(host.root), env=env), cluster, find_node(cluster, [], name), info,
                   "", None, etcd_certs=certs, etcd_certs_path=str(certs_path or "") or None)


def _install_etcd_host(ctx):
    """The etcd-host step as install runs it (installer/session.py), recorded in state.json."""
    state = State.load(ctx.host)
    state.data.update(node=ctx.node.name, role=ctx.node.role,
                      cluster=os.path.abspath(ctx.cluster.source))
    return run_steps(ctx, [etcdhost.EtcdHostStep()], state)[0].changes


def _wait_healthy(ctx, deadline_s=60):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        info = etcdmembers.etcd_host_info(str(ctx.host.root))
        if info.get("members") and all(m["healthy"] for m in info["members"]):
            return info
        time.sleep(0.5)
    raise AssertionError("etcd did not become healthy: {}".format(info))


@pytest.fixture
def etcd(tmp_path, hosts, monkeypatch):
    """Three etcd hosts that kubecrate installed: etcd1 first, then etcd2 and etcd3 with the
    etcd-certs.json etcd1 wrote (copied, as an operator copies it)."""
    cluster_yaml = tmp_path / "cluster.yaml"
    cluster_yaml.write_text(CLUSTER.format(PREFIX, "".join(
        "  - {{name: {}, address: {}}}\n".format(n, a) for n, a in ETCD_HOSTS)))
    cluster = load_cluster(str(cluster_yaml))
    roots = {name: hosts(name) for name, _ in ETCD_HOSTS}
    first = _etcd_host_context(roots["etcd1"], cluster, "etcd1")
    done = {"etcd1": _install_etcd_host(first)}
    copy = tmp_path / "carried/etcd-certs.json"
    copy.parent.mkdir()
    copy.write_bytes(first.host.read_bytes(etcdcerts.FILE))
    copy.chmod(0o600)
    contexts = {"etcd1": first}
    for name in ("etcd2", "etcd3"):
        contexts[name] = _etcd_host_context(roots[name], cluster, name, copy)
        done[name] = _install_etcd_host(contexts[name])
    # status (etcdmembers.etcd_host_info) runs etcdctl through `docker run` of the host
    monkeypatch.setenv("PATH", contexts["etcd1"].runner.extra_env["PATH"])
    monkeypatch.setenv("KUBECRATE_TEST_ETCD_BIN", str(etcd_bin()))
    yield SimpleNamespace(cluster=cluster, cluster_yaml=cluster_yaml, hosts=roots,
                          ctx=contexts, done=done, certs=copy,
                          endpoints=list(cluster.etcd_endpoints))
    for host in roots.values():  # the kubelet stand-in first: it would restart etcd
        procs.kill_standins(host.root)
        procs.kill(procs.naming("--data-dir={}/".format(host.root)))


def test_etcd_hosts_as_kubeadms_guide_sets_them_up(tmp_path):
    """The kubeadm stand-in's `init phase certs etcd-*` and `init phase etcd local` with
    kubecrate's etcd-host config: certificates for each host's name and address signed by the
    first host's CA, etcd.yaml with the guide's flags, and the refusals kubeadm makes."""
    lab = EtcdLab(tmp_path / "etcd", ["etcd1", "etcd2"])
    etcd2 = lab.host("etcd2")
    config = etcd2.root / "kubeadm-etcd.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
                      "kubernetesVersion: v1.23.17\n")
    refused = lab.kubeadm(etcd2, "init", "phase", "certs", "etcd-server", "--config",
                          str(config), check=False)
    assert refused.returncode == 1
    assert "error execution phase certs/etcd-server: couldn't load etcd/ca certificate " \
        "authority from /etc/kubernetes/pki" in refused.stderr
    config.write_text(config.read_text() + "etcd:\n  external:\n    endpoints: "
                      "[https://10.0.0.1:2379]\n")
    refused = lab.kubeadm(etcd2, "init", "phase", "etcd", "local", "--config", str(config),
                          check=False)
    assert "etcd static pod manifest cannot be generated for cluster using external etcd" in \
        refused.stderr and not etcd2.manifest.exists()

    lab.set_up_with_kubeadm()
    pki = etcd2.root / "etc/kubernetes/pki"
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in",
                           str(pki / "etcd/server.crt")], capture_output=True, text=True,
                          check=True).stdout
    assert "CN = etcd2" in text and "IP Address:{}".format(etcd2.address) in text
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(lab.hosts[0].root /
                               "etc/kubernetes/pki/etcd/ca.crt"), str(pki / "etcd/peer.crt")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    flags = etcd2.flags()
    assert flags["initial-cluster"] == "etcd1=https://{}:2380,etcd2=https://{}:2380".format(
        lab.hosts[0].address, etcd2.address)
    assert flags["listen-client-urls"] == "https://{}:2379".format(etcd2.address)
    assert flags["name"] == "etcd2" and flags["initial-cluster-state"] == "new"
    again = lab.kubeadm(etcd2, "init", "phase", "certs", "etcd-server", "--config",
                        str(etcd2.root / "etc/kubernetes/kubecrate/kubeadm-etcd.yaml"))
    assert "Using existing etcd/server certificate and key on disk" in again.stdout


def _apply(host, name):
    path = host.root / (name + ".yaml")
    path.write_text(CONFIGMAP.format(name))
    return host.run("kubectl", "--kubeconfig", str(host.path("/etc/kubernetes/admin.conf")),
                    "apply", "-f", str(path), timeout=120)


def _etcdctl(ctx, *args):
    pki = ctx.host.path("/etc/kubernetes/pki")
    return subprocess.run([str(etcd_bin() / "etcdctl"), "--endpoints=" + ",".join(
        ctx.cluster.etcd_endpoints), "--cacert=" + pki + "/etcd/ca.crt", "--cert=" + pki +
        "/apiserver-etcd-client.crt", "--key=" + pki + "/apiserver-etcd-client.key",
        "--dial-timeout=3s", "--command-timeout=10s"] + list(args),
        capture_output=True, text=True, timeout=60, check=True).stdout


def test_two_control_planes_on_three_etcd_hosts_kubecrate_installed(etcd, hosts):
    first = etcd.ctx["etcd1"]
    assert etcd.done["etcd1"] == [
        "write /etc/kubernetes/kubecrate/kubelet-etcd.yaml, /etc/systemd/system/kubelet.service"
        ".d/20-etcd-service-manager.conf; restart the kubelet as etcd's service manager",
        "write /etc/kubernetes/kubecrate/kubeadm-etcd.yaml", "kubeadm init phase certs etcd-ca",
        "kubeadm init phase certs etcd-server", "kubeadm init phase certs etcd-peer",
        "kubeadm init phase certs etcd-healthcheck-client",
        "kubeadm init phase certs apiserver-etcd-client",
        "wrote {} (mode 0600): copy it to the other etcd hosts and the first control plane, "
        "and pass it with --etcd-certs".format(first.host.path(etcdcerts.FILE)),
        "kubeadm init phase etcd local"]
    assert first.host.mode(etcdcerts.FILE) == 0o600
    assert "write /etc/kubernetes/pki/etcd/ca.crt, /etc/kubernetes/pki/etcd/ca.key from " + \
        str(etcd.certs) in etcd.done["etcd2"]
    etcd2 = etcd.ctx["etcd2"]
    assert not etcd2.host.exists("/etc/kubernetes/pki/apiserver-etcd-client.key")
    assert not etcd2.host.exists(etcdcerts.FILE)

    # the kubelet stand-in runs etcd from the drop-in's command line: all three healthy
    status = _wait_healthy(etcd2)
    assert [(m["name"], m["endpoint"]) for m in status["members"]] == \
        [(n, "https://{}:2379".format(a)) for n, a in ETCD_HOSTS]
    members = json.loads(_etcdctl(first, "member", "list", "-w", "json"))["members"]
    assert sorted(m["name"] for m in members) == ["etcd1", "etcd2", "etcd3"]

    # an installed etcd host changes nothing when install runs again
    for name, ctx in etcd.ctx.items():
        assert etcdhost.EtcdHostStep().check(ctx) == [], name
    assert session.status(str(etcd2.host.root))["installed"] is False  # no bundle recorded

    cp1, cp2 = hosts("cp1"), hosts("cp2")
    port1, port2 = _free_port(), _free_port()
    config = cp1.root / "kubeadm-init.yaml"
    config.write_text(INIT.format(token=TOKEN, key=CERT_KEY, port=port1, version=VERSION,
                                  endpoints=", ".join(etcd.endpoints)))

    # kubeadm's preflight (checks.go, ExternalEtcdClientCertificates) before the files are there
    refused = cp1.run("kubeadm", "init", "--config", str(config), "--upload-certs")
    assert refused.returncode != 0
    assert "[ERROR ExternalEtcdClientCertificates]: /etc/kubernetes/pki/etcd/ca.crt doesn't " \
        "exist" in refused.stderr, refused.stderr
    assert not cp1.path("/etc/kubernetes/manifests").exists()

    # the first control plane takes them from etcd-certs.json (install --etcd-certs)
    cp_ctx = _etcd_host_context(cp1, etcd.cluster, "cp1", etcd.certs)
    [action] = etcdhost.first_control_plane_files(cp_ctx)
    action.do()
    assert not cp1.path("/etc/kubernetes/pki/etcd/ca.key").exists()
    init = cp1.run("kubeadm", "init", "--config", str(config), "--upload-certs", timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "External etcd mode: Skipping etcd/ca certificate authority generation" in init.stdout
    assert not cp1.path("/etc/kubernetes/manifests/etcd.yaml").exists()
    manifest = cp1.path("/etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    assert "--etcd-servers=" + ",".join(etcd.endpoints) in manifest
    assert etcdhost.first_control_plane_files(cp_ctx) == []  # a re-run writes nothing

    # join-info's re-upload of the certificates (`init phase upload-certs --config`) names
    # etcd.external too: by default kubeadm uploads local etcd's CA, whose key is not here
    refresh = cp1.root / "refresh.yaml"
    refresh.write_text(kubeadmconfig.refresh_config(
        VERSION, certificate_key=CERT_KEY, etcd_endpoints=etcd.endpoints))
    again = cp1.run("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config",
                    str(refresh), "--kubeconfig", str(cp1.path("/etc/kubernetes/admin.conf")))
    assert again.returncode == 0, again.stdout + again.stderr

    # the second control plane gets the etcd client files with the certificates (copycerts.go)
    join = cp2.run("kubeadm", "join", "127.0.0.1:%d" % port1, "--token", TOKEN,
                   "--discovery-token-ca-cert-hash", _ca_hash(cp1), "--control-plane",
                   "--certificate-key", CERT_KEY, "--apiserver-advertise-address", "127.0.0.1",
                   "--apiserver-bind-port", str(port2), "--node-name", "cp2", timeout=120)
    assert join.returncode == 0, join.stdout + join.stderr
    for name in FILES:
        assert cp2.path("/etc/kubernetes/pki/" + name).read_bytes() == \
            cp1.path("/etc/kubernetes/pki/" + name).read_bytes(), name

    # and a worker joins as on stacked etcd (its kubeadm never reads the etcd files)
    w1 = hosts("w1")
    config = w1.root / "join.yaml"
    config.write_text(JOIN_CONFIG.format(endpoint="127.0.0.1:%d" % port1, hash=_ca_hash(cp1),
                                         token=TOKEN))
    joined = w1.run("kubeadm", "join", "--config", str(config), timeout=120)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert not w1.path("/etc/kubernetes/pki/etcd").exists()

    # both apiservers store in the same etcd: the Nodes are its keys
    keys = _etcdctl(first, "get", "/registry/minions/", "--prefix", "--keys-only").split()
    assert keys == ["/registry/minions/cp1", "/registry/minions/cp2",
                    "/registry/minions/worker1"], keys
    done = _apply(cp2, "from-cp2")
    assert done.returncode == 0, done.stdout + done.stderr

    # one etcd host lost: kubecrate's reset takes etcd3 away (its member stays listed, as
    # after a crash); two of three still make a quorum, the cluster writes
    etcd3 = etcd.ctx["etcd3"]
    removed = reset.reset_cluster(str(etcd3.host.root), runner=etcd3.runner)
    assert "kubeadm reset -f" in removed and \
        "remove " + etcdhost.DROP_IN in removed, removed
    for path in etcdhost.FILES + (etcdhost.MANIFEST, "/etc/kubernetes/pki/etcd/ca.key"):
        assert not etcd3.host.exists(path), path
    health = etcdmembers.etcd_host_info(str(etcd2.host.root))["members"]
    assert [m["healthy"] for m in health] == [True, True, False], health
    started = time.monotonic()
    done = _apply(cp1, "one-etcd-lost")
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    stored = _etcdctl(first, "get", "/registry/kubecrate.io/objects/v1/ConfigMap/default/"
                      "one-etcd-lost", "--print-value-only")
    assert json.loads(stored)["metadata"]["name"] == "one-etcd-lost"
