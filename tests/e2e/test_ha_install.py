"""The whole HA install on four network-namespace hosts (three control planes and a worker),
each with its own --root, driven through the real .pyz built by `kubecrate build` against the
mirror world: node 1 brings up keepalived + haproxy (the real daemons, on the configs the
installer rendered), holds the VIP and runs `kubeadm init`; the others join with join.yaml
through the VIP; `kubectl get nodes` through the VIP then shows four nodes, a second install on
every host changes nothing; killing the VIP holder's keepalived, haproxy and apiserver, and
taking its link down, each move the VIP with the endpoint back within 15 s, and bringing the
node back keeps the endpoint answering; with the control planes' etcd the real etcd 3.5.1,
`remove-node cp3` (its link down), then its reset and rejoin, leave three answering etcd
members and the VIP never out longer than a failover; a day later join-info gives fresh join
material that a reset worker rejoins with, from the bundle cache. The same four nodes are
installed again in load_balancer.mode static-pods, without the drills, as EL9 hosts (Rocky,
Alma, RHEL 9) from the k8s-1.30-el9-containerd bundle, on Python 3.9. The hosts are
scripts/lab/halab.py (shared with scripts/demo); docs/testing.md says what is real on them.
Six hosts (3 control planes, 3 workers) are installed once more from one control node by
`fleet export` + ansible-playbook over real sshd (scripts/lab/fleetlab.py), sharing this
module's bundle. The static-pods run ends with two-node legs: CentOS 8 with Docker, and
Kubernetes 1.33 with calico on EL9.
"""

import json
import os
import re
import shutil
import sys
import time

import pytest
from lab import halab, osreleases
from lab.bundles import make_key
from lab.netns import ip
from lab.tools import require_tool

from installer import joinfile
from installer.format.errors import ExitCode
from tests.conftest import require_root
from tests.integration.builder.test_build import RECIPE, kubecrate, seeded_cache
from tests.integration.etcdlab import etcd_bin

pytestmark = pytest.mark.e2e

SUBNET = 3
STATIC_SUBNET = 5
EL8_SUBNET = 8
CALICO_SUBNET = 13
W1_MTU = 1400  # w1's eth0: flannel.1 there gets 1350
WINDOW_BOUND = 15.0  # polling succeeds again within 15 s (measured about 3-4 s)


def build(profile: "halab.Profile", preset: str, folder, recipe: str = "",
          out: str = "out") -> object:
    """`kubecrate build manifests/<recipe or profile.bundle>.yaml` against the mirror world's
    `preset`: the out folder with the bundle and its .pyz. A second build into the same folder
    signs with the first one's key (an upgrade bundle from the same builder)."""
    require_root()
    recipe = recipe or profile.bundle
    secret = folder / "keys" / "kubecrate.key"
    if not secret.exists():
        _key, secret, _public = make_key(folder / "keys")
    done = kubecrate("build", RECIPE.parent / (recipe + ".yaml"), "--mirrors", preset,
                     "--key", secret, "--out", folder / out,
                     "--lock", folder / (recipe + ".lock"),
                     "--cache", seeded_cache(folder / "cache"), timeout=1200)
    assert done.returncode == 0, done.stderr
    return folder / out


@pytest.fixture(scope="module")
def built(mirror_world, tmp_path_factory):
    """The primary bundle and the .pyz, built once from the mirror world."""
    return build(halab.EL7, mirror_world.preset, tmp_path_factory.mktemp("ha-build"))


@pytest.fixture(scope="module")
def built_el9(mirror_world, tmp_path_factory):
    """The k8s-1.30-el9-containerd bundle (Rocky 9.4, containerd 1.6) and its .pyz."""
    return build(halab.EL9, mirror_world.preset_el9, tmp_path_factory.mktemp("ha-build-el9"))


@pytest.fixture(scope="module")
def upgrades_el9(mirror_world, built_el9):
    """k8s-1.31-el9-containerd (the next minor) and k8s-1.33-el9-containerd (two minors on),
    signed by the key that signed built_el9 (the one its .pyz embeds)."""
    folder = built_el9.parent
    return (build(halab.EL9, mirror_world.preset_el9_131, folder, "k8s-1.31-el9-containerd",
                  "out-1.31") / "k8s-1.31-el9-containerd.tar",
            build(halab.EL9, mirror_world.preset_el9_133, folder, "k8s-1.33-el9-containerd",
                  "out-1.33") / "k8s-1.33-el9-containerd.tar")


