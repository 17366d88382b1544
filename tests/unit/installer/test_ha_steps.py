"""The HA bootstrap steps with a fake runner: step order, the VIP-first rule (the first node's
keepalived holds the VIP before kubeadm init; the others get their load balancer only after
kubeadm join), join.yaml preconditions, the flannel manifest, and cluster.yaml's
load-balancer validation with file:line:key messages."""

import datetime
import hashlib
import json
import os
from types import SimpleNamespace

import pytest
import yaml

from installer import joinfile, session
from installer.format.bundleinfo import BundleAddon, BundleImage
from installer.format.cluster import ClusterConfigError, kubeadm_settings, parse_cluster
from installer.format.errors import ExitCode, PreconditionError, VerificationError
from installer.host import Host, Probes
from installer.runner import Result
from installer.steps import Context, all_steps, cni, kubeadm, loadbalancer, run_steps

CLUSTER = """\
control_plane: {vip: 10.0.0.100, port: 8443}
networking: {pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}
load_balancer:
  mode: services
  interface: eth0
  router_id: 51
  auth_pass: k8sVIP42
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: cp2, address: 10.0.0.12, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
"""
FLANNEL = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: kube-flannel-cfg, namespace: kube-flannel}
data:
  net-conf.json: |
    {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds, namespace: kube-flannel}
spec:
  template:
    spec:
      containers:
      - name: kube-flannel
        image: docker.io/flannel/flannel:v0.22.3
        args: ["--ip-masq", "--kube-subnet-mgr"]
"""
HEX = "ab" * 32


class FakeHostRunner:
    """Records argv in order and plays kubeadm, systemctl, keepalived and rpm on a root."""

    def __init__(self, root):
        self.root = root
        self.calls = []
        self.events = []  # what happened, in order: "vip", "init", "join", ...
        self.units = {}
        self.dry_run = False

    def _file(self, path, text="x\n"):
        target = os.path.join(self.root, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as out:
            out.write(text)

    def run(self, argv, check=True, readonly=False, timeout=0, hint=None, stdin=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        out = ""
        if argv[:2] == ["systemctl", "is-active"]:
            return Result(argv, 0, self.units.get(argv[2], "inactive"), "")
        if argv[:2] == ["systemctl", "is-enabled"]:
            return Result(argv, 0, "enabled" if argv[2] + "+" in self.units else "disabled", "")
        if argv[:2] in (["systemctl", "start"], ["systemctl", "restart"]):
            self.units[argv[2]] = "active"
            if argv[2] == "keepalived":
                self.events.append("keepalived started")
        if argv[:2] == ["systemctl", "enable"]:
            self.units[argv[2] + "+"] = "enabled"
        if argv[:3] == ["ip", "-o", "-4"]:
            up = self.units.get("keepalived") == "active"
            if up and "vip" not in self.events:
                self.events.append("vip")
            out = "2: eth0 inet 10.0.0.11/24\n" + ("2: eth0 inet 10.0.0.100/32\n" if up else "")
        if argv[:2] == ["kubeadm", "init"]:
            self.events.append("init")
            for path in ("/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf",
                         "/etc/kubernetes/pki/ca.crt"):
                self._file(path)
        if argv[:2] == ["kubeadm", "join"]:
            self.events.append("join with keepalived.conf" if os.path.exists(
                os.path.join(self.root, "etc/keepalived/keepalived.conf")) else "join")
            self._file("/etc/kubernetes/kubelet.conf")
            with open(os.path.join(self.root, kubeadm.JOIN_CONFIG.lstrip("/"))) as handle:
                if "controlPlane:" in handle.read():
                    self._file("/etc/kubernetes/admin.conf")
        if argv[:3] == ["openssl", "dgst", "-sha256"]:
            out = HEX + " *" + argv[-1] + "\n"
        if argv[:2] == ["kubectl", "--kubeconfig"]:
            self.events.append("record bundle" if argv[-2:] == ["-f", "-"] else "cni")
        return Result(argv, 0, out, "")

    def query(self, argv, timeout=0):
        return self.run(argv, check=False, readonly=True)


def make_ctx(tmp_path, name, join=None, text=CLUSTER, addons=None):
    """`addons`: bundle path -> text of the add-on files; the first is the flannel manifest
    that bundle.json's addons.flannel.manifest names."""
    source = tmp_path / "cluster.yaml"
    source.write_text(text)
    cluster = parse_cluster(text, str(source))
    root = tmp_path / name
    digest = "d" * 64
    bundle = root / "var/lib/kubecrate/bundles" / digest
    addons = addons or {"addons/flannel/kube-flannel.yml": FLANNEL}
    (bundle / "bundle.json").parent.mkdir(parents=True, exist_ok=True)
    (bundle / "bundle.json").write_text("{}")
    for path, content in addons.items():
        (bundle / path).parent.mkdir(parents=True, exist_ok=True)
        (bundle / path).write_text(content)
    info = SimpleNamespace(
        name="b", digest=digest, runtime="docker", kubernetes_version="v1.23.17", release="7",
        files=tuple(sorted(addons)),
        hashes={path: hashlib.sha256(content.encode()).hexdigest()
                for path, content in addons.items()},
        addons={"flannel": BundleAddon("v0.22.3", (), next(iter(addons)))},
        images=(BundleImage("registry.k8s.io/kube-apiserver:v1.23.17", "sha256:aa", 1,
                            ("control-plane",)),))
    host = Host(str(root), probes=Probes(str(tmp_path / "kernel")))
    runner = FakeHostRunner(str(root))
    return Context(host, runner, cluster, cluster.node(name), info, "b.tar", None,
                   join=join)


