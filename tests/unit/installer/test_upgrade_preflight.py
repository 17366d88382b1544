"""`upgrade --bundle`'s preflight (installer/upgrade.py) refuses, before anything changes, a
downgrade, a skip of more than one minor without the releases in between, a bundle for another
OS/release/arch/runtime, a NotReady node, a control plane without its etcd member, a node out
of turn and a worker drain without admin credentials."""

import json
from types import SimpleNamespace

import pytest

from installer import upgrade
from installer.format.bundleinfo import BundleAddon, BundleInfo
from installer.runner import Result
from installer.steps import calico
from installer.steps import cni as cni_step
from installer.steps.loadbalancer import ADMIN_CONF, KUBELET_CONF
from installer.steps.preflight import FAIL, PASS


def info(version="v1.30.14", os="rocky", release="9.4", arch="x86_64", runtime="containerd",
         name="k8s-1.30-el9-containerd", cnis=("flannel",)):
    addons = {cni: BundleAddon("v1", (), "addons/{0}/{0}.yaml".format(cni)) for cni in cnis}
    return BundleInfo(name, "d" * 64 if version == "v1.30.14" else "e" * 64, os, release, arch,
                      version, runtime, {}, (), None, "images/images.tar", "repo", (), (), {},
                      addons=addons)


