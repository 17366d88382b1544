"""The whole HA install on four network-namespace hosts (three control planes and a worker),
each with its own --root, driven through the real .pyz built by `kubecrate build` against the
mirror world: node 1 brings up keepalived + haproxy (the real daemons, on the configs the
installer rendered), holds the VIP and runs `kubeadm init`; the others join with join.yaml
through the VIP; `kubectl get nodes` through the VIP then shows four nodes, a second install on
every host changes nothing; killing the VIP holder's keepalived, haproxy and apiserver, and
taking its link down, each move the VIP with the endpoint back within 15 s, and bringing the
node back keeps the endpoint answering; with the control planes' etcd the real etcd 3.5.1,
`remove-node cp3` (its link down), then its reset and rejoin, leave three answering etcd
members and the VIP never out longer than a failover, and the apiserver stand-ins keep the Nodes
in that etcd; a day later join-info gives fresh join
material that a reset worker rejoins with, from the bundle cache. The same four nodes are
installed again in load_balancer.mode static-pods, without the drills, as EL9 hosts (Rocky,
Alma, RHEL 9) from the k8s-1.30-el9-containerd bundle, on Python 3.9. The hosts are
scripts/lab/halab.py (shared with scripts/demo); docs/testing.md says what is real on them.
Six hosts (3 control planes, 3 workers) are installed once more from one control node by
`fleet export` + ansible-playbook over real sshd (scripts/lab/fleetlab.py), sharing this
module's bundle. The static-pods run ends with two-node legs: CentOS 8 with Docker, and
calico on EL9 walked from Kubernetes 1.30 to 1.33.
"""
import json
import re
import time

import pytest
from lab import halab
from lab.etcdlab import etcd_bin
from lab.netns import ip
from lab.tools import require_tool

from installer import joinfile
from installer.format.errors import ExitCode

pytestmark = pytest.mark.e2e

SUBNET = 3
W1_MTU = 1400  # w1's eth0: flannel.1 there gets 1350
WINDOW_BOUND = 15.0  # polling succeeds again within 15 s (measured about 3-4 s)


