"""issue 12 item 8: the smoke check reads what an operator looks at first: nodes Ready, CoreDNS
Ready, flannel on every node; and runs at the end of install only once the cluster is complete."""

import json
from types import SimpleNamespace

from installer import smoke


def _ready(ok, message=""):
    return {"conditions": [{"type": "Ready", "status": "True" if ok else "False",
                            "message": message}]}


def _node(name, ok=True, ip=None):
    annotations = {smoke.PUBLIC_IP: ip} if ip else {}
    return {"metadata": {"name": name, "annotations": annotations}, "status": _ready(
        ok, "" if ok else "kube-flannel: CrashLoopBackOff: Failed to find interface")}


def _pod(node, ok=True, message=""):
    return {"metadata": {"name": "p-" + node}, "spec": {"nodeName": node},
            "status": _ready(ok, message)}


class Runner:
    def __init__(self, nodes, dns, flannel):
        self.answers = {"nodes": nodes, "k8s-app=kube-dns": dns, "app=flannel": flannel}

    def query(self, argv, timeout=0):
        key = argv[-3] if argv[4] == "pods" else "nodes"
        return SimpleNamespace(returncode=0, stderr="",
                               stdout=json.dumps({"items": self.answers[key]}))


def test_a_healthy_cluster_passes_and_says_what_it_saw():
    nodes = [_node("cp1", ip="10.0.0.11"), _node("w1", ip="10.0.0.21")]
    runner = Runner(nodes, [_pod("cp1")], [_pod("cp1"), _pod("w1")])
    checks = smoke.smoke_check(runner, "admin.conf", ["cp1", "w1"])
    assert all(c.ok for c in checks), checks
    lines = smoke.render(checks)
    assert "ok   pod network w1: VXLAN endpoint 10.0.0.21; reaches cp1" in lines
    assert "ok   CoreDNS on cp1: Ready: answers for kubernetes.default" in lines


def test_a_not_ready_node_crashing_coredns_and_a_missing_node_fail():
    nodes = [_node("cp1", ip="10.0.0.11"), _node("cp2", ok=False)]
    dns = [_pod("cp1", False, "CrashLoopBackOff: plugin/forward: no nameservers found")]
    runner = Runner(nodes, dns, [_pod("cp1"), _pod("cp2", False)])
    lines = smoke.render(smoke.smoke_check(runner, "admin.conf", ["cp1", "cp2", "w1"]))
    assert "FAIL nodes: not registered: w1 (install them with --join)" in lines
    assert any(line.startswith("FAIL node cp2: NotReady: kube-flannel") for line in lines)
    assert "FAIL CoreDNS on cp1: CrashLoopBackOff: plugin/forward: no nameservers found" in lines
    assert "FAIL pod network cp2: flannel is not running here: pods on cp2 reach no other " \
           "node" in lines
    assert not smoke.cluster_complete(runner, "admin.conf", ["cp1", "cp2", "w1"])
    assert smoke.cluster_complete(runner, "admin.conf", ["cp1", "cp2"])


def test_host_prep_tells_networkmanager_to_leave_flannels_devices_alone(tmp_path):
    from installer import session
    from installer.steps import hostprep, nmconf, run_steps
    from tests.unit.test_ha_steps import make_ctx
    from tests.unit.test_reset_owned import UnitsRunner

    ctx = make_ctx(tmp_path, "w1")
    ctx.runner = UnitsRunner(active={"NetworkManager"}, enabled={"NetworkManager"})
    run_steps(ctx, [hostprep.HostPrepStep()])
    assert ctx.host.read_text(nmconf.CONF).splitlines()[1:] == [
        "[keyfile]",
        "unmanaged-devices=interface-name:cni0;interface-name:flannel.1;interface-name:veth*"]
    assert ["systemctl", "reload", "NetworkManager"] in ctx.runner.calls
    again = run_steps(ctx, [hostprep.HostPrepStep()])[0].changes  # (the fake kernel does not
    assert not [c for c in again if nmconf.CONF in c]  # load modules): written once
    session.reset_host(ctx.host.root, runner=ctx.runner)
    assert not ctx.host.exists(nmconf.CONF)  # reset --host takes it away again
