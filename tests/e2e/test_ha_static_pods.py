"""load_balancer.mode static-pods on the four namespace hosts of test_ha_install.py, as EL9
hosts (Rocky, Alma, RHEL 9) from the k8s-1.30-el9-containerd bundle on Python 3.9, then
upgraded one minor; then two-node legs: CentOS 8 with Docker, and calico on EL9 walked from
Kubernetes 1.30 to 1.33 in three kubeadm steps from one bundle. The bundles are built once per
session (tests/e2e/conftest.py)."""

import contextlib
import json
import os
import re
import shutil
import sys
import time

import pytest
from lab import halab
from lab.bundles import make_key
from lab.hostruntime import CTR_STORE
from lab.netns import ip
from lab.runtimes import private_containerd
from lab.tools import require_tool

from installer.format.errors import ExitCode
from installer.registrystore import tag_link
from tests.e2e.conftest import EL9_PAIR

pytestmark = pytest.mark.e2e

STATIC_SUBNET = 5
EL8_SUBNET = 8
CALICO_SUBNET = 13
WINDOW_BOUND = 15.0  # polling succeeds again within 15 s (measured about 3-4 s)


def test_static_pods_three_control_planes_and_a_worker(netns_lab, mirror_world,
                                                      built_el9, core_el9, built_el8,
                                                      core_el8, upgrades_el9, tmp_path):
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
    (static_pods_on_centos8) and calico walked from 1.31 to 1.33 (calico_walked_to_1_33)."""
    for tool in ("keepalived", "haproxy", "curl", "openssl", "unshare"):
        require_tool(tool)
    built, core = built_el9, core_el9
    lab = netns_lab("hasp", halab.NAMES, subnet=STATIC_SUBNET)
    nodes = halab.prepare(lab, core, tmp_path / "shiv", STATIC_SUBNET, mode="static-pods",
                          profile=halab.EL9)
    with private_containerd() as pulls:  # the real containerd 1.6 w1's pulls go through
        for node in nodes.values():
            registry_mode(node, pulls)
        _install_in_registry_mode(nodes, built, tmp_path)
        upgrade_one_minor(nodes, built, upgrades_el9, tmp_path)
        # the new kube-proxy came to w1 at the first try, though at first only cp1's registry
        # had it (hosts.toml lists each control plane's registry after the VIP)
        kubelet = (nodes["w1"].root / "var/log/kubecrate-standin/kubelet.log").read_text()
        assert 'Successfully pulled image "registry.k8s.io/kube-proxy:v1.31.14"' in kubelet
        assert "Failed to pull image" not in kubelet, kubelet
    static_pods_on_centos8(netns_lab, built_el8, core_el8, tmp_path)
    calico_walked_to_1_33(netns_lab, built, core_el9, upgrades_el9, tmp_path)


def registry_mode(node, pulls) -> None:
    """cluster.yaml with `images: {mode: registry}`; the kubecrate-registry unit really runs
    (the ctr stand-in runs the real docker-registry for distribution's image), and a
    `crictl pull` runs the real containerd 1.6 `pulls` (scripts/lab/hostpull.py)."""
    cluster = node.host.dir / "cluster.yaml"
    cluster.write_text(cluster.read_text() + "images: {mode: registry}\n")
    node.env["KUBECRATE_SYSTEMCTL_RUN"] += ",kubecrate-registry,kubecrate-bundle-server"
    node.env["KUBECRATE_TEST_PULL_CONTAINERD"] = str(pulls.socket)


def _install_in_registry_mode(nodes, built, tmp_path) -> None:
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
        done = node.install(built, "--join", join, fetch=name == "w1")  # w1: no tar copied
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
        loaded = ["ctr", "-n", "k8s.io", "images", "import", "-"] in _calls(node)
        assert loaded == (name != "w1"), name  # w1 pulls from the registry instead
    fetched_without_the_archive(cp1, nodes["w1"], built)
    pulled_from_the_registry(nodes)


def fetched_without_the_archive(cp1, w1, built) -> None:
    """w1 was given no bundle tar: it fetched the bundle from cp1's bundle server, all but the
    image archive, and its cache holds everything else, verified, and says what it lacks."""
    served = (cp1.root / "var/log/kubecrate-standin/kubecrate-bundle-server.log").read_text()
    (cache,) = (w1.root / "var/lib/kubecrate/bundles").iterdir()
    assert '{} "GET /kubecrate/v1/bundles/{}/bin/'.format(w1.host.address, cache.name) \
        in served, served[-3000:]
    assert "/images/images.tar" not in served, served[-3000:]
    assert not (cache / "images").exists()
    assert json.loads((cache / "omitted.json").read_text()) == {"omitted": ["images/images.tar"]}
    listed = w1.pyz(built, "cache", "list", "--root", w1.root)
    assert "(no image archive: pulled from the registry)  [in use]" in listed.stdout, \
        listed.stdout + listed.stderr


def pulled_from_the_registry(nodes) -> None:
    """images.mode registry (issue 22): w1 loaded no image archive; containerd's hosts.toml on
    w1 sends each registry's pulls to the VIP's 8008; w1's kubelet pulled kube-proxy's and
    flannel's images through it with the real containerd 1.6, each the manifest the bundle
    carries; with cp1's registry stopped, the images are still pullable through the VIP."""
    started = time.monotonic()
    cp1, w1 = nodes["cp1"], nodes["w1"]
    vip = halab.vip(STATIC_SUBNET)
    hosts = (w1.root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
    assert '[host."https://{}:8008/v2/registry.k8s.io"]'.format(vip) in hosts, hosts
    storage = str(cp1.root / "var/lib/kubecrate/registry")
    wanted = ["registry.k8s.io/kube-proxy:v1.30.14", "docker.io/flannel/flannel:v0.25.7",
              "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2"]
    store = w1.root / CTR_STORE.lstrip("/")
    deadline = time.monotonic() + 60
    pulled = {}
    while time.monotonic() < deadline and not all(ref in pulled for ref in wanted):
        pulled = json.loads(store.read_text()) if store.exists() else {}
        time.sleep(0.5)
    assert {ref: pulled.get(ref) for ref in wanted} == {
        ref: tag_link(storage, ref) for ref in wanted}, w1.logs()
    assert not [ref for ref in pulled if "kube-apiserver" in ref or "registry:" in ref]
    stopped = cp1.run(["systemctl", "stop", "kubecrate-registry"], timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    refused = cp1.run(["curl", "-sk", "--max-time", "5",
                       "https://{}:8009/v2/".format(cp1.host.address)], timeout=30)
    assert refused.returncode == 7, refused.stdout  # curl: could not connect
    for ref in ("registry.k8s.io/pause:3.9", "registry.k8s.io/coredns/coredns:v1.11.3"):
        done = w1.run(["crictl", "-r", "unix:///run/containerd/containerd.sock", "pull", ref],
                      timeout=180)
        assert done.returncode == 0, ref + "\n" + done.stdout + done.stderr
        assert tag_link(storage, ref) in done.stdout, done.stdout
    back = cp1.run(["systemctl", "start", "kubecrate-registry"], timeout=60)
    assert back.returncode == 0, back.stderr
    print("registry mode: w1's pulls and the registry drill took {:.1f} s".format(
        time.monotonic() - started))


def upgrade_one_minor(nodes, built, upgrades, tmp_path) -> None:
    """`upgrade --bundle` from v1.30.14 to v1.31.14 on the static-pods cluster, with w1 polling
    https://VIP:8443/healthz every 100 ms throughout: refused with nothing changed for a
    bundle signed by another key (exit 3) and for one two minors on (exit 4, from its signed
    bundle.json before its files are hashed); `plan` shows
    the steps; w1 is refused out of turn; cp1 (kubeadm upgrade apply), cp2, cp3 (killed once
    after its kubeadm step, then re-run: it resumes) and w1 (a copy of admin.conf for its
    drain) end Ready at v1.31.14, the cluster records the new bundle, cp1's kept kubeadm
    config is v1beta4, and upgrading cp1 again changes nothing."""
    from builder.bundle.sign import sign_file

    started = time.monotonic()
    new, two_on, _walk = upgrades
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
    assert "carries Kubernetes v1.32.9 only; this node runs v1.30.14" in skip.stderr
    assert "no intermediate releases" in skip.stderr, skip.stderr
    assert [path.read_bytes() for path in watched] == before  # nothing changed
    plan = cp1.pyz(built, "plan", "--bundle", new, "--cluster", cp1.host.dir / "cluster.yaml",
                   "--root", cp1.root, "--node", "cp1")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "kubeadm upgrade plan, then kubeadm upgrade apply v1.31.14 --yes" in plan.stdout
    assert plan.stdout.index("load ") < plan.stdout.index("kubeadm upgrade plan")
    # both bundles carry the same flannel manifest, and the load balancer's static pods render
    # the same: planned as nothing to re-apply (installer/steps/upgradenet.py)
    for step in ("upgrade-loadbalancer", "upgrade-cni"):
        assert re.search(r"\d+\. {}: nothing to change".format(step), plan.stdout), plan.stdout
    applied = [(cp1.root / path.lstrip("/")).read_bytes() for path in (
        "/var/lib/kubecrate/cni-applied", "/etc/kubernetes/manifests/haproxy.yaml")]
    early = upgrade(w1, new, "--no-drain")
    assert early.returncode == ExitCode.PRECONDITION
    assert "upgrade every control-plane node first" in early.stderr, early.stderr

    with polled(w1, STATIC_SUBNET) as poll:
        for name in ("cp1", "cp2"):
            done = upgrade(nodes[name], new)
            assert done.returncode == 0, name + "\n" + done.stdout + done.stderr + \
                _run_log(nodes[name])
            for step in ("upgrade-loadbalancer", "upgrade-cni"):
                assert re.search(r"\d+\. {}: unchanged".format(step), done.stdout), done.stdout
        assert [(cp1.root / path.lstrip("/")).read_bytes() for path in (
            "/var/lib/kubecrate/cni-applied", "/etc/kubernetes/manifests/haproxy.yaml")] == applied
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
    longest = poll["outage"]
    rows = halab.get_nodes(w1, cp1)
    assert {r[0]: (r[1], r[4]) for r in rows} == {
        name: ("Ready", "v1.31.14") for name in halab.NAMES}, rows
    assert recorded_version(cp1) == "v1.31.14"
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
    report(outage=longest, seconds=took)
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


def calico_walked_to_1_33(netns_lab, built, core, upgrades, tmp_path) -> None:
    """calico (cluster.yaml networking.cni: calico) on a control plane and a worker, Rocky 9.4
    and Alma 9, each with a second NIC (ens3, a veth on a storage subnet of its own per node;
    calico's default first-found would take whichever comes first), installed at v1.31.14 from
    the 1.31 bundle and walked to v1.33.7 by `upgrade --bundle` with the bundle that carries
    1.31 and 1.32 (kubernetes.upgrade_path): its 1.31 step is already done, so each node takes
    the 1.32 and 1.33 steps, w1 polling https://VIP:8443/healthz every 100 ms throughout: cp1,
    w1, cp1, w1, each run taking the next step and pausing (exit 0) where the other node must
    take it first; both end Ready at v1.33.7 (kubeadm v1beta4, pause 3.10, containerd 1.7,
    calico v3.31.3 re-applied at the 1.32 step). The 1.30 -> 1.31 step is the main cluster's
    (upgrade_one_minor); the walk's three-step order, pause and resume are unit-tested
    (tests/unit/installer/test_upgrade_path.py). Then calico-node runs on both
    with the node's cluster address (IP_AUTODETECTION_METHOD kubernetes-internal-ip), the pool
    is cluster.yaml's pod_cidr, felix uses nft, only calico's images are loaded, and `status
    --check` pings each node's vxlan.calico from the other."""
    lab = netns_lab("calico", ("cp1", "w1"), subnet=CALICO_SUBNET)
    nodes = halab.prepare(lab, core, tmp_path / "shiv-walk", CALICO_SUBNET, mode="static-pods",
                          profile=EL9_PAIR)
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
    join = tmp_path / "join-walk.yaml"
    cp1, w1 = nodes["cp1"], nodes["w1"]
    first = cp1.install(built, "--join-out", join, tar=upgrades[0])
    assert first.returncode == 0, first.stdout + first.stderr + cp1.logs()
    assert "CALICO_IPV4POOL_CIDR 10.244.0.0/16, IP_AUTODETECTION_METHOD = " \
        "kubernetes-internal-ip, FELIX_IPTABLESBACKEND = NFT" in first.stdout, first.stdout
    done = w1.install(built, "--join", join, tar=upgrades[0])
    assert done.returncode == 0, done.stdout + done.stderr + w1.logs()
    rows = halab.get_nodes(w1, cp1)
    assert {r[0]: (r[1], r[4]) for r in rows} == {n: ("Ready", "v1.31.14") for n in nodes}, rows
    walk_to_1_33(nodes, built, upgrades[2])
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


def walk_to_1_33(nodes, built, walk) -> None:
    """`upgrade --bundle` of the 1.33 bundle carrying 1.31 and 1.32 on cp1 and w1 in turn,
    twice (the 1.32 and 1.33 steps; 1.31 is where they are): each run takes the node one step
    and pauses (exit 0) where the other node must take it first, w1 polling the VIP
    throughout; both Ready at v1.33.7, the cluster's record the walk's bundle."""
    started = time.monotonic()
    cp1, w1 = nodes["cp1"], nodes["w1"]
    applied = (cp1.root / "var/lib/kubecrate/cni-applied").read_bytes()
    with polled(w1, CALICO_SUBNET) as poll:
        for step, minor in enumerate((32, 33), 1):
            for node in (cp1, w1):
                done = node.pyz(built, "upgrade", "--bundle", walk, "--cluster",
                                node.host.dir / "cluster.yaml", "--root", node.root, "--node",
                                node.name, "--no-drain")
                assert done.returncode == 0, "{} step {}\n{}{}{}".format(
                    node.name, step, done.stdout, done.stderr, _run_log(node))
                assert "upgraded to bundle k8s-1.{}-el9-containerd".format(minor) in \
                    done.stdout, done.stdout
                if step < 2:  # the next step waits for the other node
                    assert "next step waits: " in done.stdout, done.stdout
    longest = poll["outage"]
    rows = halab.get_nodes(w1, cp1)
    assert {r[0]: (r[1], r[4]) for r in rows} == {n: ("Ready", "v1.33.7") for n in nodes}, rows
    assert recorded_version(cp1) == "v1.33.7"
    # calico v3.28.5 (1.31) -> v3.31.3 (1.32): re-applied on the way
    assert (cp1.root / "var/lib/kubecrate/cni-applied").read_bytes() != applied
    took = time.monotonic() - started
    print("walk v1.31.14 -> v1.33.7 (two steps) of a control plane + a worker: {:.1f} s in "
          "all, longest outage of https://VIP:8443/healthz (polled every 100 ms) {:.1f} s"
          .format(took, longest))
    report(walk_outage=longest, walk_seconds=took)
    assert longest < WINDOW_BOUND, longest


@contextlib.contextmanager
def polled(w1, subnet):
    """w1 polls https://VIP:8443/healthz every 100 ms while the block runs; the dict it yields
    holds the longest outage (s) once the block has ended."""
    url = "https://{}:{}/healthz".format(halab.vip(subnet), halab.LB_PORT)
    w1.host.start("upgrade-poller", [sys.executable, str(halab.HERE / "poller.py"), url, "0.1",
                                     "1800"])
    figures = {}
    try:
        time.sleep(1.5)
        moment = time.monotonic()
        yield figures
        time.sleep(1.0)
        samples = w1.host.log("upgrade-poller")
    finally:
        w1.host.stop("upgrade-poller")
    figures["outage"] = halab.outage(samples, moment)


def recorded_version(cp1) -> str:
    """The release ConfigMap kube-system/kubecrate-bundle records (the upgrade-record step)."""
    record = cp1.run([cp1.root / "usr/bin/kubectl", "--kubeconfig",
                      cp1.root / "etc/kubernetes/admin.conf", "get", "configmap",
                      "kubecrate-bundle", "-n", "kube-system", "-o", "json"], timeout=60)
    assert record.returncode == 0, record.stderr
    return json.loads(record.stdout)["data"]["kubernetes_version"]


def report(**figures) -> None:
    """Figures into $KUBECRATE_UPGRADE_REPORT (scripts/benchmarks/upgrade.py), beside those an
    earlier leg of the run wrote there."""
    path = os.environ.get("KUBECRATE_UPGRADE_REPORT")
    if not path:
        return
    both = json.loads(open(path).read()) if os.path.exists(path) else {}
    both.update(figures)
    with open(path, "w") as out:
        json.dump(both, out)
