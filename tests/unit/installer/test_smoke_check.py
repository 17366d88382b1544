"""The smoke check (docs/cluster.md, "Smoke check") proves what an operator checks first by
hand: every node Ready, CoreDNS answers kubernetes.default (a query from every node), and each
node reaches another node's pod network (a ping around the ring); it runs at the end of install
only once the cluster is complete, and a failure there makes install exit 5.

The cluster is the kubectl stand-in's per-node model (tests/unit/installer/test_kubectl_exec.py)."""

import copy
import json

import pytest

from installer import smoke
from installer.format.errors import ExitCode
from installer.runner import Result
from tests.unit.installer.test_kubectl_exec import Apiserver, StandinRunner, nodes, objects

NAMES = ["cp1", "cp2", "w1"]
BROKEN_W1 = {"w1": {"iface": "ens192"}}  # flannel with --iface=eth0: w1 has no eth0
IFACE_ETH0 = ["--ip-masq", "--kube-subnet-mgr", "--iface=eth0"]


def failures(lines):
    return [line for line in lines if line.startswith("FAIL")]


def check(monkeypatch, api, expected=NAMES):
    return smoke.render(smoke.smoke_check(StandinRunner(api, monkeypatch), "admin.conf",
                                          expected))


def test_a_healthy_cluster_passes_and_says_what_it_saw(monkeypatch):
    lines = check(monkeypatch, Apiserver(nodes(), objects()))
    assert failures(lines) == [], lines
    assert "ok   DNS from w1: CoreDNS answers kubernetes.default: 10.96.0.1 (asked kube-dns " \
           "10.96.0.10)" in lines
    assert [line for line in lines if "pod network" in line] == [
        "ok   pod network cp1 -> cp2: cp2's flannel.1 10.244.1.0 answers (VXLAN to 10.0.0.12)",
        "ok   pod network cp2 -> w1: w1's flannel.1 10.244.2.0 answers (VXLAN to 10.0.0.21)",
        "ok   pod network w1 -> cp1: cp1's flannel.1 10.244.0.0 answers (VXLAN to 10.0.0.11)"]


def test_a_node_whose_flanneld_finds_no_interface_fails_the_pairs_through_it(monkeypatch):
    lines = check(monkeypatch, Apiserver(nodes(**BROKEN_W1), objects(IFACE_ETH0)))
    assert "ok   pod network cp1 -> cp2: cp2's flannel.1 10.244.1.0 answers (VXLAN to " \
           "10.0.0.12)" in lines
    assert "FAIL pod network cp2 -> w1: w1's flannel.1 10.244.2.0 does not answer: 1 packets " \
           "transmitted, 0 packets received, 100% packet loss (flanneld on both nodes: " \
           "kubectl -n kube-flannel logs; VXLAN is UDP 8472 between them)" in lines
    assert any(line.startswith("FAIL pod network w1 -> cp1: cp1's flannel.1 10.244.0.0 does "
                               "not answer: error: unable to upgrade connection: container "
                               "not found (\"kube-flannel\")") for line in lines), lines
    assert any(line.startswith("FAIL node w1: NotReady: kube-flannel: CrashLoopBackOff")
               for line in lines)


def test_ready_states_are_not_enough_the_probes_must_answer(monkeypatch):
    """Every node and pod reads Ready, but the underlay drops VXLAN (UDP 8472: a firewall the
    model does not know) and kube-proxy sends the query nowhere: both checks fail."""
    api = Apiserver(nodes(), objects())

    class Dropping(StandinRunner):
        def query(self, argv, timeout=0):
            if "exec" in argv and "ping" in argv:
                return Result(argv, 1, "PING x\n1 packets transmitted, 0 packets received, "
                              "100% packet loss\n", "command terminated with exit code 1\n")
            if "exec" in argv and "nslookup" in argv:
                return Result(argv, 1, ";; connection timed out; no servers could be "
                              "reached\n", "command terminated with exit code 1\n")
            return super().query(argv, timeout)

    checks = smoke.smoke_check(Dropping(api, monkeypatch), "admin.conf", NAMES)
    lines = smoke.render(checks)
    assert all(c.ok for c in checks if c.what.startswith(("node ", "CoreDNS"))), lines
    failed = failures(lines)
    assert len(failed) == 6, lines  # 3 DNS, 3 ring pairs
    assert "FAIL DNS from cp2: no answer for kubernetes.default.svc.cluster.local from " \
           "kube-dns 10.96.0.10: ;; connection timed out; no servers could be reached" in lines


def test_crashing_coredns_fails_dns_from_every_node_and_a_missing_node_is_named(monkeypatch):
    dry = {n: {"nameservers": ()} for n in NAMES}  # kubeadm's Corefile, no nameserver
    lines = check(monkeypatch, Apiserver(nodes(**dry), objects()), NAMES + ["w2"])
    assert "FAIL nodes: not registered: w2 (install them with --join)" in lines
    assert any(line.startswith("FAIL CoreDNS on cp1: CrashLoopBackOff: plugin/forward: no "
                               "nameservers found") for line in lines), lines
    for name in NAMES:
        assert "FAIL DNS from {}: no answer for kubernetes.default.svc.cluster.local from " \
               "kube-dns 10.96.0.10: ;; connection timed out; no servers could be reached" \
               .format(name) in lines
    runner = StandinRunner(Apiserver(nodes(), objects()), monkeypatch)
    assert not smoke.cluster_complete(runner, "admin.conf", NAMES + ["w2"])
    assert smoke.cluster_complete(runner, "admin.conf", NAMES)


