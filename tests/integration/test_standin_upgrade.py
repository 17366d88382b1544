"""`kubeadm upgrade plan|apply|node`, `kubectl drain|uncordon` and the kubelet's reported version
in the stand-ins (docs/testing.md): a one-node v1.30.14 cluster on containerd is refused what
kubeadm refuses (a kubeadm older than the target, two minors at once, a downgrade of two minors,
NotReady control planes, a missing etcd member, images the runtime lacks, no confirmation),
then upgraded to v1.31.14: the apiserver answers as v1.31.14, kubeadm-config records it, and
after the 1.31 kubelet replaces the 1.30 one the Node says v1.31.14.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from lab.hostruntime import seed_images
from mirrorworld.releases import STANDINS

from installer.render import render
from tests.integration.test_mirrorworld_standins import (  # noqa: F401 (fixtures)
    FLANNEL,
    _free_port,
    _init_config,
    hosts,
    tree,
)

pytestmark = pytest.mark.integration

CONTAINERD = "unix:///run/containerd/containerd.sock"
ADMIN = ("--kubeconfig", "/etc/kubernetes/admin.conf")


def _images(version, pause, etcd, coredns):
    return ["registry.k8s.io/%s:%s" % (name, version) for name in (
        "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")] + [
        "registry.k8s.io/pause:" + pause, "registry.k8s.io/etcd:" + etcd,
        "registry.k8s.io/coredns/coredns:" + coredns]


V130 = _images("v1.30.14", "3.9", "3.5.15-0", "v1.11.3")
V131 = _images("v1.31.14", "3.10", "3.5.15-0", "v1.11.3")
FLANNEL_IMAGE = "docker.io/flannel/flannel:v0.22.3"


def _binary(tree, version, tool):  # noqa: F811
    return str(tree["www"] / tree["paths"]["kubernetes"][version] / "bin/linux/amd64" / tool)


def _nodes(host) -> dict:
    done = host.run("kubectl", *ADMIN, "get", "nodes")
    assert done.returncode == 0, done.stderr
    return {row.split()[0]: row.split() for row in done.stdout.splitlines()[1:]}


def _state_call(host, method, body=None):
    """/kubecrate/v1/state of the host's apiserver stand-in as its admin (the route the
    apiservers replicate through; the member list plays etcd's)."""
    script = ("import json, sys; sys.path.insert(0, %r); import _kubeadm_init as k; "
              "body = json.loads(sys.stdin.read() or 'null'); "
              "print(json.dumps(k.Admin().call(%r, '/kubecrate/v1/state', body)))"
              % (str(STANDINS), method))
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(body),
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, KUBECRATE_ROOT=str(host.root)))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _members(host, change=None) -> dict:
    """The member list; `change(members)` edits it and the edit is written back."""
    state = _state_call(host, "GET")
    if change is not None:
        change(state["members"])
        _state_call(host, "PUT", state)
    return {k: v for k, v in state["members"].items() if not v.get("deleted")}


