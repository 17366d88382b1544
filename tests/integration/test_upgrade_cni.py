"""`upgrade --bundle` re-applies the CNI manifest through the kubectl and apiserver stand-ins
(installer/steps/upgradenet.py): the new bundle's flannel with another image is `configured`,
the same manifest again applies nothing, and one that changes the DaemonSet's spec.selector is
refused as the apiserver refuses it (field is immutable): the upgrade stops naming kubectl's
error, the cluster keeps the DaemonSet it had, and the recorded digest stays, so that a re-run
tries again."""

import hashlib
import json
import os
from types import SimpleNamespace

import pytest

from installer import upgrade
from installer.format.bundleinfo import BundleAddon
from installer.format.cluster import find_node, parse_cluster
from installer.format.errors import StepFailed
from installer.host import Host, Probes
from installer.runner import Runner
from installer.steps import Context, cni, run_steps, upgradenet
from tests.integration.test_mirrorworld_standins import (  # noqa: F401 (fixtures)
    _free_port,
    _init_config,
    hosts,
    tree,
)

pytestmark = pytest.mark.integration

CLUSTER = """\
control_plane: {vip: 10.50.0.100, port: 6443}
networking: {pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}
load_balancer: {mode: external}
nodes:
  - {name: cp1, address: 10.50.0.11, role: control-plane}
"""
FLANNEL = """\
apiVersion: v1
kind: Namespace
metadata: {name: kube-flannel}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds, namespace: kube-flannel}
spec:
  selector:
    matchLabels: {app: flannel}
  template:
    metadata:
      labels: {app: flannel}
    spec:
      containers:
      - name: kube-flannel
        image: docker.io/flannel/flannel:v0.25.7
        args: ["--ip-masq", "--kube-subnet-mgr"]
"""
NEWER = FLANNEL.replace("flannel:v0.25.7", "flannel:v0.26.7")
RELABELLED = NEWER.replace("matchLabels: {app: flannel}", "matchLabels: {k8s-app: flannel}")


def bundle(host, digest, text):
    """A bundle in host's cache that carries `text` as its flannel manifest."""
    source = "addons/flannel/kube-flannel.yml"
    path = host.path("/var/lib/kubecrate/bundles/{}/{}".format(digest, source))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return SimpleNamespace(name="k8s-" + digest[:4], digest=digest, kubernetes_version="v1.31.14",
                           hashes={source: hashlib.sha256(text.encode()).hexdigest()},
                           addons={"flannel": BundleAddon("v1", (), source)})


def context(host, cluster, info):
    env = {"PATH": "{}:{}".format(host.bindir, os.environ["PATH"]),
           "KUBECRATE_STANDIN_TIMEOUT": "20", "KUBECRATE_STANDIN_MAX_LIFETIME": "900"}
    return Context(Host(str(host.root), probes=Probes(str(host.kernel))),
                   Runner(str(host.root), env=env), cluster, find_node(cluster, [], "cp1"),
                   info, "", None)


def daemonset(host):
    done = host.run("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get",
                    "daemonset", "kube-flannel-ds", "-n", "kube-flannel", "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_cni_is_applied_again_only_when_it_changed(hosts, tmp_path):  # noqa: F811
    host = hosts("cni")
    init = host.run("kubeadm", "init", "--config", _init_config(host, _free_port()),
                    "--upload-certs")
    assert init.returncode == 0, init.stdout + init.stderr
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    cluster = parse_cluster(CLUSTER, str(tmp_path / "cluster.yaml"))
    old = bundle(host, "d" * 64, FLANNEL)
    installed = context(host, cluster, old)
    for action in cni.manifest_actions(installed, "addons/flannel/kube-flannel.yml",
                                       FLANNEL.encode()):  # install's cni step
        action.do()
    stamp = host.path(cni.STAMP).read_text()

    def upgrade_cni(text, digest):
        ctx = context(host, cluster, bundle(host, digest, text))
        return ctx, run_steps(ctx, [upgradenet.CniStep(upgrade.Upgrade(ctx, old, None, True))],
                              apply=True)[0]

    _, same = upgrade_cni(FLANNEL, "e" * 64)
    assert same.changes == [] and host.path(cni.STAMP).read_text() == stamp

    _, newer = upgrade_cni(NEWER, "f" * 64)
    assert newer.changes == ["apply addons/flannel/kube-flannel.yml with pod CIDR "
                             "10.244.0.0/16 and FLANNELD_IFACE = each node's status.hostIP"]
    shown = daemonset(host)
    assert shown["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "docker.io/flannel/flannel:v0.26.7"
    stamp = host.path(cni.STAMP).read_text()

    with pytest.raises(StepFailed) as refused:
        upgrade_cni(RELABELLED, "a" * 64)
    message = refused.value.message
    assert 'Error from server (Invalid): error when applying patch to ' \
        'daemonset.apps/kube-flannel-ds for: "/etc/kubernetes/kubecrate/kube-flannel.yml"' \
        in message, message
    assert 'DaemonSet.apps "kube-flannel-ds" is invalid: spec.selector: Invalid value: ' \
        'v1.LabelSelector{MatchLabels:map[string]string{"k8s-app":"flannel"}, ' \
        'MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable' in message
    assert "kubectl delete daemonset NAME -n NAMESPACE" in refused.value.hint
    assert daemonset(host) == shown  # the apiserver kept the DaemonSet it had
    assert host.path(cni.STAMP).read_text() == stamp  # not recorded: a re-run applies it
