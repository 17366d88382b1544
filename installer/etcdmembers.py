"""`remove-node`, `etcd-defrag` and the etcd part of `status` (docs/cluster.md).

remove-node NAME, on a healthy control plane, for a node that is dead or being rebuilt:
drain it if it is Ready, remove its etcd member (a control plane), `kubectl delete node`.
It refuses what would leave etcd without quorum: removing the last healthy member, or a
healthy member whose removal leaves fewer healthy members than the smaller cluster's quorum
(etcd's own check, --strict-reconfig-check, refuses the same with a less helpful message).

etcd-defrag defragments one member at a time (a member blocks its reads and writes while it
defragments), the leader last, checking each is healthy before the next; when a NOSPACE
alarm is raised it first compacts the keyspace to the current revision (defragmenting alone
frees nothing that the history still holds) and disarms the alarm at the end
(https://etcd.io/docs/v3.5/op-guide/maintenance/#space-quota).
"""

import json
from typing import Any, Callable, Dict, List, Optional

from installer.etcdctl import EtcdError, Member
from installer.etcdnode import ADMIN_CONF, EtcdNode, open_node
from installer.format.errors import PreconditionError, StepFailed, UsageError
from installer.host import Host
from installer.runner import Runner

DRAIN_TIMEOUT = "120s"


def _kubectl(node: EtcdNode, *args: str) -> List[str]:
    return ["kubectl", "--kubeconfig", ADMIN_CONF] + list(args)


def _node_ready(node: EtcdNode, name: str) -> Optional[bool]:
    """The Node's Ready condition; None when the cluster has no such Node."""
    done = node.runner.query(_kubectl(node, "get", "node", name, "-o", "json"), timeout=60)
    if done.returncode != 0:
        if "NotFound" in done.stderr or "not found" in done.stderr:
            return None
        raise StepFailed("the apiserver did not answer `kubectl get node {}`: {}".format(
            name, done.stderr.strip()[-300:]),
            hint="remove-node needs a healthy control plane: check `kubectl get nodes`")
    try:
        conditions = json.loads(done.stdout)["status"]["conditions"]
    except (ValueError, KeyError, TypeError):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _quorum(size: int) -> int:
    return size // 2 + 1


def remove_node(root: str, name: str, dry_run: bool, echo: Callable[[str], None]
                ) -> List[str]:
    """remove-node NAME (module doc). Returns what was done (or would be, with dry_run)."""
    node = open_node(root, dry_run=dry_run, echo=echo)
    if name == node.node.name:
        raise UsageError("{} is the node this runs on: remove-node removes another node".format(
            name), hint="run it on another control-plane node: {}".format(", ".join(
                n.name for n in node.cluster.nodes if n.is_control_plane and n.name != name)))
    target = node.cluster.node(name)
    try:
        members = node.etcdctl.members()
    except EtcdError as err:  # `member list` is linearizable: it needs a quorum
        raise PreconditionError(
            "refusing to remove {}: etcd has no quorum or does not answer ({})".format(
                name, err.message.split(": ", 1)[-1][:300]),
            hint="a member can only be removed by a cluster with a quorum: bring members "
                 "back, or restore from a backup (etcd-restore --all-control-planes)")
    member = _member_of(members, name, target.address if target else None)
    ready = _node_ready(node, name)
    if target is None and member is None and ready is None:
        raise UsageError("{} is neither a node of {}, an etcd member nor a Node of the "
                         "cluster".format(name, node.cluster.source),
                         hint="see `kubectl get nodes` for the names")
    changes = []
    if member is not None:
        health = node.etcdctl.healthy([m.client_urls[0] for m in members if m.client_urls])
        healthy = [m for m in members if m.client_urls and health.get(m.client_urls[0])]
        others = [m for m in healthy if m.id != member.id]
        if not others:
            raise PreconditionError(
                "refusing to remove etcd member {} ({}): it is the last healthy member "
                "of {}".format(member.name, member.id, _names(members)),
                hint="bring another control plane back first; to start over from a backup "
                     "use etcd-restore")
        if len(others) < _quorum(len(members) - 1):
            raise PreconditionError(
                "refusing to remove etcd member {} ({}): of the {} members left only {} "
                "would be healthy ({}), fewer than the {} a quorum needs".format(
                    member.name, member.id, len(members) - 1, len(others), _names(others),
                    _quorum(len(members) - 1)),
                hint="bring the unhealthy members back first (`status` lists them)")
    if ready:
        node.runner.run(_kubectl(node, "drain", name, "--ignore-daemonsets",
                                 "--delete-emptydir-data", "--force",
                                 "--timeout=" + DRAIN_TIMEOUT), timeout=300,
                        hint="nothing was removed; drain it by hand or stop the node, then "
                             "run remove-node again")
        changes.append("drained node {}".format(name))
    elif ready is False:
        changes.append("node {} is not Ready: not drained".format(name))
    if member is not None:
        node.etcdctl.ctl(["member", "remove", member.id], readonly=False, timeout=120,
                         hint="the etcd member is still there; see `status`")
        changes.append("removed etcd member {} ({}, {})".format(
            member.name, member.id, ",".join(member.peer_urls)))
    if ready is not None:
        node.runner.run(_kubectl(node, "delete", "node", name), timeout=120)
        changes.append("deleted node {}".format(name))
    return changes


