"""The HA bootstrap steps (load balancer, kubeadm, CNI) and join-info against the mirror world's
kubeadm/kubelet/kubectl/systemctl stand-ins and the real openssl.

Hosts are separate --root folders on loopback addresses (127.0.0.11, .12, ... each apiserver
on its own address, port 6443); the cluster uses `load_balancer.mode: external`, played by a
small TCP forwarder on 127.0.0.100:8443 that the test runs, so every join reaches the cluster
through the endpoint, never a host's own address. The steps run in-process (the host steps
before them need dnf and Docker: tests/integration/test_host_install.py and tests/e2e).
"""

import hashlib
import os
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from lab.hostruntime import seed_images
from lab.procs import kill_standins
from lab.tools import require_tool
from mirrorworld import releases

from builder.bundle.addons import render_flannel
from builder.inputs.recipe import Addon
from installer import joinfile, reset, session, supportlogs
from installer.format.bundleinfo import BundleAddon, BundleImage
from installer.format.cluster import load_cluster
from installer.format.errors import ExitCode, PreconditionError, StepFailed
from installer.host import Host, Probes
from installer.runner import Runner
from installer.state import State
from installer.steps import Context, all_steps, preflight_cluster, run_steps
from installer.steps import kubeadm as kubeadm_step
from tests.integration import readyhost

pytestmark = pytest.mark.integration

VERSION = "v1.23.17"
VIP, PORT = "127.0.0.100", 8443
NODES = [("cp1", "127.0.0.11", "control-plane"), ("cp2", "127.0.0.12", "control-plane"),
         ("cp3", "127.0.0.13", "control-plane"), ("w1", "127.0.0.21", "worker"),
         ("w2", "127.0.0.22", "worker")]
CLUSTER = """\
cluster_name: itest
control_plane: {{vip: {vip}, port: {port}}}
networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}
load_balancer: {{mode: external}}
nodes:
{nodes}
""".format(vip=VIP, port=PORT, nodes="\n".join(
    "  - {{name: {}, address: {}, role: {}}}".format(*n) for n in NODES))
HOUR = 3600


class Forwarder:
    """The external load balancer: TCP on VIP:PORT, round-robin over the apiservers that
    accept a connection (bounded connect timeouts; stops at teardown)."""

    def __init__(self, backends):
        self.backends = backends
        self.turn = 0
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((VIP, PORT))
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        upstream = None
        for _ in range(len(self.backends)):
            self.turn = (self.turn + 1) % len(self.backends)
            try:
                upstream = socket.create_connection((self.backends[self.turn], 6443), 1.0)
                break
            except OSError:
                continue
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self):
        self.stopped.set()
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    require_tool("openssl")
    base = tmp_path_factory.mktemp("ha-standins")
    paths = releases.generate(base / "www", base / "work")
    bindir = base / "bin"
    bindir.mkdir()
    arch_dir = base / "www" / paths["kubernetes"][VERSION] / "bin/linux/amd64"
    for tool in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy2(arch_dir / tool, bindir / tool)
    releases.write_host_tools(bindir)
    readyhost.link_docker(bindir)
    return bindir


@pytest.fixture
def lab(standins, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "{}:{}".format(standins, os.environ["PATH"]))
    monkeypatch.setenv("KUBECRATE_STANDIN_TIMEOUT", "20")
    monkeypatch.setenv("KUBECRATE_STANDIN_MAX_LIFETIME", "900")
    monkeypatch.delenv("KUBECRATE_FAKE_NOW", raising=False)
    # What the host steps leave (they need dnf and Docker: test_host_install, tests/e2e).
    readyhost.write_kernel(tmp_path / "kernel")
    monkeypatch.setenv("KUBECRATE_PROBE_ROOT", str(tmp_path / "kernel"))
    for name, _, role in NODES:
        readyhost.write_root(tmp_path / name, readyhost.CONTROL_PLANE_IMAGES
                             if role == "control-plane" else readyhost.WORKER_IMAGES)
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    forwarder = Forwarder([address for _, address, role in NODES if role == "control-plane"])
    lab = SimpleNamespace(top=tmp_path, cluster=load_cluster(str(tmp_path / "cluster.yaml")),
                          forwarder=forwarder)
    try:
        yield lab
    finally:
        forwarder.close()
        for name, _, _ in NODES:
            kill_standins(tmp_path / name)