def test_three_control_planes_and_a_worker_through_the_vip(netns_lab, mirror_world, built,
                                                           core, tmp_path):
    for tool in ("keepalived", "haproxy", "curl", "openssl", "unshare"):
        require_tool(tool)
    lab = netns_lab("ha", halab.NAMES, subnet=SUBNET)
    w1_host = next(h for h in lab.hosts if h.name == "w1")  # a VPN/VLAN-like underlay
    ip("-n", w1_host.ns, "link", "set", w1_host.interface, "mtu", str(W1_MTU))
    # kube-proxy in IPVS mode in this run: every node loads and persists the ip_vs modules.
    nodes = halab.prepare(lab, core, tmp_path / "shiv", SUBNET, kube_proxy_mode="ipvs")
    for node in nodes.values():  # air-gapped: no nameserver, no upstream_dns
        (node.root / "etc/resolv.conf").write_text("search e2e.local\n")
        # the etcd static pods run the real etcd 3.5.1 (docs/testing.md)
        node.env["KUBECRATE_TEST_ETCD_BIN"] = str(etcd_bin())
    join = tmp_path / "join.yaml"
    vip = halab.vip(SUBNET)

    cp1 = nodes["cp1"]
    first = cp1.install(built, "--join-out", join)
    assert first.returncode == 0, first.stdout + first.stderr + cp1.logs()
    assert vip in cp1.host.addresses()  # keepalived on node 1 holds the VIP
    assert "the VIP {} is up on eth0".format(vip) in first.stdout  # before kubeadm init
    assert first.stdout.index("is up on eth0") < first.stdout.index("kubeadm init")
    assert oct(join.stat().st_mode & 0o777) == "0o600"

    for name in ("cp2", "cp3", "w1"):
        node = nodes[name]
        done = node.install(built, "--join", join)
        assert done.returncode == 0, name + "\n" + done.stdout + done.stderr + node.logs()
        assert "kubeadm join {}:{}".format(vip, halab.LB_PORT) in done.stdout
        if name != "w1":  # its own keepalived and haproxy, started only after the join
            conf = node.root / "etc/keepalived/keepalived.conf"
            assert "state BACKUP" in conf.read_text()
    # w1 completes the cluster but has no admin credentials: it says where to check
    assert "smoke check: run `status --check` on a control-plane node" in done.stdout

    # Through the preamble, on CPython 3.6: cp1 without LANG, the others with LANG=C,
    # LANG=C.UTF-8 and a locale the host lacks (halab.SESSIONS).
    assert [n.session.get("LANG") for n in nodes.values()] == [None, "C", "C.UTF-8",
                                                               "kc_XX.UTF-8"]
    for name, node in nodes.items():
        assert "kubecrate-installer.pyz install" in node.python36_runs(), name
    for name, node in nodes.items():  # kube_proxy_mode: ipvs reached every node's kernel
        loaded = (node.test_host.kernel / "proc/modules").read_text().split()
        persisted = (node.root / "etc/modules-load.d/kubecrate.conf").read_text().split()
        for module in ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack_ipv4"):
            assert module in loaded and module in persisted, (name, module)
    assert 'mode: "ipvs"' in (cp1.root / "etc/kubernetes/kubecrate/kubeadm-init.yaml").read_text()

    assert "https://{}:{}".format(vip, halab.LB_PORT) in \
        (cp1.root / "etc/kubernetes/admin.conf").read_text()
    rows = halab.get_nodes(nodes["w1"], cp1)
    assert sorted(r[0] for r in rows) == list(halab.NAMES), rows
    # Ready only where flanneld finds its interface (the per-node CNI model)
    assert {r[1] for r in rows} == {"Ready"}, rows
    smoke_check_after_install(cp1, nodes, built)

    for name, node in nodes.items():  # a second install changes nothing
        again = node.install(built, *(("--join", join) if name != "cp1" else ()))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to change" in again.stdout, name + "\n" + again.stdout

    # Two control planes' install reports (status --report) differ only where the hosts do:
    # their names and addresses (and so their steps' input digests), when their steps ran and
    # their install completed, when their own leaf certificates were issued, and what preflight
    # measured of each: its hardware identity, its disk's fdatasync latency, how many nodes had
    # joined.
    reports, findings = {}, {}
    for name in ("cp2", "cp3"):
        node, path = nodes[name], tmp_path / "{}-report.json".format(name)
        done = node.pyz(built, "status", "--json", "--report", path, "--root", node.root)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(path.read_text().replace(name, "NODE").replace(node.host.address,
                                                                            "ADDRESS"))
        findings[name] = {f["check"]: f for f in report.pop("preflight_findings")}
        reports[name] = _flat(report)
    differing = {k for k in set(reports["cp2"]) | set(reports["cp3"])
                 if reports["cp2"].get(k) != reports["cp3"].get(k)}
    assert not [k for k in differing if not re.match(
        r"^(steps\.[^.]+\.(at|inputs)|install\.completed"
        r"|certificates\.\d+\.(expires|days_left)|expiry\.apiserver_certificate|etcd\..*)$", k)], {
        k: (reports["cp2"].get(k), reports["cp3"].get(k)) for k in sorted(differing)}
    assert set(findings["cp2"]) == set(findings["cp3"])
    # "disk": the free space each measured; the hosts share one file system, in which every
    # real etcd that started in between preallocated its 64 MiB write-ahead log
    assert {check for check in findings["cp2"] if findings["cp2"][check] !=
            findings["cp3"][check]} <= {"identity", "etcd-disk", "clone", "disk"}, findings
    assert reports["cp2"]["signature.key_id"] and reports["cp2"]["rpms.docker-ce"] != \
        "not installed"

    # Failover, with w1 polling https://VIP:8443/healthz every 100 ms: each drill moves the VIP
    # and the endpoint answers again within 15 s; bringing the node back keeps it answering.
    report = {}
    for how in ("kill", "link-down"):
        old, new, window = halab.failover_drill(nodes, "w1", SUBNET, how)
        assert new and new != old, how
        holder, back = halab.bring_back(nodes, "w1", SUBNET, old, how)
        report[how] = (old, new, window, holder, back)
        print("{}: VIP {} -> {}, unreachable {:.1f} s; {} back: VIP on {}, unreachable "
              "{:.1f} s".format(how, old, new, window, old, holder, back))
        assert window < WINDOW_BOUND and back < WINDOW_BOUND, report
    assert len(halab.get_nodes(nodes["w1"], cp1)) == 4  # the cluster answers through the VIP
    remove_and_rejoin_cp3(nodes, built, tmp_path)

    # A day later (the stand-ins' clock) the token and the certificate key have expired: w1 is
    # reset and refused with the old join.yaml; join-info on cp1 gives fresh material; w1
    # reinstalls from the bundle cache, which is not extracted again.
    w1 = nodes["w1"]
    cache = w1.root / "var/lib/kubecrate/bundles"
    (bundle_dir,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    unpacked_at = bundle_dir.stat().st_mtime_ns
    for node in nodes.values():
        node.env["KUBECRATE_FAKE_NOW"] = str(int(time.time()) + 25 * 3600)
    reset = w1.pyz(built, "reset", "--root", w1.root)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    admin = cp1.root / "etc/kubernetes/admin.conf"  # as kubeadm asks before a rejoin
    deleted = cp1.run([cp1.root / "usr/bin/kubectl", "--kubeconfig", admin, "delete", "node",
                       "w1"], timeout=60)
    assert deleted.returncode == 0, deleted.stderr
    stale = w1.install(built, "--join", join)
    assert stale.returncode == ExitCode.PRECONDITION, stale.stdout + stale.stderr
    assert "join-info" in stale.stdout + stale.stderr
    fresh = tmp_path / "fresh.yaml"
    info = cp1.pyz(built, "join-info", "--out", fresh, "--root", cp1.root)
    assert info.returncode == 0, info.stdout + info.stderr
    assert joinfile.load(str(fresh)).token != joinfile.load(str(join)).token
    again = w1.install(built, "--join", fresh)
    assert again.returncode == 0, again.stdout + again.stderr + w1.logs()
    assert bundle_dir.stat().st_mtime_ns == unpacked_at  # reused, not copied again
    rows = halab.get_nodes(w1, cp1)
    assert sorted(r[0] for r in rows) == list(halab.NAMES), rows


def remove_and_rejoin_cp3(nodes, built, tmp_path) -> None:
    """cp3 dies (its link goes down); on cp1 `remove-node cp3` removes its etcd member and its
    Node; the rebuilt cp3 (reset, fresh join-info) joins again: etcd has three healthy
    members, and the VIP, polled from w1 all along, was never out longer than a failover."""
    cp1, cp3 = nodes["cp1"], nodes["cp3"]
    started, done = time.monotonic(), {}

    def action() -> None:
        cp3.host.link(False)
        done["remove"] = cp1.pyz(built, "remove-node", "cp3", "--root", cp1.root)
        cp3.host.link(True)
        done["reset"] = cp3.pyz(built, "reset", "--root", cp3.root)
        fresh = tmp_path / "rejoin.yaml"
        done["info"] = cp1.pyz(built, "join-info", "--out", fresh, "--root", cp1.root)
        done["join"] = cp3.install(built, "--join", fresh)

    window = halab.outage_during(nodes, "w1", SUBNET, action, 600)
    for step in ("remove", "reset", "info", "join"):
        assert done[step].returncode == 0, step + done[step].stdout + done[step].stderr + \
            cp3.logs()
    assert "removed etcd member cp3" in done["remove"].stdout, done["remove"].stdout
    assert "deleted node cp3" in done["remove"].stdout
    status = cp1.pyz(built, "status", "--json", "--root", cp1.root)
    etcd = json.loads(status.stdout)["etcd"]
    assert sorted(m["name"] for m in etcd["members"]) == ["cp1", "cp2", "cp3"], etcd
    assert etcd["not_answering"] == [] and etcd["alarms"] == [], etcd
    print("remove-node cp3, rebuild, rejoin: {:.0f} s, VIP unreachable {:.1f} s".format(
        time.monotonic() - started, window))
    assert window < WINDOW_BOUND, window
    rows = halab.get_nodes(nodes["w1"], cp1)
    assert sorted(r[0] for r in rows) == list(halab.NAMES), rows
    # the apiserver stand-ins keep the cluster's objects in this etcd (kubeadm's --etcd-*
    # flags): the Nodes are its keys, read with the real etcdctl
    pki = cp1.root / "etc/kubernetes/pki"
    keys = cp1.run([etcd_bin() / "etcdctl", "--endpoints=https://127.0.0.1:2379",
                    "--cacert={}/etcd/ca.crt".format(pki),
                    "--cert={}/apiserver-etcd-client.crt".format(pki),
                    "--key={}/apiserver-etcd-client.key".format(pki),
                    "get", "/registry/minions/", "--prefix", "--keys-only"], timeout=60)
    assert sorted(k for k in keys.stdout.split()) == [
        "/registry/minions/" + name for name in sorted(halab.NAMES)], keys.stdout + keys.stderr


def smoke_check_after_install(cp1, nodes, built) -> None:
    """The smoke check on the installed cluster: `status --check` passes (every node
    Ready; from every node CoreDNS answers kubernetes.default although the hosts have no
    nameserver; each node pings the next one's flannel.1, in registration order);
    flannel's VXLAN MTU follows each node's interface MTU; NetworkManager leaves flannel's
    devices alone."""
    check = cp1.pyz(built, "status", "--check", "--root", cp1.root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "smoke check: passed" in check.stdout
    for name in halab.NAMES:
        assert "ok   node {}: Ready".format(name) in check.stdout, check.stdout
        assert "ok   DNS from {}: CoreDNS answers kubernetes.default: 10.96.0.1 (asked " \
               "kube-dns 10.96.0.10)".format(name) in check.stdout
    ring = list(halab.NAMES) + [halab.NAMES[0]]
    for i, (src, dst) in enumerate(zip(ring, ring[1:])):  # each node pings the next one's
        assert "ok   pod network {} -> {}: {}'s flannel.1 10.244.{}.0 answers (VXLAN to " \
               "10.213.{}.{})".format(src, dst, dst, (i + 1) % len(halab.NAMES), SUBNET,
                                     halab.ADDRESSES[dst]) in check.stdout, check.stdout
    assert "ok   CoreDNS on cp1: Ready" in check.stdout
    mtus = halab.flannel_mtus(cp1)
    assert mtus == {"cp1": 1450, "cp2": 1450, "cp3": 1450, "w1": W1_MTU - 50}, mtus
    for name, node in nodes.items():
        conf = node.root / "etc/NetworkManager/conf.d/kubecrate-cni.conf"
        assert "unmanaged-devices=interface-name:cni0;interface-name:flannel.1;" \
               "interface-name:veth*" in conf.read_text(), name


def _flat(value, prefix=""):
    """{"a.b.0.c": leaf} for a JSON document, to compare two reports key by key."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in _flat(item, "{}{}.".format(prefix, key)).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value)
                for k, v in _flat(item, "{}{}.".format(prefix, i)).items()}
    return {prefix[:-1]: value}


def test_outage_is_the_longest_failed_run_after_the_event():
    samples = "1.0 1\n2.0 0\n2.5 0\n3.0 1\n4.0 0\n4.2 1\n"
    assert halab.outage(samples, since=1.5) == pytest.approx(1.0)
    assert halab.outage(samples, since=3.5) == pytest.approx(0.2)
    assert halab.outage("1.0 1\n", since=0.0) == 0.0
    assert halab.outage("1.0 1 1.01\n2.0 0 2.5\n2.5 1 2.51\n", since=1.5) == pytest.approx(0.5)