@pytest.fixture(scope="module")
def built_el8(mirror_world, tmp_path_factory):
    """The k8s-1.23.17-el8 bundle (CentOS 8.5, Docker 20.10) and its .pyz."""
    return build(halab.EL8, mirror_world.preset_el8, tmp_path_factory.mktemp("ha-build-el8"))


@pytest.fixture(scope="module")
def built_el9_133(mirror_world, tmp_path_factory):
    """The k8s-1.33-el9-containerd bundle (Rocky 9.4, containerd 1.7, calico v3.31.3)."""
    return build(EL9_133, mirror_world.preset_el9_133, tmp_path_factory.mktemp("ha-build-133"))


# The current release on EL9 with calico: one control plane and one worker (Rocky 9.4, Alma 9)
EL9_133 = halab.Profile("k8s-1.33-el9-containerd", halab.EL9.os_releases[:2],
                        halab.EL9.kernel, "3.9")


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    require_root()
    return halab.core_root(tmp_path_factory.mktemp("ha-core"))


@pytest.fixture(scope="module")
def core_el8(tmp_path_factory):
    require_root()
    return halab.core_root(tmp_path_factory.mktemp("ha-core-el8"), halab.EL8)


@pytest.fixture(scope="module")
def core_el9(tmp_path_factory):
    require_root()
    return halab.core_root(tmp_path_factory.mktemp("ha-core-el9"), halab.EL9)


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

    # Two control planes' install reports (status --report) differ only
    # where the hosts do: their names and addresses (and so their steps' input digests), when
    # their steps ran and their own leaf certificates were issued, and what preflight measured
    # of each: its hardware identity, its disk's fdatasync latency, how many nodes had joined.
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
        r"^(steps\.[^.]+\.(at|inputs)|certificates\.\d+\.(expires|days_left)"
        r"|expiry\.apiserver_certificate|etcd\..*)$", k)], {
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


def test_static_pods_three_control_planes_and_a_worker(netns_lab, mirror_world,
                                                      built_el9, core_el9, built_el8,
                                                      core_el8, upgrades_el9, built_el9_133,
                                                      tmp_path):
    """load_balancer.mode static-pods on the same four nodes, without the failover drills of
    the services run, as EL9 hosts with containerd (docs/el8-el9.md): the k8s-1.30-el9-containerd
    bundle (Kubernetes v1.30.14, containerd 1.6) on Rocky 9.4 (cp1, w1), Alma 9 (cp2) and RHEL 9
    (cp3), which its recipe's target.hosts admits, kernel 5.14, the .pyz on CPython 3.9 (EL9's
    python3); images go into each host's containerd with `ctr -n k8s.io images import`, the
    kubelet finds the runtime on --container-runtime-endpoint and refuses a containerd without
    CRI or with another cgroup driver. The kubelet starts keepalived and haproxy only inside
    `kubeadm init` (on the joiners after their join), from the images the bundle loaded on that
    node. cp3 joins last, so its install completes the cluster and runs the smoke check; every
    node ends Ready. Then the cluster is upgraded one minor, to k8s-1.31-el9-containerd
    (upgrade_one_minor); then two smaller legs on fresh labs: CentOS 8
    (static_pods_on_centos8) and the 1.33 profile with calico (calico_on_current_release)."""
    for tool in ("keepalived", "haproxy", "curl", "openssl", "unshare"):
        require_tool(tool)
    built, core = built_el9, core_el9
    lab = netns_lab("hasp", halab.NAMES, subnet=STATIC_SUBNET)
    nodes = halab.prepare(lab, core, tmp_path / "shiv", STATIC_SUBNET, mode="static-pods",
                          profile=halab.EL9)
    join = tmp_path / "join.yaml"
    vip = halab.vip(STATIC_SUBNET)
    cp1 = nodes["cp1"]

    first = cp1.install(built, "--join-out", join)
    assert first.returncode == 0, first.stdout + first.stderr + cp1.logs()
    assert vip in cp1.host.addresses()  # keepalived, run by the kubelet as a static pod
    lb_pods = ("keepalived", "haproxy", "kube-apiserver")
    running = halab.pods(cp1, lb_pods)
    for pod in lb_pods:
        assert running[pod]["phase"] == "Running", running
    for name in ("cp2", "w1", "cp3"):
        node = nodes[name]
        done = node.install(built, "--join", join)
        assert done.returncode == 0, name + "\n" + done.stdout + done.stderr + node.logs()
        if name != "w1":  # its load balancer comes only after its join
            running = halab.pods(node, lb_pods)
            for pod in lb_pods:
                assert running.get(pod, {}).get("phase") == "Running", (name, running)
    # cp3 completed the cluster: its install ran the smoke check, with queries and pings
    assert "smoke check: passed" in done.stdout, done.stdout
    for name in halab.NAMES:
        assert "ok   DNS from {}: CoreDNS answers kubernetes.default".format(name) \
            in done.stdout, done.stdout
    assert "ok   pod network w1 -> cp1: cp1's flannel.1 10.244.0.0 answers" in done.stdout
    rows = halab.get_nodes(nodes["w1"], cp1)
    assert sorted(r[0] for r in rows) == list(halab.NAMES), rows
    assert {r[1] for r in rows} == {"Ready"}, rows
    assert {r[4] for r in rows} == {"v1.30.14"}, rows
    for name, node in nodes.items():  # containerd, as the runtime step configured it
        assert "python3.9 " in node.python36_runs() and \
            "kubecrate-installer.pyz install" in node.python36_runs(), name
        assert "SystemdCgroup = true" in \
            (node.root / "etc/containerd/config.toml").read_text(), name
        flags = (node.root / "var/lib/kubelet/kubeadm-flags.env").read_text()
        assert "--container-runtime-endpoint=unix:///run/containerd/containerd.sock" in flags
        assert ["ctr", "-n", "k8s.io", "images", "import", "-"] in _calls(node), name
    upgrade_one_minor(nodes, built, upgrades_el9, tmp_path)
    static_pods_on_centos8(netns_lab, built_el8, core_el8, tmp_path)
    calico_on_current_release(netns_lab, built_el9_133, core_el9, tmp_path)


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


def upgrade_one_minor(nodes, built, upgrades, tmp_path) -> None:
    """`upgrade --bundle` from v1.30.14 to v1.31.14 on the static-pods cluster, with w1 polling
    https://VIP:8443/healthz every 100 ms throughout: refused with nothing changed for a
    bundle signed by another key (exit 3) and for one two minors on (exit 4); `plan` shows
    the steps; w1 is refused out of turn; cp1 (kubeadm upgrade apply), cp2, cp3 (killed once
    after its kubeadm step, then re-run: it resumes) and w1 (a copy of admin.conf for its
    drain) end Ready at v1.31.14, the cluster records the new bundle, cp1's kept kubeadm
    config is v1beta4, and upgrading cp1 again changes nothing."""
    from builder.bundle.sign import sign_file

    started = time.monotonic()
    new, two_on = upgrades
    cp1, w1 = nodes["cp1"], nodes["w1"]

    def upgrade(node, bundle, *extra):
        return node.pyz(built, "upgrade", "--bundle", bundle, "--cluster",
                        node.host.dir / "cluster.yaml", "--root", node.root, "--node",
                        node.name, *extra)

    watched = [cp1.root / "etc/kubernetes/manifests/kube-apiserver.yaml",
               cp1.root / "var/lib/kubecrate/state.json", cp1.root / "usr/bin/kubeadm"]
    before = [path.read_bytes() for path in watched]
    forged = tmp_path / "forged" / new.name
    forged.parent.mkdir()
    shutil.copyfile(new, forged)
    sign_file(make_key(tmp_path / "other-key")[0], forged)
    refused = upgrade(cp1, forged)
    assert refused.returncode == ExitCode.VERIFY_FAILED, refused.stdout + refused.stderr
    skip = upgrade(cp1, two_on)
    assert skip.returncode == ExitCode.PRECONDITION, skip.stdout + skip.stderr
    assert "carries Kubernetes v1.33.7 only; this node runs v1.30.14" in skip.stderr
    assert "no intermediate releases" in skip.stderr, skip.stderr
    assert [path.read_bytes() for path in watched] == before  # nothing changed
    plan = cp1.pyz(built, "plan", "--bundle", new, "--cluster", cp1.host.dir / "cluster.yaml",
                   "--root", cp1.root, "--node", "cp1")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "kubeadm upgrade plan, then kubeadm upgrade apply v1.31.14 --yes" in plan.stdout
    assert plan.stdout.index("load ") < plan.stdout.index("kubeadm upgrade plan")
    early = upgrade(w1, new, "--no-drain")
    assert early.returncode == ExitCode.PRECONDITION
    assert "upgrade every control-plane node first" in early.stderr, early.stderr

    url = "https://{}:{}/healthz".format(halab.vip(STATIC_SUBNET), halab.LB_PORT)
    w1.host.start("upgrade-poller", [sys.executable, str(halab.HERE / "poller.py"), url, "0.1",
                                     "1800"])
    try:
        time.sleep(1.5)
        moment = time.monotonic()
        for name in ("cp1", "cp2"):
            done = upgrade(nodes[name], new)
            assert done.returncode == 0, name + "\n" + done.stdout + done.stderr + \
                _run_log(nodes[name])
        # cp3 is killed once its kubeadm step is recorded; the re-run resumes after it
        cp3 = nodes["cp3"]
        state = cp3.root / "var/lib/kubecrate/state.json"
        cp3.host.start("upgrade", cp3.pyz_argv(
            built, "upgrade", "--bundle", new, "--cluster", cp3.host.dir / "cluster.yaml",
            "--root", cp3.root, "--node", "cp3"))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and \
                "upgrade-kubeadm-upgrade" not in json.loads(state.read_text())["steps"]:
            time.sleep(0.1)
        cp3.host.stop("upgrade")
        assert "upgrade-kubeadm-upgrade" in json.loads(state.read_text())["steps"], \
            cp3.host.log("upgrade")
        resumed = upgrade(cp3, new)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr + cp3.logs()
        assert re.search(r"\d+\. upgrade-kubeadm-upgrade: unchanged", resumed.stdout), \
            resumed.stdout
        admin = tmp_path / "admin.conf"  # what an operator copies to the worker for its drain
        shutil.copyfile(cp1.root / "etc/kubernetes/admin.conf", admin)
        done = upgrade(w1, new, "--kubeconfig", admin)
        assert done.returncode == 0, done.stdout + done.stderr + w1.logs()
        assert "kubectl drain w1" in done.stdout and "kubectl uncordon w1" in done.stdout
        time.sleep(1.0)
        samples = w1.host.log("upgrade-poller")
    finally:
        w1.host.stop("upgrade-poller")
    longest = halab.outage(samples, moment)
    rows = halab.get_nodes(w1, cp1)
    assert {r[0]: (r[1], r[4]) for r in rows} == {
        name: ("Ready", "v1.31.14") for name in halab.NAMES}, rows
    record = cp1.run([cp1.root / "usr/bin/kubectl", "--kubeconfig",
                      cp1.root / "etc/kubernetes/admin.conf", "get", "configmap",
                      "kubecrate-bundle", "-n", "kube-system", "-o", "json"], timeout=60)
    assert json.loads(record.stdout)["data"]["kubernetes_version"] == "v1.31.14", record.stdout
    assert "kubeadm.k8s.io/v1beta4" in \
        (cp1.root / "etc/kubernetes/kubecrate/kubeadm-init.yaml").read_text()
    again = upgrade(cp1, new)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout
    back = cp1.install(built)  # the 1.30 bundle's install on an upgraded node: refused
    assert back.returncode == ExitCode.PRECONDITION and "install does not upgrade" in \
        back.stderr, back.stdout + back.stderr
    took = time.monotonic() - started
    print("upgrade v1.30.14 -> v1.31.14 of 3 control planes + 1 worker: {:.1f} s in all, "
          "longest outage of https://VIP:8443/healthz (polled every 100 ms) {:.1f} s".format(
              took, longest))
    if os.environ.get("KUBECRATE_UPGRADE_REPORT"):  # scripts/benchmarks/upgrade.py
        with open(os.environ["KUBECRATE_UPGRADE_REPORT"], "w") as out:
            json.dump({"outage": longest, "seconds": took}, out)
    assert longest < WINDOW_BOUND, longest


def _run_log(node) -> str:
    """The last lines of the node's newest installer run log (installer/runlog.py)."""
    logs = sorted((node.root / "var/log/kubecrate").glob("*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(logs[-1].read_text().splitlines()[-60:]) if logs else ""


def _calls(node) -> list:
    return [json.loads(line) for line in (node.host.dir / "calls.jsonl").read_text()
            .splitlines()]


def static_pods_on_centos8(netns_lab, built, core, tmp_path) -> None:
    """The CentOS 8 runbooks' profile in the same mode: k8s-1.23.17-el8 (Docker
    20.10, dockershim) on two CentOS 8.5 hosts, kernel 4.18, the .pyz on CPython 3.6 (EL8's
    platform-python): the first control plane with keepalived and haproxy as static pods,
    then a worker; both Ready."""
    lab = netns_lab("el9inst", ("cp1", "w1"), subnet=EL8_SUBNET)
    nodes = halab.prepare(lab, core, tmp_path / "shiv8", EL8_SUBNET, mode="static-pods",
                          profile=halab.EL8)
    join = tmp_path / "join-el8.yaml"
    cp1, w1 = nodes["cp1"], nodes["w1"]
    first = cp1.install(built, "--join-out", join)
    assert first.returncode == 0, first.stdout + first.stderr + cp1.logs()
    assert halab.vip(EL8_SUBNET) in cp1.host.addresses()
    running = halab.pods(cp1, ("keepalived", "haproxy", "kube-apiserver"))
    assert {running[p]["phase"] for p in ("keepalived", "haproxy", "kube-apiserver")} == {
        "Running"}, running
    done = w1.install(built, "--join", join)
    assert done.returncode == 0, done.stdout + done.stderr + w1.logs()
    rows = halab.get_nodes(w1, cp1)
    assert sorted(r[0] for r in rows) == ["cp1", "w1"], rows
    assert {r[1] for r in rows} == {"Ready"} and {r[4] for r in rows} == {"v1.23.17"}, rows
    for name, node in nodes.items():
        assert "python3.6 " in node.python36_runs(), name
        assert ["docker", "load"] in _calls(node), name
        assert "native.cgroupdriver=systemd" in (node.root / "etc/docker/daemon.json").read_text()


def calico_on_current_release(netns_lab, built, core, tmp_path) -> None:  # noqa: F811
    """Kubernetes v1.33.7 (kubeadm v1beta4, pause 3.10, containerd 1.7) with calico
    (cluster.yaml networking.cni: calico) on a control plane and a worker, Rocky 9.4 and Alma 9,
    each with a second NIC (ens3, a veth on a storage subnet of its own per node; calico's
    default first-found would take whichever comes first): calico-node runs on both with
    the node's cluster address (IP_AUTODETECTION_METHOD kubernetes-internal-ip), the pool is
    cluster.yaml's pod_cidr, felix uses nft, only calico's images are loaded, and
    `status --check` pings each node's vxlan.calico from the other."""
    lab = netns_lab("calico", ("cp1", "w1"), subnet=CALICO_SUBNET)
    nodes = halab.prepare(lab, core, tmp_path / "shiv133", CALICO_SUBNET, mode="static-pods",
                          profile=EL9_133)
    for i, node in enumerate(nodes.values()):
        cluster = node.host.dir / "cluster.yaml"
        cluster.write_text(cluster.read_text().replace(
            "service_cidr: 10.96.0.0/12}", "service_cidr: 10.96.0.0/12, cni: calico}"))
        ip("-n", node.host.ns, "link", "add", "ens3", "type", "veth", "peer", "name",
           "ens3-peer")
        ip("-n", node.host.ns, "addr", "add", "172.16.{}.{}/24".format(i + 1, 11 + i),
           "dev", "ens3")
        ip("-n", node.host.ns, "link", "set", "ens3-peer", "up")
        ip("-n", node.host.ns, "link", "set", "ens3", "up")
    join = tmp_path / "join-133.yaml"
    cp1, w1 = nodes["cp1"], nodes["w1"]
    first = cp1.install(built, "--join-out", join)
    assert first.returncode == 0, first.stdout + first.stderr + cp1.logs()
    assert "CALICO_IPV4POOL_CIDR 10.244.0.0/16, IP_AUTODETECTION_METHOD = " \
        "kubernetes-internal-ip, FELIX_IPTABLESBACKEND = NFT" in first.stdout, first.stdout
    done = w1.install(built, "--join", join)
    assert done.returncode == 0, done.stdout + done.stderr + w1.logs()
    rows = halab.get_nodes(w1, cp1)
    assert sorted(r[0] for r in rows) == ["cp1", "w1"], rows
    assert {r[1] for r in rows} == {"Ready"} and {r[4] for r in rows} == {"v1.33.7"}, rows
    admin = cp1.root / "etc/kubernetes/admin.conf"
    listed = cp1.run([cp1.root / "usr/bin/kubectl", "--kubeconfig", admin, "get", "nodes",
                      "-o", "json"], timeout=60)
    assert listed.returncode == 0, listed.stderr
    notes = {n["metadata"]["name"]: n["metadata"]["annotations"]
             for n in json.loads(listed.stdout)["items"]}
    for name, node in nodes.items():
        assert notes[name]["projectcalico.org/IPv4Address"] == "{}/24".format(
            node.host.address), notes[name]
        assert notes[name]["kubecrate.standin/calico-pool"] == "10.244.0.0/16"
        assert notes[name]["kubecrate.standin/calico-iptables-backend"] == "NFT"
        conf = node.root / "etc/NetworkManager/conf.d/kubecrate-cni.conf"
        assert "interface-name:cali*;interface-name:vxlan.calico" in conf.read_text(), name
        assert "ip_set" in (node.root / "etc/modules-load.d/kubecrate.conf").read_text()
    for name, node in nodes.items():  # the node's containerd store: calico's images, no flannel
        store = json.loads((node.root / "var/lib/containerd/kubecrate-standin-images.json")
                           .read_text())
        assert "docker.io/calico/node:v3.31.3" in store, (name, sorted(store))
        assert not [ref for ref in store if "flannel" in ref], (name, sorted(store))
    assert "kubeadm.k8s.io/v1beta4" in (cp1.root / "etc/kubernetes/kubecrate/kubeadm-init.yaml"
                                        ).read_text()
    check = cp1.pyz(built, "status", "--check", "--root", cp1.root)
    assert check.returncode == 0, check.stdout + check.stderr
    tunnels = {name: notes[name]["projectcalico.org/IPv4VXLANTunnelAddr"] for name in notes}
    assert "ok   pod network cp1 -> w1: w1's vxlan.calico {} answers".format(
        tunnels["w1"]) in check.stdout, check.stdout
    assert "ok   pod network w1 -> cp1: cp1's vxlan.calico {} answers".format(
        tunnels["cp1"]) in check.stdout, check.stdout


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


FLEET_SUBNET = 41


def test_fleet_export_and_ansible_install_six_hosts_over_ssh(netns_lab, built, core,  # noqa: F811
                                                              tmp_path):
    """`fleet export` + ansible-playbook (ansible-core 2.16, real sshd in every namespace host,
    CPython 3.6.15 as each host's interpreter) install 3 control planes and 3 workers from one
    control node; a second run changes nothing. Before that, each bad input stops the run
    before the installer changed any host: a wrong SSH key, an unreachable host, a host failing
    preflight, a host whose bundle signature fails."""
    from lab import fleetlab

    from installer.bundlecache import SIGNATURE_NAME

    for tool in ("keepalived", "haproxy", "openssl", "unshare"):
        require_tool(tool)
    names = fleetlab.names(workers=3)
    lab = netns_lab("fleet", names + ["ctl"], subnet=FLEET_SUBNET)
    fleet = fleetlab.Fleet(lab, core, tmp_path / "shiv", FLEET_SUBNET, tmp_path / "fleet")
    fleet.start_sshd()
    out = tmp_path / "project"
    done = fleet.export(built, out, "--forks", "6", "--worker-batch", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    fleet.host_vars(out)
    inventory = (out / "inventory.yml").read_text()
    assert "control_plane:" in inventory and "worker:" in inventory
    assert "first_control_plane:" in inventory

    def untouched(run, *named):
        """The run failed, named each of `named`, and no host has installer state."""
        assert run.returncode != 0, run.stdout
        for name in named:
            assert name in run.stdout, (name, run.stdout[-3000:])
        assert fleetlab.installed(fleet.nodes, names) == [], run.stdout[-3000:]

    # A wrong SSH key: every host unreachable.
    wrong = fleetlab.keygen(tmp_path / "wrong_key")
    assert wrong
    run = fleet.playbook(out, key=tmp_path / "wrong_key")
    untouched(run, "Permission denied")
    assert {r["unreachable"] for r in fleetlab.recap(run.stdout).values()} == {1}, run.stdout

    # One host unreachable (its sshd stopped): the others do not go on.
    fleet.nodes["w2"].host.stop("sshd")
    run = fleet.playbook(out)
    untouched(run, "w2")
    assert fleetlab.recap(run.stdout)["w2"]["unreachable"] == 1, run.stdout
    fleet.start_sshd_on("w2")

    # One host fails preflight (an EL9 host for the EL7 bundle): exit 4 names it.
    os_release = fleet.nodes["w1"].root / "etc/os-release"
    kept = os_release.read_text()
    os_release.write_text(osreleases.ROCKY94)
    run = fleet.playbook(out)
    untouched(run, "w1", "preflight")
    assert fleetlab.recap(run.stdout)["w1"]["failed"] == 1, run.stdout
    os_release.write_text(kept)

    # One host's copy of the bundle fails its signature (its cache folder's kept .minisig
    # damaged): exit 3 names it, nothing changed elsewhere.
    w3 = fleet.nodes["w3"]
    unpacked = w3.pyz(built, "unpack", built / (halab.NAME + ".tar"), "--root", w3.root)
    assert unpacked.returncode == 0, unpacked.stderr
    cache = next((w3.root / "var/lib/kubecrate/bundles").glob("*/" + SIGNATURE_NAME))
    text = cache.read_text().splitlines()
    assert text[2].startswith("trusted comment: timestamp:"), text
    text[2] = text[2].replace("timestamp:", "timestamp:9", 1)  # the trusted comment
    cache.write_text("\n".join(text) + "\n")
    run = fleet.playbook(out)
    untouched(run, "w3", "does not match its signature")
    assert fleetlab.recap(run.stdout)["w3"]["failed"] == 1, run.stdout
    shutil.rmtree(str(cache.parent))

    # --check: each host's plan, nothing changed.
    run = fleet.playbook(out, "--check")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    assert run.stdout.count("TASK [kubecrate-installer.pyz plan (--check)]") == 5, run.stdout
    assert '"host-prep",' in run.stdout and '"kubeadm"' in run.stdout, run.stdout[-6000:]
    assert fleetlab.installed(fleet.nodes, names) == []

    started = time.monotonic()
    run = fleet.playbook(out)
    install_seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    counts = fleetlab.recap(run.stdout)
    assert sorted(counts) == sorted(names + ["localhost"]), run.stdout
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in counts.values()), counts
    rows = halab.get_nodes(fleet.nodes["w1"], fleet.nodes["cp1"])
    assert sorted(r[0] for r in rows) == sorted(names), rows
    assert {r[1] for r in rows} == {"Ready"}, rows
    assert not (out / ".join").exists()  # fetched join.yaml removed from the control node
    for name, node in fleet.nodes.items():
        assert not (node.root / "var/tmp/kubecrate/join.yaml").exists(), name
        assert '"installed": true' in run.stdout  # status --json of each host, printed
        assert "kubecrate-installer.pyz install" in node.python36_runs(), name

    run = fleet.playbook(out)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    counts = fleetlab.recap(run.stdout)
    assert {name: c["changed"] for name, c in counts.items()} == \
        {name: 0 for name in names + ["localhost"]}, run.stdout[-6000:]
    print("fleet install of {} hosts: {:.0f} s".format(len(names), install_seconds))