def context(lab, name, join=None, join_out=None, digest="c" * 64):
    """The Context `install` builds for node `name`, on an unpacked stand-in bundle."""
    root = lab.top / name
    bundle = root / "var/lib/kubecrate/bundles" / digest
    if not bundle.exists():
        (bundle / "addons/flannel").mkdir(parents=True)
        (bundle / "bundle.json").write_text("{}")
        (bundle / "addons/flannel/kube-flannel.yml").write_text(render_flannel(Addon(
            "flannel", "v0.22.3", ("docker.io/flannel/flannel:v0.22.3",
                                   "docker.io/flannel/flannel-cni-plugin:v1.2.0"))))
    info = SimpleNamespace(
        name="k8s", digest=digest, runtime="docker", kubernetes_version=VERSION, release="7",
        files=("addons/flannel/kube-flannel.yml",),
        hashes={"addons/flannel/kube-flannel.yml": hashlib.sha256(
            (bundle / "addons/flannel/kube-flannel.yml").read_bytes()).hexdigest()},
        addons={"flannel": BundleAddon("v0.22.3", (), "addons/flannel/kube-flannel.yml")},
        images=(BundleImage("registry.k8s.io/kube-apiserver:" + VERSION, "sha256:a", 1,
                            ("control-plane",)),))
    host = Host(str(root), probes=Probes(str(lab.top / "kernel")))
    return Context(host, Runner(str(root)), lab.cluster, lab.cluster.node(name), info,
                   "k8s.tar", None, join=join, join_out=join_out)


def install(lab, name, join=None, join_out=None, digest="c" * 64):
    """The cluster steps of `install` for `name`, checked and recorded as install does."""
    ctx = context(lab, name, joinfile.load(str(join)) if join else None, join_out, digest)
    kubeadm_step.require_join(ctx)
    steps = [s for s in all_steps() if s.name in ("loadbalancer", "kubeadm", "cni")]
    return {r.name: r.changes for r in run_steps(ctx, steps, State.load(ctx.host))}