def cluster_steps():
    return [s for s in all_steps() if s.name in ("loadbalancer", "kubeadm", "cni")]


def test_steps_run_in_order_and_host_only_stops_after_binaries():
    names = [s.name for s in all_steps()]
    assert names == ["unpack", "host-prep", "local-repo", "time", "runtime", "images", "binaries",
                     "loadbalancer", "kubeadm", "registry", "cni", "bundle-server"]
    assert [s.name for s in all_steps(host_only=True)][-1] == "binaries"
    assert session.steps_of("worker") == ("preflight",) + tuple(names)
    etcd = [s.name for s in all_steps(etcd_host=True)]
    assert etcd == names[:7] + ["etcd-host"] and session.steps_of("etcd") == \
        ("preflight",) + tuple(etcd)
    assert session.HOST_STEPS == ("preflight",) + tuple(names) + ("etcd-host",)  # reset's


def test_first_node_holds_the_vip_before_kubeadm_init_then_applies_flannel(tmp_path):
    ctx = make_ctx(tmp_path, "cp1")
    reports = run_steps(ctx, cluster_steps())
    assert ctx.runner.events == ["keepalived started", "vip", "init", "record bundle", "cni",
                                 "cni"]
    calls = [" ".join(c) for c in ctx.runner.calls]
    assert calls[-1] == "kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f " \
        "/etc/kubernetes/kubecrate/coredns.yaml"  # no nameserver, no upstream_dns: zone only
    assert "forward" not in ctx.host.read_text("/etc/kubernetes/kubecrate/coredns.yaml")
    assert calls.index("systemctl start haproxy") < calls.index("systemctl start keepalived")
    assert any(c.startswith("haproxy -c -f ") for c in calls)
    init = calls.index("kubeadm init --config /etc/kubernetes/kubecrate/kubeadm-init.yaml "
                       "--upload-certs")
    assert init > calls.index("systemctl start keepalived")
    config = list(yaml.safe_load_all(ctx.host.read_text(kubeadm.INIT_CONFIG)))
    assert config[0]["nodeRegistration"]["criSocket"] == "/var/run/dockershim.sock"
    assert config[0]["localAPIEndpoint"]["advertiseAddress"] == "10.0.0.11"
    assert config[1]["controlPlaneEndpoint"] == "10.0.0.100:8443"
    assert config[1]["imageRepository"] == "registry.k8s.io"
    assert ctx.host.mode(kubeadm.INIT_CONFIG) == 0o600
    join = joinfile.parse(ctx.host.read_text(kubeadm.JOIN_FILE))
    assert ctx.host.mode(kubeadm.JOIN_FILE) == 0o600
    assert join.ca_cert_hash == "sha256:" + HEX and join.endpoint == "10.0.0.100:8443"
    assert join.token == config[0]["bootstrapTokens"][0]["token"]
    assert join.certificate_key == config[0]["certificateKey"]
    assert ctx.host.read_bytes(kubeadm.ROOT_KUBECONFIG) == b"x\n"
    assert [r.name for r in reports if r.changes] == ["loadbalancer", "kubeadm", "cni"]

    before = len(ctx.runner.calls)
    again = run_steps(ctx, cluster_steps())
    assert [r.changes for r in again] == [[], [], []]
    assert not [c for c in ctx.runner.calls[before:]
                if c[0] in ("kubeadm", "kubectl", "yum") or c[1] in ("start", "restart")]


def test_first_node_fails_when_keepalived_never_takes_the_vip(tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, "cp1")
    monkeypatch.setattr(loadbalancer, "VIP_WAIT", 0.3)
    monkeypatch.setattr(loadbalancer, "holds_vip", lambda c: False)
    with pytest.raises(Exception) as err:
        run_steps(ctx, cluster_steps())
    assert "did not bring up the VIP 10.0.0.100 on eth0" in str(err.value)
    assert err.value.exit_code == ExitCode.STEP_FAILED
    assert "init" not in ctx.runner.events