def test_upgrade_refusals_then_one_minor(hosts, tree):  # noqa: F811
    host = hosts("up")
    for tool in ("kubeadm", "kubelet", "kubectl"):  # the 1.30 packages' binaries
        target = host.path("/usr/bin/" + tool)
        shutil.copy2(_binary(tree, "v1.30.14", tool), target)
    host.path("/usr/bin/crictl").symlink_to(tree["bin"] / "crictl")  # cri-tools
    host.path("/etc/containerd").mkdir(parents=True)
    host.path("/etc/containerd/config.toml").write_text(render(
        "containerd-config.toml.j2", pause_image="registry.k8s.io/pause:3.9", mirrors=[],
        insecure=[]))
    units = host.path("/run/kubecrate-standin/units")
    units.mkdir(parents=True)
    (units / "containerd.json").write_text('{"active": true}')
    # and flannel's, which FLANNEL runs on the node: a kubelet that cannot pull it reports
    # it missing, and the node goes NotReady (standins/_pulls.py)
    seed_images(host.root, V130 + [FLANNEL_IMAGE], runtime="containerd")
    kubeadm130, kubeadm131 = str(host.path("/usr/bin/kubeadm")), \
        _binary(tree, "v1.31.14", "kubeadm")
    init = host.run(kubeadm130, "init", "--config",
                    _init_config(host, _free_port(), cri=CONTAINERD, version="v1.30.14"))
    assert init.returncode == 0, init.stdout + init.stderr
    manifest = host.root / "flannel.yaml"
    manifest.write_text(FLANNEL)
    assert host.run("kubectl", *ADMIN, "apply", "-f", str(manifest)).returncode == 0
    assert _nodes(host)["cp1"][1] == "Ready"

    def upgrade(kubeadm, *args, stdin=None):
        return host.run(kubeadm, "upgrade", *args, stdin=stdin, timeout=120)

    # kubeadm 1.30 cannot take the cluster to 1.31 (policy.go: the kubeadm minor skew)
    older = upgrade(kubeadm130, "apply", "v1.31.14", "-y")
    assert older.returncode == 1
    assert 'Specified version to upgrade to "v1.31.14" is at least one minor release higher ' \
           "than the kubeadm minor release (31 > 30). Such an upgrade is not supported" \
        in older.stderr, older.stderr
    # two minors at once: refused whatever kubeadm (the 1.33 one here)
    skip = upgrade(_binary(tree, "v1.33.7", "kubeadm"), "apply", "v1.33.7", "-y", "--force")
    assert skip.returncode == 1
    assert 'Specified version to upgrade to "v1.33.7" is too high; kubeadm can upgrade only 1 ' \
           "minor version at a time" in skip.stderr, skip.stderr
    # kubeadm 1.31 asked for a 1.30 patch: skippable only with --force
    patch = upgrade(kubeadm131, "apply", "v1.30.14", "-y")
    assert patch.returncode == 1 and "Kubeadm version v1.31.14 can only be used to upgrade " \
        "to Kubernetes version 1.31" in patch.stderr and "--force" in patch.stderr
    # no answer to the prompt
    unconfirmed = upgrade(kubeadm131, "apply", "v1.31.14", stdin="")
    assert unconfirmed.returncode == 1 and "won't proceed" in unconfirmed.stderr
    # offline, the target's images must be in the runtime already
    no_images = upgrade(kubeadm131, "apply", "v1.31.14", "-y")
    assert no_images.returncode == 1
    assert "[ERROR ImagePull]: failed to pull image registry.k8s.io/kube-apiserver:v1.31.14" \
        in no_images.stderr, no_images.stderr
    seed_images(host.root, V131, runtime="containerd")
    # an etcd member gone
    endpoint = next(iter(_members(host)))
    saved = dict(_members(host)[endpoint])
    _members(host, lambda m: m.update({endpoint: {"deleted": True, "rv": [time.time(), "t"]}}))
    unhealthy = upgrade(kubeadm131, "apply", "v1.31.14", "-y")
    assert unhealthy.returncode == 1
    assert "etcd cluster is not healthy: failed to dial endpoint https://127.0.0.1:2379" \
        in unhealthy.stderr, unhealthy.stderr
    pods = host.run("kubectl", *ADMIN, "get", "pods", "-n", "kube-system", "-l",
                    "component=etcd", "-o", "name")
    assert pods.stdout.split() == []
    _members(host, lambda m: m.update({endpoint: dict(saved, rv=[time.time(), "u"])}))
    pods = host.run("kubectl", *ADMIN, "get", "pods", "-n", "kube-system", "-l",
                    "component=etcd", "-o", "name")
    assert pods.stdout.split() == ["pod/etcd-cp1"]
    # a NotReady control plane (flannel gone: the node's network is not ready)
    objects = host.root / "no-flannel.yaml"
    objects.write_text(FLANNEL.replace("--iface=lo", "--iface=nosuch0"))
    assert host.run("kubectl", *ADMIN, "apply", "-f", str(objects)).returncode == 0
    not_ready = upgrade(kubeadm131, "plan")
    assert not_ready.returncode == 1
    assert "[ERROR ControlPlaneNodesReady]: there are NotReady control-planes in the " \
           "cluster: [cp1]" in not_ready.stderr, not_ready.stdout + not_ready.stderr
    assert host.run("kubectl", *ADMIN, "apply", "-f", str(manifest)).returncode == 0

    plan = upgrade(kubeadm131, "plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "[upgrade/versions] Cluster version: v1.30.14" in plan.stdout
    assert "kubeadm upgrade apply v1.31.14" in plan.stdout
    assert "pause" not in plan.stdout or "3.10" in plan.stdout

    drain = host.run("kubectl", *ADMIN, "drain", "cp1")
    assert drain.returncode == 1 and "cannot delete DaemonSet-managed Pods (use " \
        "--ignore-daemonsets to ignore)" in drain.stderr
    drain = host.run("kubectl", *ADMIN, "drain", "cp1", "--ignore-daemonsets")
    assert drain.returncode == 0 and "node/cp1 drained" in drain.stdout
    assert _nodes(host)["cp1"][1] == "Ready,SchedulingDisabled"

    applied = upgrade(kubeadm131, "apply", "v1.31.14", "-y")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert '[upgrade] SUCCESS! A control plane node of your cluster was upgraded to "v1.31.14"' \
        in applied.stdout
    assert "image: registry.k8s.io/kube-apiserver:v1.31.14" in \
        host.path("/etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    stored = _state_call(host, "GET")["configmaps"]["kube-system/kubeadm-config"]["value"]
    assert json.loads(stored["data"]["ClusterConfiguration"])["kubernetesVersion"] == \
        "v1.31.14"
    # a downgrade of two minors is refused; kubeadm 1.30 cannot `upgrade node` a 1.31 cluster
    down = upgrade(kubeadm131, "apply", "v1.29.10", "-y", "--force")
    assert down.returncode == 1 and 'Specified version to downgrade to "v1.29.10" is too low' \
        in down.stderr
    behind = upgrade(kubeadm130, "node")
    assert behind.returncode == 1 and "(31 > 30)" in behind.stderr
    again = upgrade(kubeadm131, "node")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kube-apiserver are equal, skipping" in again.stdout

    # the 1.31 kubelet replaces the 1.30 one: the Node reports it
    assert _nodes(host)["cp1"][4] == "v1.30.14"
    shutil.copy2(_binary(tree, "v1.31.14", "kubelet"), host.path("/usr/bin/kubelet"))
    assert host.run("systemctl", "restart", "kubelet").returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _nodes(host)["cp1"][4] != "v1.31.14":
        time.sleep(0.5)
    assert _nodes(host)["cp1"][4] == "v1.31.14"
    uncordon = host.run("kubectl", *ADMIN, "uncordon", "cp1")
    assert uncordon.returncode == 0 and "node/cp1 uncordoned" in uncordon.stdout
    assert _nodes(host)["cp1"][1] == "Ready"