def nodes(lab):
    out = Runner(str(lab.top / "cp1")).run(
        ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes"]).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}


class ArgvWatcher:
    """What `ps` shows any local user: every kubeadm command line seen in /proc/*/cmdline,
    polled in a thread while the block runs (bounded: at most 300 s)."""

    def __init__(self):
        self.seen = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            for entry in os.listdir("/proc"):
                try:
                    with open("/proc/{}/cmdline".format(entry), "rb") as handle:
                        argv = handle.read().decode("utf-8", "replace").split("\0")
                except OSError:
                    continue
                if any(arg.endswith("kubeadm") for arg in argv):
                    self.seen.add(" ".join(argv))
            time.sleep(0.001)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


def join_info_watched(root, out, caplog):
    """session.join_info under an ArgvWatcher, with the runner's -vv log captured."""
    caplog.clear()
    with caplog.at_level("DEBUG", logger="installer"), ArgvWatcher() as watcher:
        info, changes = session.join_info(root, out)
    secrets = {info.token, info.token.split(".")[1], info.certificate_key}
    for argv in watcher.seen:
        assert not any(secret in argv for secret in secrets), "a secret in ps: " + argv
    logged = caplog.text
    assert not any(secret in logged for secret in secrets), "a secret in the -vv log"
    assert "dl.k8s.io" not in logged, "kubeadm asked the internet for its version"
    return info, changes, watcher.seen


def test_init_join_expiry_join_info_and_rejoin_through_the_endpoint(lab, monkeypatch, caplog):
    out = lab.top / "join.yaml"
    first = install(lab, "cp1", join_out=str(out))
    assert first["loadbalancer"] == [] and first["cni"]
    assert "kubeadm init" in first["kubeadm"][0] and str(out) in first["kubeadm"][0]
    cp1 = lab.top / "cp1"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert (cp1 / "etc/kubernetes/kubecrate/join.yaml").read_text() == out.read_text()
    join = joinfile.load(str(out))
    ca = (cp1 / "etc/kubernetes/pki/ca.crt").read_text()
    assert join.ca_cert_hash == joinfile.spki_sha256(ca)  # openssl argv == DER walk
    assert join.endpoint == "{}:{}".format(VIP, PORT)
    assert (cp1 / "root/.kube/config").read_bytes() == \
        (cp1 / "etc/kubernetes/admin.conf").read_bytes()

    second = install(lab, "cp2", join=out)
    assert second["kubeadm"] == ["kubeadm join 127.0.0.100:8443 as a control-plane",
                                 "write /root/.kube/config"]
    assert install(lab, "w1", join=out)["kubeadm"] == ["kubeadm join 127.0.0.100:8443 as a "
                                                       "worker"]
    assert nodes(lab) == {"cp1": "Ready", "cp2": "Ready", "w1": "Ready"}
    for name in ("cp1", "cp2", "w1"):  # an installed node changes nothing
        assert install(lab, name, join=None if name == "cp1" else out) == {
            "loadbalancer": [], "kubeadm": [], "cni": []}, name

    # Two hours later the uploaded certificates are gone: a control plane cannot join with
    # the old file (exit 4, before anything runs), join-info re-uploads under a new key and
    # keeps the still valid token.
    start = int(time.time())
    monkeypatch.setenv("KUBECRATE_FAKE_NOW", str(start + 2 * HOUR + 300))
    with pytest.raises(PreconditionError) as err:
        install(lab, "cp3", join=out)
    assert err.value.exit_code == ExitCode.PRECONDITION and "join-info" in err.value.hint
    assert not (lab.top / "cp3/etc/kubernetes/kubelet.conf").exists()
    fresh = lab.top / "fresh.yaml"
    info, changes, argvs = join_info_watched(str(cp1), str(fresh), caplog)
    assert any("re-uploaded" in c for c in changes) and not any("token" in c for c in changes)
    assert any(" upload-certs " in argv and " --config " in argv for argv in argvs), argvs
    assert not (cp1 / kubeadm_step.REFRESH_CONFIG.lstrip("/")).exists()
    assert info.token == join.token and info.certificate_key != join.certificate_key
    assert info.bundle == "c" * 64  # read back from the cluster's kubecrate-bundle ConfigMap
    assert install(lab, "cp3", join=fresh)["kubeadm"][0].startswith("kubeadm join")

    # A day later the token is gone too: join-info on a control plane that joined (cp2)
    # creates a new one, and a new worker joins with it.
    monkeypatch.setenv("KUBECRATE_FAKE_NOW", str(start + 25 * HOUR))
    with pytest.raises(PreconditionError, match="token expired"):
        install(lab, "w2", join=fresh)
    info, changes, argvs = join_info_watched(str(lab.top / "cp2"), str(fresh), caplog)
    assert any("created bootstrap token" in c for c in changes) and info.token != join.token
    assert any(" token create --config " in argv for argv in argvs), argvs
    install(lab, "w2", join=fresh)
    assert nodes(lab) == {name: "Ready" for name, _, _ in NODES}
    status = session.status(str(cp1))
    assert status["joined"] and set(status["expiry"]) >= {"bootstrap_token", "certificate_key",
                                                          "ca_certificate"}

    # What a support engineer gets from cp1 holds none of its secrets
    # (README.md, collect-logs).
    archive = lab.top / "cp1-logs.tar.gz"
    index = supportlogs.collect(str(cp1), str(archive))
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(archive) as tar:
        text = "\n".join(tar.extractfile(m).read().decode() for m in tar.getmembers())
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
    assert {"INDEX.txt", "files/var/lib/kubecrate/state.json", "cluster/nodes.txt",
            "files/etc/kubernetes/kubecrate/kubeadm-init.yaml",
            "files/etc/kubernetes/kubelet.conf"} <= set(names), names
    assert "w2" in text and "Ready" in text  # kubectl get nodes, through the admin.conf
    secrets = {"token": info.token.split(".")[1], "old token": join.token.split(".")[1],
               "certificate key": info.certificate_key,
               "old certificate key": join.certificate_key}
    for conf in ("admin.conf", "kubelet.conf"):
        secrets[conf + " key data"] = next(
            line.split(":", 1)[1].strip() for line in
            (cp1 / "etc/kubernetes" / conf).read_text().splitlines()
            if "client-key-data" in line)
    for key in sorted((cp1 / "etc/kubernetes/pki").rglob("*.key")):
        secrets[str(key)] = key.read_text().splitlines()[1]  # a line of the key's body
    leaked = [what for what, value in secrets.items() if value in text]
    assert not leaked and "PRIVATE KEY-----\n" not in text, leaked
    assert any("never collected" in line for line in index)


def test_reset_keeps_the_host_and_install_rebuilds_the_first_node(lab):
    out = lab.top / "join.yaml"
    install(lab, "cp1", join_out=str(out))
    cp1 = lab.top / "cp1"
    changes = reset.reset_cluster(str(cp1))
    assert changes[0] == "kubeadm reset -f"
    assert "remove /etc/kubernetes/kubecrate/join.yaml" in changes
    assert not (cp1 / "etc/kubernetes/admin.conf").exists()
    assert not (cp1 / "root/.kube/config").exists()
    assert (cp1 / "var/lib/kubecrate/bundles").is_dir()
    again = install(lab, "cp1", join_out=str(out))
    assert "kubeadm init" in again["kubeadm"][0]
    assert joinfile.load(str(out)).ca_cert_hash != "" and Path(out).exists()
    assert set(nodes(lab)) == {"cp1"}


def test_renew_certs_eleven_months_on_gives_every_certificate_a_year(lab, monkeypatch):
    """status warns before kubeadm's one-year certificates expire;
    renew-certs renews them all, restarts the control plane and it answers again."""
    install(lab, "cp1")
    cp1 = str(lab.top / "cp1")
    State.load(Host(cp1)).set(node="cp1", cluster=str(lab.top / "cluster.yaml"))
    fresh = {c["name"]: c for c in session.status(cp1)["certificates"]}
    assert set(fresh) == {"admin.conf", "apiserver", "apiserver-etcd-client",
                          "apiserver-kubelet-client", "controller-manager.conf",
                          "etcd-healthcheck-client", "etcd-peer", "etcd-server",
                          "front-proxy-client", "scheduler.conf", "ca", "etcd-ca",
                          "front-proxy-ca"}
    assert not session.status(cp1)["warnings"]

    later = int(time.time()) + 335 * 24 * HOUR
    monkeypatch.setenv("KUBECRATE_FAKE_NOW", str(later))
    status = session.status(cp1)
    warned = {line.split()[1] for line in status["warnings"]}
    assert warned == set(fresh) - {"ca", "etcd-ca", "front-proxy-ca"}, status["warnings"]
    assert "run `renew-certs` on each control-plane node" in status["warnings"][0]
    pid = (lab.top / "cp1/run/kubecrate-standin/kube-apiserver.pid").read_text()

    changes = session.renew_certs(cp1)
    assert changes[0] == "kubeadm certs renew all: 10 certificate(s) renewed", changes
    assert "restarted kube-apiserver, kube-controller-manager, kube-scheduler, etcd" in changes
    assert "refreshed /root/.kube/config" in changes
    assert (lab.top / "cp1/run/kubecrate-standin/kube-apiserver.pid").read_text() != pid
    renewed = {c["name"]: c for c in session.status(cp1)["certificates"]}
    for name, item in renewed.items():
        assert item["days_left"] >= (3000 if item["authority"] else 364), (name, item)
    assert renewed["ca"]["expires"] == fresh["ca"]["expires"]  # CAs are not renewed
    assert set(nodes(lab)) == {"cp1"}  # through the VIP, with the renewed admin.conf


def test_a_clone_of_a_node_in_the_cluster_is_refused_before_it_joins(lab):
    # w1 is a VM cloned from cp1 without a new machine-id: kubeadm would register it. The
    # joiner reads cp1's Node with its bootstrap token (kubeadm:get-nodes) and refuses.
    out = lab.top / "join.yaml"
    for name in ("cp1", "w1"):
        (lab.top / name / "etc").mkdir(parents=True, exist_ok=True)
        (lab.top / name / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    install(lab, "cp1", join_out=str(out))
    found = preflight_cluster.check_clone(context(lab, "w1", joinfile.load(str(out))))
    assert found[0].level == "fail" and "looks like a clone" in found[0].message
    with pytest.raises(PreconditionError) as err:
        install(lab, "w1", join=out)
    assert err.value.exit_code == ExitCode.PRECONDITION
    assert "w1 looks like a clone: node cp1 already in the cluster has the same " \
           "/etc/machine-id 0123456789abcdef0123456789abcdef" in err.value.message
    assert "systemd-machine-id-setup" in err.value.hint and "MAC" in err.value.hint
    assert not (lab.top / "w1/etc/kubernetes/kubelet.conf").exists()
    assert set(nodes(lab)) == {"cp1"}

    (lab.top / "w1/etc/machine-id").write_text("fedcba9876543210fedcba9876543210\n")
    # Months later, from another bundle on the USB stick: refused, both bundles named, before
    # kubeadm runs (the cluster records its bundle at init).
    assert joinfile.load(str(out)).bundle == "c" * 64
    with pytest.raises(PreconditionError) as err:
        install(lab, "w1", join=out, digest="d" * 64)
    assert "is for a cluster installed from bundle {}, but this host is installing bundle " \
           "{}".format("c" * 64, "d" * 64) in err.value.message
    assert "cache list" in err.value.hint
    assert not (lab.top / "w1/etc/kubernetes/kubelet.conf").exists()
    assert install(lab, "w1", join=out)["kubeadm"] == ["kubeadm join 127.0.0.100:8443 as a "
                                                       "worker"]
    assert set(nodes(lab)) == {"cp1", "w1"}


STATIC_PODS = CLUSTER.replace("load_balancer: {mode: external}",
                              "load_balancer: {mode: static-pods, interface: lo, router_id: 71, "
                              "auth_pass: kcIt01}")


def test_static_pods_init_stops_when_the_vip_cannot_appear_and_says_why(lab, monkeypatch):
    """In static-pods mode keepalived runs only inside `kubeadm init`; without
    its image the VIP never comes, and the installer stops init after its bound, naming the
    image, instead of letting kubeadm wait out wait-control-plane."""
    from installer.steps import vipwatch

    (lab.top / "static.yaml").write_text(STATIC_PODS)
    lab.cluster = load_cluster(str(lab.top / "static.yaml"))
    # In static-pods mode nothing but keepalived and haproxy serves VIP:PORT: the external
    # load balancer of the other tests must not answer for them, or init passes through it
    # as soon as the apiserver is up (a race with the bound, lost on a warm, idle machine).
    lab.forwarder.close()
    with pytest.raises(ConnectionRefusedError):  # deterministic, whatever the machine's pace
        socket.create_connection((VIP, PORT), 1.0).close()
    monkeypatch.setattr(vipwatch, "INIT_VIP_BOUND", 3.0)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        install(lab, "cp1")
    took = time.monotonic() - started
    assert "kubeadm init stopped: the VIP 127.0.0.100 did not appear on lo within 3s" in \
        str(failed.value)
    assert "image docker.io/osixia/keepalived:2.0.20 and docker.io/library/haproxy:2.8 is not " \
           "in the container runtime" in str(failed.value)
    assert "@loadbalancer" in failed.value.hint
    assert took < 15, took  # kubeadm itself would have waited KUBECRATE_STANDIN_TIMEOUT (20 s)
    assert (lab.top / "cp1/etc/kubernetes/manifests/keepalived.yaml").exists()
    # with the images loaded, what is left to blame is the pod or VRRP
    seed_images(lab.top / "cp1", ["docker.io/osixia/keepalived:2.0.20",
                                  "docker.io/library/haproxy:2.8"])
    other = vipwatch.diagnose(context(lab, "cp1"), 3.0)
    assert "keepalived's static pod is not running, or VRRP (IP protocol 112)" in str(other)


def test_selinux_enforcing_runs_kubeadms_pods_and_flannel_as_spc_t(lab):
    """`selinux: enforcing` (docs/selinux.md): kubeadm gets its patches folder, and the
    kubeadm stand-in applies the patches as kubeadm does, so every control-plane static pod
    (init and control-plane join) runs as spc_t; the applied flannel DaemonSet too; a worker
    gets no patches. The nodes still come up."""
    import yaml

    (lab.top / "cluster.yaml").write_text(CLUSTER + "selinux: enforcing\n")
    lab.cluster = load_cluster(str(lab.top / "cluster.yaml"))
    out = lab.top / "join.yaml"
    install(lab, "cp1", join_out=str(out))
    install(lab, "cp2", join=out)
    install(lab, "w1", join=out)
    assert nodes(lab) == {"cp1": "Ready", "cp2": "Ready", "w1": "Ready"}
    for name in ("cp1", "cp2"):
        for component in ("etcd", "kube-apiserver", "kube-controller-manager",
                          "kube-scheduler"):
            pod = yaml.safe_load((lab.top / name / "etc/kubernetes/manifests" /
                                  (component + ".yaml")).read_text())
            assert pod["spec"]["securityContext"] == {"seLinuxOptions": {"type": "spc_t"}}, \
                (name, component)
            assert pod["spec"]["containers"][0]["name"] == component  # the rest kept
    init = (lab.top / "cp1/etc/kubernetes/kubecrate/kubeadm-init.yaml").read_text()
    assert 'patches:\n  directory: "/etc/kubernetes/kubecrate/patches"' in init
    assert "patches" not in (lab.top / "w1/etc/kubernetes/kubecrate/kubeadm-join.yaml"
                             ).read_text()
    flannel = [doc for doc in yaml.safe_load_all(
        (lab.top / "cp1/etc/kubernetes/kubecrate/kube-flannel.yml").read_text())
        if doc and doc["kind"] == "DaemonSet"]
    assert flannel[0]["spec"]["template"]["spec"]["securityContext"]["seLinuxOptions"] == \
        {"type": "spc_t"}
