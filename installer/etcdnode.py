"""The control-plane node an etcd command runs on: its cluster.yaml entry, its etcd pod, the
etcdctl of its etcd image, and the static pods parked and brought back around a restore.
Shared by installer/etcdbackup.py and installer/etcdmembers.py."""

import os
from typing import Any, Callable, List, NamedTuple, Optional

from installer.certs import _wait as wait  # the same bounded poll renew-certs uses
from installer.etcdctl import Etcdctl, EtcdPod, etcd_pod, runtime_of
from installer.format.cluster import Cluster, Node, load_cluster
from installer.format.errors import KubecrateError, PreconditionError, StepFailed
from installer.host import Host
from installer.runner import Runner
from installer.state import STATE_PATH, State
from installer.steps.preflight_cluster import connect

MANIFESTS = "/etc/kubernetes/manifests"
PARKED = "/etc/kubernetes/kubecrate/manifests-restoring"
STATIC_PODS = ("kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml",
               "etcd.yaml")
ADMIN_CONF = "/etc/kubernetes/admin.conf"


class EtcdNode(NamedTuple):
    host: Host
    runner: Runner
    cluster: Cluster
    node: Node
    pod: EtcdPod
    etcdctl: Etcdctl


def open_node(root: str, dry_run: bool = False,
              echo: Optional[Callable[[str], None]] = None,
              runner: Optional[Runner] = None) -> EtcdNode:
    """The installed control-plane node under `root`; PreconditionError (exit 4) anywhere
    else, naming what is missing."""
    host = Host(root, dry_run=dry_run)
    runner = runner or Runner(root, dry_run=dry_run, echo=echo)
    state = State.load(host)
    path, name = state.data.get("cluster"), state.data.get("node")
    cluster = None
    if path and os.path.isfile(str(path)):
        try:
            cluster = load_cluster(str(path))
        except (OSError, ValueError, KubecrateError):
            cluster = None
    node = None
    if cluster is not None and name:  # a node, or an etcd.external host (refused below)
        node = cluster.node(str(name)) or next(
            (h for h in cluster.etcd_hosts if h.name == name), None)
    if cluster is None or node is None:
        raise PreconditionError(
            "{} names no loadable cluster.yaml and node of it (cluster: {}, node: {})".format(
                host.path(STATE_PATH), path or "none", name or "none"),
            hint="run it on a control-plane node that kubecrate installed")
    if cluster.etcd_hosts:  # kubeadm's external topology: no member on a control plane
        raise PreconditionError(
            "{} keeps etcd on the dedicated hosts of etcd.external ({}): the etcd commands act "
            "on the control planes' local etcd, which this cluster does not have".format(
                cluster.source, ", ".join(h.name for h in cluster.etcd_hosts)),
            hint="back up, defragment and change members on the etcd hosts with their own "
                 "etcdctl (kubeadm's external etcd guide); drain and delete a Node with kubectl")
    if not node.is_control_plane:
        raise PreconditionError("{} is a {} in {}: etcd runs on the control-plane nodes".format(
            node.name, node.role, cluster.source),
            hint="run it on a control-plane node: {}".format(", ".join(
                n.name for n in cluster.nodes if n.is_control_plane)))
    pod = etcd_pod(host, node.name, node.address)
    others = ["https://{}:2379".format(n.address) for n in cluster.nodes
              if n.is_control_plane and n.name != node.name]
    return EtcdNode(host, runner, cluster, node, pod,
                    Etcdctl(runner, pod.image, runtime_of(host), [pod.client_url] + others))


def port_open(url: str) -> bool:
    """Whether https://ADDRESS:PORT accepts a connection."""
    hostport = url.split("://", 1)[-1].rstrip("/")
    address, _, port = hostport.rpartition(":")
    return connect(address, int(port), 1.0) == "open"


def park(node: EtcdNode, stop_bound: float) -> List[str]:
    """Move the control-plane static pods' manifests aside, so the kubelet stops them (the
    way kubernetes.io documents stopping static pods), and wait until etcd's client port
    closes. Returns the names parked; on failure they are back in place."""
    host = node.host
    parked = [name for name in STATIC_PODS if host.exists(MANIFESTS + "/" + name)]
    os.makedirs(host.path(PARKED), mode=0o700, exist_ok=True)
    for name in parked:
        os.rename(host.path(MANIFESTS + "/" + name), host.path(PARKED + "/" + name))
    if not wait(lambda: not port_open(node.pod.client_url), stop_bound):
        unpark(node, parked)
        raise StepFailed("the kubelet did not stop etcd within {:.0f}s after its manifest "
                         "left {} ({} still answers)".format(stop_bound, MANIFESTS,
                                                            node.pod.client_url),
                         hint="see `journalctl -u kubelet`; the manifests are back in place "
                              "and nothing was restored")
    return parked


def unpark(node: EtcdNode, parked: List[str]) -> None:
    for name in parked:
        source = node.host.path(PARKED + "/" + name)
        if os.path.exists(source):
            os.rename(source, node.host.path(MANIFESTS + "/" + name))


def drop_parked(node: EtcdNode) -> Any:
    """Remove the empty parking folder (nothing when a manifest is still in it)."""
    try:
        os.rmdir(node.host.path(PARKED))
    except OSError:
        pass