def _member_of(members: List[Member], name: str, address: Optional[str]) -> Optional[Member]:
    """The member named `name` (kubeadm names a member after its node), else the one whose
    peer URL is on the node's address."""
    for member in members:
        if member.name == name:
            return member
    for member in members:
        if address and any("//{}:".format(address) in url for url in member.peer_urls):
            return member
    return None


def _names(members: List[Member]) -> str:
    return ", ".join("{} ({})".format(m.name or "unstarted", m.id) for m in members) or "none"


def defrag(root: str, dry_run: bool, echo: Callable[[str], None]) -> List[str]:
    """etcd-defrag (module doc)."""
    node = open_node(root, dry_run=dry_run, echo=echo)
    members = node.etcdctl.members()
    endpoints = [m.client_urls[0] for m in members if m.client_urls]
    health = node.etcdctl.healthy(endpoints)
    sick = [e for e in endpoints if not health.get(e)]
    if sick:
        raise PreconditionError("etcd members at {} are not healthy: defragmenting now "
                                "could cost the cluster its quorum".format(", ".join(sick)),
                                hint="bring them back, or remove-node a dead one, first")
    before = {s["endpoint"]: s for s in node.etcdctl.statuses(endpoints)}
    alarms = node.etcdctl.alarms()
    nospace = [a for a in alarms if a["alarm"] == "NOSPACE"]
    changes = []
    if nospace:
        revision = max(s["revision"] for s in before.values())
        node.etcdctl.ctl(["compact", str(revision), "--physical"], readonly=False,
                         timeout=600, hint="see `status`; nothing was defragmented yet")
        changes.append("compacted the keyspace to revision {} (NOSPACE alarm)".format(revision))
    order = sorted(endpoints, key=lambda e: bool((before.get(e) or {}).get("leader")))
    for endpoint in order:
        echo("defragmenting {}".format(endpoint))
        node.etcdctl.ctl(["defrag", "--command-timeout=300s"], [endpoint], readonly=False,
                         timeout=600, hint="the members before it are done; run etcd-defrag "
                                           "again once {} is healthy".format(endpoint))
        if not dry_run and not node.etcdctl.healthy([endpoint]).get(endpoint):
            raise StepFailed("etcd at {} is not healthy after its defragmentation".format(
                endpoint), hint="stopped before the next member; see its log")
        after = {s["endpoint"]: s for s in node.etcdctl.statuses([endpoint])}.get(endpoint)
        changes.append("defragmented {}: {} -> {}".format(
            endpoint, _size((before.get(endpoint) or {}).get("db_size")),
            _size((after or {}).get("db_size")) if not dry_run else "?"))
    if nospace:
        node.etcdctl.ctl(["alarm", "disarm"], readonly=False, timeout=60)
        left = [] if dry_run else node.etcdctl.alarms()
        if left:
            raise StepFailed("etcd raised the alarm again: {}".format(
                ", ".join("{} on {}".format(a["alarm"], a["member"]) for a in left)),
                hint="the data itself exceeds etcd's quota (--quota-backend-bytes): delete "
                     "objects, or raise the quota in the etcd manifest")
        changes.append("disarmed the NOSPACE alarm")
    return changes