def test_cni_applies_the_manifest_bundle_json_names_not_one_it_finds(tmp_path):
    """bundle.json's addons.flannel.manifest is the manifest; another kube-flannel.yml in the
    bundle is not looked for."""
    named = "addons/flannel/v0.22.3/flannel.yaml"
    decoy = FLANNEL.replace("flannel", "decoy")
    ctx = make_ctx(tmp_path, "cp1", addons={named: FLANNEL,
                                           "addons/calico/kube-flannel.yml": decoy})
    reports = run_steps(ctx, cluster_steps())
    assert "cni" in [r.name for r in reports if r.changes]
    applied = ctx.host.read_text(cni.MANIFEST)
    assert "kube-flannel" in applied and "decoy" not in applied
    ctx.info.addons.clear()
    with pytest.raises(VerificationError, match="carries no flannel manifest"):
        cni.CniStep().actions(ctx)


def test_other_control_planes_get_their_load_balancer_only_after_join(tmp_path):
    info = joinfile.new_join_info("10.0.0.100:8443", "sha256:" + HEX, kubeadm.now(),
                                  "abcdef.0123456789abcdef", HEX)
    ctx = make_ctx(tmp_path, "cp2", join=info)
    plan = run_steps(ctx, cluster_steps(), apply=False)
    assert plan[0].changes == [] and "then its load balancer" in plan[1].changes[0]
    run_steps(ctx, cluster_steps())
    assert ctx.runner.events == ["join", "keepalived started"]
    conf = ctx.host.read_text("/etc/keepalived/keepalived.conf")
    assert "state BACKUP" in conf and "unicast_src_ip 10.0.0.12" in conf
    joined = list(yaml.safe_load_all(ctx.host.read_text(kubeadm.JOIN_CONFIG)))[0]
    assert joined["controlPlane"]["certificateKey"] == HEX
    assert joined["controlPlane"]["localAPIEndpoint"]["advertiseAddress"] == "10.0.0.12"
    assert not [c for c in ctx.runner.calls if c[:2] == ["ip", "-o"]]  # no VIP wait
    assert ctx.host.exists(kubeadm.JOIN_FILE)  # join-info works here too


def test_worker_joins_without_certificate_key_and_no_load_balancer(tmp_path):
    info = joinfile.new_join_info("10.0.0.100:8443", "sha256:" + HEX, kubeadm.now(),
                                  "abcdef.0123456789abcdef", HEX)
    ctx = make_ctx(tmp_path, "w1", join=info)
    run_steps(ctx, cluster_steps())
    assert ctx.runner.events == ["join"]
    assert "controlPlane" not in ctx.host.read_text(kubeadm.JOIN_CONFIG)
    assert not ctx.host.exists("/etc/keepalived/keepalived.conf")
    assert not ctx.host.exists(kubeadm.ROOT_KUBECONFIG)


def test_expired_or_missing_join_material_is_a_precondition(tmp_path, monkeypatch):
    moment = datetime.datetime(2030, 1, 1, 12, 0, 0)
    info = joinfile.new_join_info("10.0.0.100:8443", "sha256:" + HEX, moment,
                                  "abcdef.0123456789abcdef", HEX)
    monkeypatch.setenv(kubeadm.CLOCK_ENV, str(int(
        (moment - datetime.datetime(1970, 1, 1)).total_seconds()) + 2 * 3600 + 60))
    ctx = make_ctx(tmp_path, "cp2", join=info)
    with pytest.raises(PreconditionError) as err:
        kubeadm.require_join(ctx)
    assert "certificate key expired" in err.value.message and "join-info" in err.value.hint
    assert err.value.exit_code == ExitCode.PRECONDITION
    worker = make_ctx(tmp_path, "w1", join=info)
    assert [f[0] for f in kubeadm.join_findings(worker)] == ["pass"]  # the token still lives
    # the message names the file the operator passed
    given = str(tmp_path / "from-cp1" / "join.yaml")
    with pytest.raises(PreconditionError) as err:
        session._join_checks(ctx, True, given)
    assert err.value.message.startswith(given + ": the certificate key expired at ")
    alone = make_ctx(tmp_path, "w1")
    with pytest.raises(PreconditionError, match="install needs --join join.yaml"):
        kubeadm.require_join(alone)
    assert kubeadm.join_findings(make_ctx(tmp_path, "cp1")) == []