def node(name, version="v1.30.14", ready=True, control_plane=True):
    labels = {upgrade.CP_LABEL: ""} if control_plane else {}
    return {"metadata": {"name": name, "labels": labels},
            "status": {"nodeInfo": {"kubeletVersion": version},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def etcd_pod(name):
    return {"metadata": {"name": "etcd-" + name}, "spec": {"nodeName": name},
            "status": {"phase": "Running"}}


class FakeRunner:
    dry_run = False

    def __init__(self, nodes, pods):
        self.nodes, self.pods = nodes, pods

    def query(self, argv, timeout=120.0):
        items = self.nodes if "nodes" in argv else self.pods
        return Result(list(argv), 0, json.dumps({"items": items}), "")


def up(new, nodes, pods, name="cp1", role="control-plane", admin=True, drain=True, cni="",
       applied=cni_step.MANIFEST, old=None):
    """An upgrade of `name` to bundle `new`: cluster.yaml's networking.cni `cni`, the CNI
    manifest install `applied` (kept on the first control plane)."""
    files = {ADMIN_CONF, KUBELET_CONF} if admin else set()
    files |= {applied} if name == "cp1" else set()
    host = SimpleNamespace(exists=lambda path: path in files, path=lambda path: "/r" + path)
    peers = [SimpleNamespace(name="cp1"), SimpleNamespace(name="cp2")]
    cluster = SimpleNamespace(source="/etc/kubecrate/cluster.yaml", cni=cni,
                              load_balancer=SimpleNamespace(
                                  peers=peers, is_first=lambda n: n == "cp1", mode="services"))
    ctx = SimpleNamespace(info=new, host=host, runner=FakeRunner(nodes, pods), cluster=cluster,
                          node=SimpleNamespace(name=name, role=role,
                                               is_control_plane=role == "control-plane"))
    return upgrade.Upgrade(ctx, old or info(), None, drain)


HEALTHY = [node("cp1"), node("cp2"), node("w1", control_plane=False)]
PODS = [etcd_pod("cp1"), etcd_pod("cp2")]


def failures(found):
    out = {}
    for f in found:
        if f.level == FAIL:
            out[f.check] = (out.get(f.check, "") + "; " + f.message).lstrip("; ")
    return out


def test_one_minor_on_a_healthy_cluster_passes():
    found = up(info("v1.31.14", name="k8s-1.31-el9-containerd"), HEALTHY, PODS).findings(False)
    assert not failures(found)
    assert {f.check for f in found if f.level == PASS} >= {"version", "nodes", "etcd"}


@pytest.mark.parametrize("new, check, words", [
    (info("v1.33.7", name="k8s-1.33"), "version", "no intermediate releases"),
    (info("v1.29.10", name="k8s-1.29"), "version", "kubecrate does not downgrade"),
    (info("v1.31.14", arch="aarch64"), "bundle", "is for arch aarch64 but cp1 runs arch x86_64"),
    (info("v1.31.14", runtime="docker"), "bundle", "runtime docker"),
    (info("v1.31.14", os="centos", release="8.5"), "bundle", "is for OS centos"),
])
def test_bundle_refusals(new, check, words):
    found = failures(up(new, HEALTHY, PODS).findings(False))
    assert words in found[check], found


def test_skip_names_every_minor_in_between():
    found = failures(up(info("v1.33.7"), HEALTHY, PODS).findings(False))
    assert "(1.30 -> 1.31 -> 1.32 -> 1.33)" in found["version"]


def test_unhealthy_cluster_refusals():
    new = info("v1.31.14")
    found = failures(up(new, [node("cp1"), node("cp2", ready=False)], PODS).findings(False))
    assert found["nodes"] == "node(s) NotReady: cp2"
    found = failures(up(new, HEALTHY, PODS[:1]).findings(False))
    assert "control plane(s) cp2 have no running etcd member" in found["etcd"]
    # resuming: this node's own NotReady (its kubelet was mid-restart) is not held against it
    assert "nodes" not in failures(up(new, [node("cp1", ready=False), node("cp2")],
                                      PODS).findings(True))


def test_order_and_drain_credentials():
    new = info("v1.31.14")
    found = failures(up(new, HEALTHY, PODS, name="cp2").findings(False))
    assert "cp1 still run(s) an older release than v1.31.14" in found["order"]
    done = [node("cp1", "v1.31.14"), node("cp2", "v1.31.14"), node("w1", control_plane=False)]
    found = failures(up(new, done, PODS, name="w1", role="worker", admin=False).findings(False))
    assert "needs cluster-admin credentials" in found["drain"]
    assert "order" not in found
    assert not failures(up(new, done, PODS, name="w1", role="worker", admin=False,
                           drain=False).findings(False))
    early = failures(up(new, HEALTHY, PODS, name="w1", role="worker").findings(False))
    assert "cp1, cp2 still run(s)" in early["order"]


def test_the_first_control_plane_takes_the_next_minor_only_after_every_node():
    """A multi-minor walk (installer/upgradepath.py): cp1 at v1.31 may not take v1.32 while a
    node still runs v1.30 (two apiservers two minors apart), and may once they all run 1.31."""
    old, new = info("v1.31.14", name="k8s-1.31"), info("v1.32.9", name="k8s-1.32")
    behind = [node("cp1", "v1.31.14"), node("cp2"), node("w1", control_plane=False)]
    found = failures(up(new, behind, PODS, old=old).findings(False))
    assert found["order"] == "cp2, w1 still run(s) a release older than v1.31.14"
    caught_up = [node(n, "v1.31.14", control_plane=n != "w1") for n in ("cp1", "cp2", "w1")]
    assert not failures(up(new, caught_up, PODS, old=old).findings(False))


def test_the_cluster_keeps_its_cni():
    """The first control plane re-applies the CNI it runs from the new bundle (upgradenet):
    a bundle without it, or a cluster.yaml that would now choose another, is refused before
    anything changes."""
    new = info("v1.31.14", cnis=("flannel", "calico"))
    found = up(new, HEALTHY, PODS)
    assert not failures(found.findings(False))
    assert "bundle k8s-1.30-el9-containerd carries the flannel manifest" in [
        f.message for f in found.findings(False) if f.check == "cni"]
    only_calico = info("v1.31.14", cnis=("calico",))
    found = failures(up(only_calico, HEALTHY, PODS, cni="flannel").findings(False))
    assert "networking.cni: flannel, but bundle k8s-1.30-el9-containerd carries no flannel " \
        "manifest" in found["cni"], found
    # cluster.yaml naming none: flannel by default, the bundle's only CNI otherwise
    found = failures(up(only_calico, HEALTHY, PODS).findings(False))
    assert found["cni"] == "the cluster runs flannel (applied from {}), but " \
        "/etc/kubecrate/cluster.yaml with bundle k8s-1.30-el9-containerd chooses calico: an " \
        "upgrade does not switch the cluster's CNI".format(cni_step.MANIFEST)
    found = failures(up(new, HEALTHY, PODS, applied=calico.MANIFEST).findings(False))
    assert "the cluster runs calico" in found["cni"]
    assert not failures(up(new, HEALTHY, PODS, cni="calico", applied=calico.MANIFEST)
                        .findings(False))
    # only the first control plane applies it
    assert "cni" not in failures(up(info("v1.31.14", cnis=("calico",)), HEALTHY, PODS,
                                    name="cp2").findings(False))
