"""The kubelet stand-in's pulls (scripts/mirrorworld/standins/_pulls.py): the images of the pods
every node runs (each DaemonSet's, init containers included, and kubeadm's kube-proxy of the
ClusterConfiguration), pulled only where the runtime lacks them, failures logged once and
retried."""

import json

import pytest
from mirrorworld.releases import STANDINS

FLANNEL_DS = {"kind": "DaemonSet", "spec": {"template": {"spec": {
    "initContainers": [{"image": "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2"},
                       {"image": "docker.io/flannel/flannel:v0.25.7"}],
    "containers": [{"image": "docker.io/flannel/flannel:v0.25.7",
                    "command": ["/opt/bin/flanneld"], "args": ["--kube-subnet-mgr"]}]}}}}
COREDNS = {"kind": "Deployment", "spec": {"template": {"spec": {
    "containers": [{"image": "registry.k8s.io/coredns/coredns:v1.11.3"}]}}}}
CLUSTER = {"imageRepository": "registry.k8s.io", "kubernetesVersion": "v1.30.14"}


@pytest.fixture
def pulls(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDINS))
    import _pulls

    monkeypatch.setattr(_pulls, "PULL_EVERY", 0.0)
    return _pulls


def _call(method, path):
    assert method == "GET"
    if path == "/kubecrate/v1/objects":
        return {"items": [COREDNS, FLANNEL_DS]}
    return {"data": {"ClusterConfiguration": json.dumps(CLUSTER)}}


def test_every_daemonset_image_and_kube_proxy_are_wanted_but_no_deployments(pulls):
    assert pulls.wanted(_call) == ["registry.k8s.io/kube-proxy:v1.30.14",
                                   "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2",
                                   "docker.io/flannel/flannel:v0.25.7"]


def test_only_missing_images_are_pulled_and_a_failure_is_retried(pulls):
    have = {"docker.io/flannel/flannel:v0.25.7"}
    asked, logged = [], []
    answers = {"registry.k8s.io/kube-proxy:v1.30.14": [(False, "no such host"), (True, "ok")],
               "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2": [(True, "ok")]}

    def pull(image):
        asked.append(image)
        return answers[image].pop(0)

    state, reports = pulls.Pulls(), []
    for _ in range(3):
        state.step(_call, have.__contains__, pull, logged.append, reports.append)
    assert asked == ["registry.k8s.io/kube-proxy:v1.30.14",
                     "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2",
                     "registry.k8s.io/kube-proxy:v1.30.14"]
    assert logged == [
        'Failed to pull image "registry.k8s.io/kube-proxy:v1.30.14": no such host',
        'Successfully pulled image "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2": ok',
        'Successfully pulled image "registry.k8s.io/kube-proxy:v1.30.14": ok']
    # what the node lacks, each time that changed: the Node's annotation
    assert reports == [["registry.k8s.io/kube-proxy:v1.30.14"], []]


def test_a_node_lacking_flannels_image_is_not_ready(pulls, monkeypatch):
    import _nodenet
    import _podnet

    monkeypatch.setattr(_nodenet, "read", lambda node: None)  # judged before the interfaces
    node = {"metadata": {"name": "w1", "annotations": {pulls.ANNOTATION: json.dumps(
        ["docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2"])}}}
    flannel = _podnet.flannel_on(node, [FLANNEL_DS])
    assert flannel == {"running": False, "message": "kube-flannel: ImagePullBackOff: Back-off "
                       'pulling image "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2"'}
    node["metadata"]["annotations"][pulls.ANNOTATION] = "[]"  # pulled since
    assert "ImagePullBackOff" not in _podnet.flannel_on(node, [FLANNEL_DS])["message"]
