"""The stand-ins' per-node pod-network model (scripts/mirrorworld/standins/_podnet.py): a node
is Ready only when flanneld would find its interface there, and flannel's
VXLAN MTU follows the chosen interface's MTU."""

import json
import sys
from pathlib import Path

import yaml

from installer.steps import cni, run_steps
from tests.unit.installer.test_ha_steps import FLANNEL, cluster_steps, make_ctx

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts/mirrorworld/standins"))
import _nodenet  # noqa: E402
import _podnet  # noqa: E402


def node(name, address, mtu=1500, default="eth0", extra=()):
    facts = {"interfaces": [{"name": "lo", "addresses": ["127.0.0.1/8"], "mtu": 65536},
                            {"name": "eth0", "addresses": [address + "/24"], "mtu": mtu}]
             + list(extra), "default_iface": default, "nameservers": []}
    return {"metadata": {"name": name, "annotations": {_nodenet.ANNOTATION: json.dumps(facts)}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}


NODES = [node("cp1", "10.0.0.11"), node("cp2", "10.0.0.12"), node("w1", "10.0.0.21", 1400)]


def objects(args=None, env=None):
    docs = list(yaml.safe_load_all(FLANNEL))
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    if args is not None:
        container["args"] = args
    if env is not None:
        container["env"] = env
    return docs


def test_one_address_in_the_daemonset_runs_flannel_on_that_node_only():
    old = objects(args=["--ip-masq", "--kube-subnet-mgr", "--iface=10.0.0.11"])
    states = {n["metadata"]["name"]: _podnet.flannel_on(n, old) for n in NODES}
    assert states["cp1"]["running"]
    for name in ("cp2", "w1"):
        assert not states[name]["running"]
        assert "Failed to find interface to use that matches the interfaces and/or regexes " \
               "provided" in states[name]["message"]


def test_the_installers_manifest_runs_flannel_on_every_node_with_the_interfaces_mtu():
    ours = list(yaml.safe_load_all(cni.customize(FLANNEL, "10.244.0.0/16")))
    states = {n["metadata"]["name"]: _podnet.flannel_on(n, ours) for n in NODES}
    assert all(s["running"] for s in states.values()), states
    assert {n: s["public_ip"] for n, s in states.items()} == {
        "cp1": "10.0.0.11", "cp2": "10.0.0.12", "w1": "10.0.0.21"}
    # VXLAN: the interface's MTU less 50 (flannel sets none; the kernel derives it)
    assert (states["cp1"]["mtu"], states["w1"]["mtu"]) == (1450, 1350)
    assert "MTU" not in json.dumps(ours).upper().replace("FLANNELD", "")


def test_flannel_flag_and_env_precedence_and_the_default_route():
    by_env = objects(env=[{"name": "FLANNELD_IFACE", "value": "eth0"}])
    assert _podnet.flannel_on(NODES[1], by_env)["iface"] == "eth0"
    flag_wins = objects(args=["--kube-subnet-mgr", "--iface=eth9"],
                        env=[{"name": "FLANNELD_IFACE", "value": "eth0"}])
    assert not _podnet.flannel_on(NODES[1], flag_wins)["running"]
    regex = objects(args=["--kube-subnet-mgr", "--iface-regex=^10\\.0\\.0\\."])
    assert _podnet.flannel_on(NODES[2], regex)["public_ip"] == "10.0.0.21"
    no_route = node("air", "10.0.0.31", default="")
    missing = _podnet.flannel_on(no_route, objects())
    assert not missing["running"] and "failed to get default interface" in missing["message"]
    assert _podnet.flannel_on(no_route, list(yaml.safe_load_all(
        cni.customize(FLANNEL, "10.244.0.0/16"))))["running"]  # air-gapped: no default route
    assert not _podnet.flannel_on(NODES[0], [])["running"]  # no CNI applied: NotReady


def _applied(ctx):
    """Every object the cluster steps applied with kubectl on the first node."""
    docs = []
    for argv in ctx.runner.calls:
        if argv[0] == "kubectl" and "apply" in argv:
            if argv[argv.index("-f") + 1] == "-":
                continue  # the cluster's bundle record (a ConfigMap, steps/parity.py)
            path = ctx.host.path(argv[argv.index("-f") + 1])
            with open(path) as handle:
                docs += [d for d in yaml.safe_load_all(handle) if d]
    return docs


def test_what_the_first_node_applies_makes_every_node_ready(tmp_path):
    ctx = make_ctx(tmp_path, "cp1")  # cp1 10.0.0.11, cp2 10.0.0.12, w1 10.0.0.21
    run_steps(ctx, cluster_steps())
    applied = _applied(ctx)
    states = {n["metadata"]["name"]: _podnet.flannel_on(n, applied) for n in NODES}
    assert all(s["running"] for s in states.values()), states


def test_what_the_first_node_applies_keeps_coredns_ready_without_a_nameserver(tmp_path):
    ctx = make_ctx(tmp_path, "cp1")  # its root has no /etc/resolv.conf, cluster.yaml no
    run_steps(ctx, cluster_steps())  # upstream_dns: kubeadm's default Corefile would crash
    corefile = _podnet.corefile(_applied(ctx), {})
    served = _podnet.coredns_on(NODES[0], corefile)  # NODES have no nameservers
    assert served["ready"], served
