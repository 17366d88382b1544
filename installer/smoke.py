"""The smoke check an operator runs first after an install (`status --check`, and at the end of
`install` on the node that completes the cluster): every node of cluster.yaml registered and
Ready, CoreDNS's pods Ready, and flannel running on every node, so that a pod on each node can
reach a pod on every other node over the VXLAN overlay.

It asks the cluster with `kubectl --kubeconfig /etc/kubernetes/admin.conf` (control-plane nodes
only; a worker has no admin credentials):
- `get nodes -o json`: the Ready condition (the kubelet sets it False while the CNI has written
  no config: NetworkPluginNotReady);
- `get pods -A -l k8s-app=kube-dns -o json`: kubeadm's CoreDNS pods (label k8s-app=kube-dns,
  kubeadm phases/addons/dns manifests.go) Ready; CoreDNS's readiness probe is its `ready`
  plugin, Ready only once the kubernetes plugin answers for the cluster zone, i.e. it can
  answer kubernetes.default;
- `get pods -A -l app=flannel -o json`: one Ready kube-flannel pod per node, and per node the
  public IP flannel registered (annotation flannel.alpha.coreos.com/public-ip, flannel
  subnet/kube/kube.go): the VXLAN tunnel endpoints between every pair of nodes.
What it does not do (docs/cluster.md): send a DNS query or a packet between two pods; it reads
the state the kubelet, CoreDNS and flanneld report.
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from installer.runner import Runner

ADMIN_CONF = "/etc/kubernetes/admin.conf"
PUBLIC_IP = "flannel.alpha.coreos.com/public-ip"


class Check(NamedTuple):
    ok: bool
    what: str
    detail: str


def _ready(obj: Dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _message(obj: Dict[str, Any]) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("message"):
            return str(cond["message"])
    return "not Ready"


def _get(runner: Runner, kubeconfig: str, *args: str) -> List[Dict[str, Any]]:
    done = runner.query(["kubectl", "--kubeconfig", kubeconfig, "get"] + list(args)
                        + ["-o", "json"], timeout=60)
    if done.returncode != 0:
        raise RuntimeError("kubectl get {} failed: {}".format(" ".join(args),
                                                             done.stderr.strip()))
    try:
        return list(json.loads(done.stdout).get("items") or [])
    except ValueError:
        raise RuntimeError("kubectl get {} printed no JSON".format(" ".join(args)))


def smoke_check(runner: Runner, kubeconfig: str, expected: Sequence[str] = ()) -> List[Check]:
    """The checks, in the order an operator reads them. `expected`: cluster.yaml's nodes."""
    try:
        nodes = _get(runner, kubeconfig, "nodes")
        dns = _get(runner, kubeconfig, "pods", "-A", "-l", "k8s-app=kube-dns")
        flannel = _get(runner, kubeconfig, "pods", "-A", "-l", "app=flannel")
    except RuntimeError as err:
        return [Check(False, "cluster", str(err))]
    found: List[Check] = []
    names = [n["metadata"]["name"] for n in nodes]
    missing = [n for n in expected if n not in names]
    if missing:
        found.append(Check(False, "nodes", "not registered: {} (install them with --join)"
                           .format(", ".join(missing))))
    for node in nodes:
        name = node["metadata"]["name"]
        found.append(Check(_ready(node), "node " + name,
                           "Ready" if _ready(node) else "NotReady: " + _message(node)))
    if not dns:
        found.append(Check(False, "CoreDNS", "no pod with label k8s-app=kube-dns"))
    for pod in dns:
        where = (pod.get("spec") or {}).get("nodeName", "?")
        found.append(Check(_ready(pod), "CoreDNS on " + where,
                           "Ready: answers for kubernetes.default" if _ready(pod)
                           else _message(pod)))
    found.extend(_pod_network(nodes, flannel))
    return found


def _pod_network(nodes: List[Dict[str, Any]], pods: List[Dict[str, Any]]) -> List[Check]:
    running = {(p.get("spec") or {}).get("nodeName") for p in pods if _ready(p)}
    endpoints: Dict[str, Optional[str]] = {}
    for node in nodes:
        name = node["metadata"]["name"]
        endpoints[name] = ((node["metadata"].get("annotations") or {}).get(PUBLIC_IP)
                           if name in running else None)
    found = []
    for name, address in endpoints.items():
        peers = [p for p, a in endpoints.items() if p != name and a]
        if not address:
            found.append(Check(False, "pod network " + name, "flannel is not running here: "
                               "pods on {} reach no other node".format(name)))
        elif len(endpoints) > 1 and not peers:
            found.append(Check(False, "pod network " + name, "no other node runs flannel"))
        else:
            found.append(Check(True, "pod network " + name, "VXLAN endpoint {}; reaches {}"
                               .format(address, ", ".join(peers) or "(single node)")))
    return found


def render(checks: Sequence[Check]) -> List[str]:
    return ["{} {}: {}".format("ok  " if c.ok else "FAIL", c.what, c.detail) for c in checks]


def cluster_complete(runner: Runner, kubeconfig: str, expected: Sequence[str]) -> bool:
    """Is every node of cluster.yaml registered? (install runs the check on the node that
    completes the cluster.)"""
    try:
        names = {n["metadata"]["name"] for n in _get(runner, kubeconfig, "nodes")}
    except RuntimeError:
        return False
    return bool(expected) and set(expected) <= names