def test_install_that_completes_the_cluster_exits_5_when_the_smoke_check_fails(monkeypatch,
                                                                               capfd):
    from installer import cli, session

    lines = ["ok   node cp1: Ready", "FAIL pod network cp2 -> w1: w1's flannel.1 10.244.2.0 "
             "does not answer: 100% packet loss"]
    outcome = session.Outcome("cp2", "control-plane", "b", [], True, [], (lines, False, ""))
    monkeypatch.setattr(session, "install", lambda options: outcome)
    monkeypatch.setattr(cli, "_options", lambda *args, **kwargs: None)
    args = ["install", "--bundle", "b.tar", "--cluster", "c.yaml", "--dry-run"]
    code, out, err = installer(capfd, *args)
    assert code == ExitCode.STEP_FAILED == 5, out + err
    assert "smoke check: FAILED" in out
    assert "install finished on cp2, but the smoke check FAILED: pod network cp2 -> w1: " \
           "w1's flannel.1 10.244.2.0 does not answer: 100% packet loss." in err
    assert "status --check` on a control-plane node" in err
    code, out, err = installer(capfd, *args, "--json")
    assert code == 5 and json.loads(out)["smoke"]["passed"] is False
    outcome = outcome._replace(smoke=(lines[:1], True, ""))
    code, out, err = installer(capfd, *args)
    assert code == 0 and "smoke check: passed" in out


def installer(capfd, *args):
    """The installer CLI in-process: (exit code, stdout, stderr)."""
    from installer import cli

    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    out, err = capfd.readouterr()
    return done.value.code, out, err


def test_host_prep_tells_networkmanager_to_leave_flannels_devices_alone(tmp_path):
    from installer import reset
    from installer.steps import hostprep, nmconf, run_steps
    from tests.unit.installer.test_ha_steps import make_ctx
    from tests.unit.installer.test_reset_owned import UnitsRunner

    ctx = make_ctx(tmp_path, "w1")
    ctx.runner = UnitsRunner(active={"NetworkManager"}, enabled={"NetworkManager"})
    run_steps(ctx, [hostprep.HostPrepStep()])
    assert ctx.host.read_text(nmconf.CONF).splitlines()[1:] == [
        "[keyfile]",
        "unmanaged-devices=interface-name:cni0;interface-name:flannel.1;interface-name:veth*"]
    assert ["systemctl", "reload", "NetworkManager"] in ctx.runner.calls
    again = run_steps(ctx, [hostprep.HostPrepStep()])[0].changes  # (the fake kernel does not
    assert not [c for c in again if nmconf.CONF in c]  # load modules): written once
    reset.reset_host(ctx.host.root, runner=ctx.runner)
    assert not ctx.host.exists(nmconf.CONF)  # reset --host takes it away again


def calico_objects(**env):
    """What the first node applied with networking.cni: calico (the installer's manifest)."""
    from tests.unit.installer.test_calico_model import OURS

    docs = copy.deepcopy(OURS)
    container = [d for d in docs if d["kind"] == "DaemonSet"][0]["spec"]["template"]["spec"][
        "containers"][0]
    for name, value in env.items():
        container["env"] = [e for e in container["env"] if e["name"] != name] + [
            {"name": name, "value": value}]
    return docs


def test_with_calico_the_ring_pings_each_nodes_vxlan_calico_from_calico_node(monkeypatch):
    runner = StandinRunner(Apiserver(nodes(), calico_objects()), monkeypatch)
    lines = smoke.render(smoke.smoke_check(runner, "admin.conf", NAMES))
    assert failures(lines) == [], lines
    assert [line for line in lines if "pod network" in line] == [
        "ok   pod network cp1 -> cp2: cp2's vxlan.calico 10.244.0.64 answers",
        "ok   pod network cp2 -> w1: w1's vxlan.calico 10.244.0.128 answers",
        "ok   pod network w1 -> cp1: cp1's vxlan.calico 10.244.0.0 answers"]
    assert "ok   DNS: not asked from the nodes: calico/node carries no DNS client; the " \
           "CoreDNS pods' readiness is checked above" in lines
    assert ["kubectl", "--kubeconfig", "admin.conf", "exec", "-n", "kube-system",
            "calico-node-cp1", "-c", "calico-node", "--", "ping", "-c", "1", "-W", "2",
            "10.244.0.64"] in runner.calls


def test_calico_node_that_finds_no_address_fails_its_node_and_the_ring(monkeypatch):
    lines = check(monkeypatch, Apiserver(nodes(), calico_objects(
        IP_AUTODETECTION_METHOD="interface=bond.*")))
    assert "FAIL node w1: NotReady: calico-node: CrashLoopBackOff: Couldn't autodetect an " \
           "IPv4 address (IP_AUTODETECTION_METHOD=interface=bond.*)" in lines, lines
    assert "FAIL pod network cp1 -> cp2: cp2 has no projectcalico.org/IPv4VXLANTunnelAddr " \
           "annotation: calico-node has not come up there (kubectl -n kube-system logs -c " \
           "calico-node on its calico-node pod)" in lines, lines
