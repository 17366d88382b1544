"""CoreDNS's forwarder (docs/cluster.md, "CoreDNS's upstream") follows upstream_dns, else the
node's resolv.conf, else none; a loopback-only resolv.conf without upstream_dns fails preflight.
Each rendered Corefile is also judged by the CoreDNS stand-in model
(scripts/mirrorworld/standins/_podnet.py)."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from installer.steps import coredns, run_steps
from tests.unit.installer.test_ha_steps import cluster_steps, make_ctx

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts/mirrorworld/standins"))
import _nodenet  # noqa: E402
import _podnet  # noqa: E402

SITE = "nameserver 192.168.10.53\nsearch example.local\n"
LOOPBACK = "# dnsmasq\nnameserver 127.0.0.1\n"


def _node(nameservers):
    facts = {"interfaces": [], "default_iface": "", "nameservers": nameservers}
    return {"metadata": {"name": "n", "annotations": {_nodenet.ANNOTATION: json.dumps(facts)}}}


@pytest.mark.parametrize("upstream, resolv, kind, forward, level", [
    (("10.1.1.53", "10.1.2.53"), None, coredns.UPSTREAM, "forward . 10.1.1.53 10.1.2.53 {",
     "pass"),
    (("10.1.1.53",), LOOPBACK, coredns.UPSTREAM, "forward . 10.1.1.53 {", "pass"),
    ((), SITE, coredns.RESOLV, "forward . /etc/resolv.conf {", "pass"),
    ((), "search example.local\n", coredns.ZONE_ONLY, None, "warn"),
    ((), None, coredns.ZONE_ONLY, None, "warn"),
    ((), LOOPBACK, coredns.LOOP, None, "fail"),
])
def test_the_forwarder_rule(upstream, resolv, kind, forward, level):
    assert coredns.mode(upstream, resolv)[0] == kind
    finding = coredns.findings(_ctx(upstream, resolv))[0]
    assert finding.level == level, finding
    if kind == coredns.LOOP:
        assert "loop" in finding.message and "upstream_dns" in finding.fix
        return
    text = coredns.corefile(upstream, resolv)
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in text and "loop" in text
    if forward:
        assert forward in text
    else:
        assert "forward" not in text and "cluster zone" in finding.message
    # the CoreDNS stand-in on a node with this resolv.conf: Ready
    served = _podnet.coredns_on(_node(_nodenet_servers(resolv)), text)
    assert served["ready"], served


def test_the_stand_in_refuses_what_real_coredns_refuses():
    default = _podnet.KUBEADM_COREFILE  # kubeadm's `forward . /etc/resolv.conf`
    empty = _podnet.coredns_on(_node([]), default)
    assert not empty["ready"] and "plugin/forward: no nameservers found" in empty["message"]
    loop = _podnet.coredns_on(_node(["127.0.0.1"]), default)
    assert not loop["ready"] and "plugin/loop" in loop["message"]
    assert _podnet.coredns_on(_node(["192.168.10.53"]), default)["ready"]


def test_the_first_node_applies_the_configmap_once(tmp_path):
    ctx = make_ctx(tmp_path, "cp1")
    (tmp_path / "cp1/etc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cp1/etc/resolv.conf").write_text(SITE)
    run_steps(ctx, cluster_steps())
    doc = yaml.safe_load(ctx.host.read_text(coredns.MANIFEST))
    assert (doc["kind"], doc["metadata"]) == ("ConfigMap", {"name": "coredns",
                                                             "namespace": "kube-system"})
    assert "forward . /etc/resolv.conf {" in doc["data"]["Corefile"]
    before = len(ctx.runner.calls)
    assert [r.changes for r in run_steps(ctx, cluster_steps())] == [[], [], []]
    assert not [c for c in ctx.runner.calls[before:] if c[0] == "kubectl"]


def _nodenet_servers(resolv):
    return coredns.nameservers(resolv)


def _ctx(upstream, resolv):
    class Host:
        def read_text(self, path):
            return resolv if path == coredns.RESOLV_CONF else None

    class Ctx:
        host = Host()
        cluster = type("C", (), {"upstream_dns": tuple(upstream)})

    return Ctx()