def _size(value: Any) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return "{:.1f} {}".format(size, unit) if unit != "B" else "{:.0f} B".format(size)
        size /= 1024
    return str(value)


def status_info(root: str) -> Optional[Dict[str, Any]]:
    """For `status` on a control-plane node: every member's DB size and the alarms; None on
    a node without local etcd; {"error": ...} when etcd does not answer."""
    host = Host(root, dry_run=True)
    from installer.etcdctl import ETCD_MANIFEST

    if not host.exists(ETCD_MANIFEST):
        return None
    try:
        node = open_node(root, dry_run=True, runner=Runner(root, dry_run=True))
    except PreconditionError as err:
        return {"error": err.message}
    try:
        members = node.etcdctl.members()
        endpoints = [m.client_urls[0] for m in members if m.client_urls]
        statuses = node.etcdctl.statuses(endpoints)
        alarms = node.etcdctl.alarms()
    except EtcdError:  # the same words on every node: reports are diffed between hosts
        return {"error": "etcd does not answer at {} (see the etcd pod's log, "
                         "`docker ps -a | grep etcd`)".format(node.pod.client_url)}
    except PreconditionError as err:
        return {"error": err.message}
    names = {m.id: m.name for m in members}
    for status in statuses:
        status["name"] = names.get(status["member"], "")
        status["db_size_human"] = _size(status["db_size"])
        status["db_size_in_use_human"] = _size(status["db_size_in_use"])
    answering = {s["endpoint"] for s in statuses}
    return {"members": statuses,
            "not_answering": [e for e in endpoints if e not in answering],
            "alarms": [dict(a, name=names.get(a["member"], "")) for a in alarms]}


def etcd_host_info(root: str) -> Dict[str, Any]:
    """For `status` on an etcd.external host: which one it is and each member's health,
    asked with the healthcheck-client certificate kubeadm's etcd pod probes with (kubeadm's
    guide checks the cluster the same way, "Optional: Check the cluster health")."""
    from installer.etcdctl import PKI, Etcdctl, etcd_pod, runtime_of
    from installer.session import _installed_cluster
    from installer.state import State

    host = Host(root, dry_run=True)
    cluster = _installed_cluster(host)
    name = str(State.load(host).data.get("node") or "")
    if cluster is None:
        return {"etcd_host": name, "error": "no loadable cluster.yaml recorded in state.json"}
    me = next((h for h in cluster.etcd_hosts if h.name == name), None)
    if me is None:
        return {"etcd_host": name, "error": "{} lists no etcd host {}".format(cluster.source,
                                                                           name)}
    try:
        pod = etcd_pod(host, me.name, me.address)
    except PreconditionError as err:
        return {"etcd_host": name, "error": err.message}
    etcdctl = Etcdctl(Runner(root, dry_run=True), pod.image, runtime_of(host), [],
                      (PKI + "/etcd/healthcheck-client.crt", PKI + "/etcd/healthcheck-client.key"))
    health = etcdctl.health(cluster.etcd_endpoints)
    return {"etcd_host": name, "members": [
        {"name": h.name, "endpoint": endpoint, "healthy": not health[endpoint],
         "error": health[endpoint]} for h, endpoint in zip(cluster.etcd_hosts,
                                                           cluster.etcd_endpoints)]}