def test_flannel_gets_the_pod_cidr_and_a_per_node_iface_not_the_first_nodes_address():
    # one DaemonSet runs on every node, so the interface selection must be
    # per node (the downward API's status.hostIP), never this node's own address.
    text = cni.customize(FLANNEL.replace('"--kube-subnet-mgr"]',
                                         '"--kube-subnet-mgr", "--iface", "eth9"]'),
                         "10.32.0.0/16")
    docs = list(yaml.safe_load_all(text))
    assert json.loads(docs[0]["data"]["net-conf.json"])["Network"] == "10.32.0.0/16"
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--ip-masq", "--kube-subnet-mgr"]
    assert not any("10.0.0.11" in str(v) for v in container.values())
    assert [e for e in container["env"] if e["name"].startswith("FLANNELD_")] == [
        {"name": "FLANNELD_IFACE",
         "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}}]
    assert cni.customize(text, "10.32.0.0/16") == text


@pytest.mark.parametrize("change, message", [
    (("vip: 10.0.0.100", "vip: 10.9.0.100"),
     "cluster.yaml:1: control_plane.vip: 10.9.0.100 is outside the control-plane nodes' "
     "subnet 10.0.0.0/24"),
    (("port: 8443", "port: 6443"),
     "cluster.yaml:1: control_plane.port: 6443 is also the apiserver port"),
    (("router_id: 51", "router_id: 300"),
     "cluster.yaml:6: load_balancer.router_id: 300 must be a whole number from 1 to 255"),
    (("10.0.0.12", "10.0.0.11"), "cluster.yaml:10: nodes[1].address: address 10.0.0.11 is"),
    (("mode: services", "mode: service"),
     "cluster.yaml:4: load_balancer.mode: 'service' is not one of services, static-pods, "
     "external (did you mean 'services'?)"),
    (("auth_pass: k8sVIP42", "auth_pass: far-too-long"), "cluster.yaml:7: load_balancer.auth_pass"),
])
def test_load_balancer_errors_name_file_line_and_key(change, message):
    with pytest.raises(ClusterConfigError) as err:
        parse_cluster(CLUSTER.replace(*change))
    assert message in err.value.message
    assert err.value.exit_code == ExitCode.USAGE


def test_defaults_and_the_kubeadm_section_checked_against_the_bundle(tmp_path):
    plain = CLUSTER.replace("{vip: 10.0.0.100, port: 8443}", "{vip: 10.0.0.100}")
    assert parse_cluster(plain).endpoint.port == 8443
    external = plain.replace("mode: services", "mode: external")
    assert parse_cluster(external).endpoint.port == 6443
    source = tmp_path / "cluster.yaml"
    source.write_text(CLUSTER + "kubeadm:\n  kube_proxy_mode: ipvs\n  cri_socket: "
                      "unix:///var/run/dockershim.sock\n")
    cluster = parse_cluster(source.read_text(), str(source))
    with pytest.raises(ClusterConfigError) as err:
        kubeadm_settings(cluster, "v1.23.17", "registry.k8s.io", "docker")
    assert err.value.message.startswith("{}:14: kubeadm.cri_socket:".format(source))
    ok = parse_cluster(CLUSTER + "kubeadm: {kube_proxy_mode: ipvs}\n")
    assert kubeadm_settings(ok, "v1.23.17", "registry.k8s.io", "docker").kube_proxy_mode == "ipvs"


def test_the_first_control_plane_serves_the_bundle_from_a_copy_of_the_pyz(tmp_path,
                                                                           monkeypatch):
    """bundle-server: on cp1 only, the running .pyz copied, the unit written and started; a
    second check finds nothing to do."""
    from installer.steps.bundleserver import UNIT_FILE, BundleServerStep

    pyz = tmp_path / "kubecrate-installer.pyz"
    pyz.write_bytes(b"#!/bin/sh\nexit 0\n")
    monkeypatch.setattr("sys.argv", [str(pyz), "install"])
    ctx, step = make_ctx(tmp_path, "cp1"), BundleServerStep()
    assert step.check(ctx) == [
        "copy {} to /usr/local/lib/kubecrate/kubecrate-installer.pyz".format(pyz),
        "write " + UNIT_FILE, "start kubecrate-bundle-server on 10.0.0.11:8447"]
    step.apply(ctx)
    root = tmp_path / "cp1"
    assert (root / "usr/local/lib/kubecrate/kubecrate-installer.pyz").read_bytes() == \
        pyz.read_bytes()
    assert "ExecStart=/usr/local/lib/kubecrate/kubecrate-installer.pyz serve-bundle -v --root " \
           "{} --address 10.0.0.11 --port 8447\n".format(root) in \
           (root / UNIT_FILE.lstrip("/")).read_text()
    assert ["systemctl", "restart", "kubecrate-bundle-server"] in ctx.runner.calls
    assert step.check(ctx) == []
    assert step.check(make_ctx(tmp_path, "cp2")) == []
