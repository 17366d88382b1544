"""The smoke check an operator runs first after an install (`status --check`, and at the end of
`install` on the node that completes the cluster): every node of cluster.yaml registered and
Ready, CoreDNS answers `kubernetes.default`, and each node reaches another node's pod network.

It asks the cluster with `kubectl --kubeconfig /etc/kubernetes/admin.conf` (control-plane nodes
only; a worker has no admin credentials), offline, with nothing but what the bundle carries:
- `get nodes -o json`: the Ready condition (the kubelet sets it False while the CNI has written
  no config: NetworkPluginNotReady) and each node's spec.podCIDR;
- `get pods -A -l k8s-app=kube-dns` (kubeadm's CoreDNS pods, addons/dns manifests.go) and
  `get services -A -l k8s-app=kube-dns` (kubeadm's kube-dns Service and its ClusterIP);
- `get pods -A -l app=flannel`: the kube-flannel pod of each node, to run commands in.
Then it sends real traffic with `kubectl exec` into the kube-flannel container of each node's
pod. Its image (flannel-io/flannel images/Dockerfile) is Alpine, whose busybox carries
`nslookup` and `ping`; the pod has NET_RAW (kube-flannel.yml), so ping works. The pod is
`hostNetwork: true`: the commands run in the node's own network namespace. So:
- DNS, from every node: `nslookup -type=a kubernetes.default.svc.<domain> <kube-dns IP>`. The
  query goes through that node's kube-proxy rules (the ClusterIP) to a Ready CoreDNS pod,
  possibly on another node over flannel, whose kubernetes plugin answers from the apiserver.
  It proves CoreDNS serves the cluster zone and the node reaches it through the Service. It
  does not prove that ordinary pods are told to use it (the kubelet's clusterDNS in their
  resolv.conf), nor that CoreDNS forwards names outside the cluster.
- Pod network, around a ring of the nodes in cluster.yaml's order (each node to the next, the
  last to the first): on node A, `ping -c 1 -W 2 <B's flannel.1 address>` (the network address
  of B's pod CIDR: flanneld's VXLAN backend gives flannel.1 its lease's network address), so
  every node is once the sender and once the receiver. The reply needs A's
  route, neighbour and FDB entries for B's lease, VXLAN (UDP 8472) passing between the nodes'
  public IPs, and B's flannel.1 up: i.e. flanneld running on both and the underlay letting
  VXLAN through. It proves node A reaches B's pod network; it does not send from inside a
  pod's own namespace (a pod's veth, the cni0 bridge, the FORWARD rules for pod traffic), nor
  probe the MTU with full-size packets. The bundle carries no image that runs a shell on the
  pod network (CoreDNS's is FROM scratch, pause has no commands), so a pod-to-pod probe would
  need an extra image in the bundle.
With calico (no kube-flannel pod; `get pods -A -l k8s-app=calico-node` instead) the commands
run in the calico-node container of each node's pod, also `hostNetwork: true`. Its image
(calico node/Dockerfile.amd64) installs iputils but no DNS client, so:
- DNS is not queried from the nodes; the CoreDNS pods' readiness above is what is checked;
- the ring pings B's vxlan.calico address, which calico-node on B records on B's Node as the
  annotation projectcalico.org/IPv4VXLANTunnelAddr (libcalico-go lib/backend/k8s/conversion,
  KDD node annotations): the reply needs calico-node running on both, VXLAN (UDP 4789)
  between the addresses calico autodetected (the nodes' InternalIPs), and B's device up.
"""

import ipaddress
import json
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from installer.runner import Result, Runner
from installer.steps import calico

ADMIN_CONF = "/etc/kubernetes/admin.conf"
PUBLIC_IP = "flannel.alpha.coreos.com/public-ip"
FLANNEL_CONTAINER = "kube-flannel"
DNS_NAME = "kubernetes.default.svc."
EXEC_TIMEOUT = 30


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


def smoke_check(runner: Runner, kubeconfig: str, expected: Sequence[str] = (),
                domain: str = "cluster.local") -> List[Check]:
    """The checks, in the order an operator reads them. `expected`: cluster.yaml's nodes;
    `domain`: the cluster's DNS domain (kubeadm networking.dnsDomain)."""
    try:
        nodes = _get(runner, kubeconfig, "nodes")
        dns = _get(runner, kubeconfig, "pods", "-A", "-l", "k8s-app=kube-dns")
        flannel = _get(runner, kubeconfig, "pods", "-A", "-l", "app=flannel")
        calico_pods = [] if flannel else _get(runner, kubeconfig, "pods", "-A", "-l",
                                              calico.NODE_LABEL)
        services = _get(runner, kubeconfig, "services", "-A", "-l", "k8s-app=kube-dns")
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
                           "Ready" if _ready(pod) else _message(pod)))
    if calico_pods:
        probe = _Probe(runner, kubeconfig, calico_pods, calico.NODE_CONTAINER, "kube-system")
        found.append(Check(True, "DNS", "not asked from the nodes: calico/node carries no DNS "
                           "client; the CoreDNS pods' readiness is checked above"))
    else:
        probe = _Probe(runner, kubeconfig, flannel)
        found.extend(_dns(probe, names, services, domain))
    order = {name: i for i, name in enumerate(expected)}  # the ring in cluster.yaml's order
    ring = sorted(nodes, key=lambda n: order.get(n["metadata"]["name"], len(order)))
    found.extend(_ring(probe, ring, _calico_peer if calico_pods else _flannel_peer))
    return found


class _Probe:
    """`kubectl exec` into the CNI's container on a node (kube-flannel, or calico-node)."""

    def __init__(self, runner: Runner, kubeconfig: str, pods: List[Dict[str, Any]],
                 container: str = FLANNEL_CONTAINER, namespace: str = "kube-flannel"):
        self.runner = runner
        self.kubeconfig = kubeconfig
        self.pods = {(p.get("spec") or {}).get("nodeName"): p for p in pods}
        self.container = container
        self.namespace = namespace

    def run(self, node: str, argv: List[str]) -> Tuple[bool, str, Optional[Result]]:
        """(exit status 0, what went wrong or the output, the result) of `argv` on `node`."""
        pod = self.pods.get(node)
        if pod is None:
            return False, "no {} pod on {} to run {} in".format(self.container, node,
                                                                argv[0]), None
        meta = pod["metadata"]
        done = self.runner.query(
            ["kubectl", "--kubeconfig", self.kubeconfig, "exec", "-n",
             meta.get("namespace", self.namespace), meta["name"], "-c", self.container,
             "--"] + argv, timeout=EXEC_TIMEOUT)
        return done.returncode == 0, _summary(done), done


def _summary(done: Result) -> str:
    """The line that says why: kubectl's or the runtime's refusal, else the command's last."""
    errors = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()
              and not line.startswith("command terminated with exit code")]
    out = [line.strip() for line in (done.stdout or "").splitlines() if line.strip()]
    if errors:
        return errors[0]
    return out[-1] if out else "exit code {}".format(done.returncode)


def _dns(probe: _Probe, names: List[str], services: List[Dict[str, Any]],
         domain: str) -> List[Check]:
    """From every node: CoreDNS answers kubernetes.default through the kube-dns Service."""
    address = next(((s.get("spec") or {}).get("clusterIP") for s in services
                    if s["metadata"].get("name") == "kube-dns"), None)
    if not address:
        return [Check(False, "DNS", "no kube-dns Service in kube-system (kubeadm's CoreDNS "
                      "addon): nothing to ask")]
    name = DNS_NAME + domain.strip(".")
    found = []
    for node in names:
        ok, said, done = probe.run(node, ["nslookup", "-type=a", name, address])
        answer = _answer(done.stdout if done else "", name) if ok else None
        if answer:
            found.append(Check(True, "DNS from " + node, "CoreDNS answers kubernetes.default: "
                               "{} (asked kube-dns {})".format(answer, address)))
        else:
            found.append(Check(False, "DNS from " + node, "no answer for {} from kube-dns {}: "
                               "{}".format(name, address, said)))
    return found


def _answer(output: str, name: str) -> Optional[str]:
    """The address after `Name: <name>` in busybox nslookup's output."""
    lines = [line.split() for line in output.splitlines()]
    for i, words in enumerate(lines):
        if words[:2] == ["Name:", name] and i + 1 < len(lines) and lines[i + 1][:1] == \
                ["Address:"] and len(lines[i + 1]) > 1:
            return lines[i + 1][1]
    return None


def _ring(probe: _Probe, nodes: List[Dict[str, Any]],
          one: Callable[[_Probe, str, Dict[str, Any], str], Check]) -> List[Check]:
    """Around a ring of the nodes: `one` checks each node against the next one."""
    names = [n["metadata"]["name"] for n in nodes]
    if len(names) < 2:
        return [Check(True, "pod network", "a single node: no other node to reach")]
    return [one(probe, name, nodes[(i + 1) % len(nodes)], "pod network {} -> {}".format(
        name, nodes[(i + 1) % len(nodes)]["metadata"]["name"])) for i, name in enumerate(names)]


def _flannel_peer(probe: _Probe, name: str, peer: Dict[str, Any], what: str) -> Check:
    """Node `name` pings `peer`'s flannel.1 address."""
    cidr = (peer.get("spec") or {}).get("podCIDR")
    if not cidr:
        return Check(False, what, "{} has no pod CIDR (spec.podCIDR): kubeadm's podSubnet must "
                     "be set so that kube-controller-manager allocates one".format(
                         peer["metadata"]["name"]))
    target = str(ipaddress.ip_network(cidr, strict=False).network_address)
    ok, said, _done = probe.run(name, ["ping", "-c", "1", "-W", "2", target])
    over = (peer["metadata"].get("annotations") or {}).get(PUBLIC_IP)
    if ok:
        return Check(True, what, "{}'s flannel.1 {} answers{}".format(
            peer["metadata"]["name"], target, " (VXLAN to {})".format(over) if over else ""))
    return Check(False, what, "{}'s flannel.1 {} does not answer: {} (flanneld on both nodes: "
                 "kubectl -n kube-flannel logs; VXLAN is UDP 8472 between them)".format(
                     peer["metadata"]["name"], target, said))


def _calico_peer(probe: _Probe, name: str, peer: Dict[str, Any], what: str) -> Check:
    """Node `name` pings `peer`'s vxlan.calico address."""
    other = peer["metadata"]["name"]
    target = (peer["metadata"].get("annotations") or {}).get(calico.TUNNEL_ADDR)
    if not target:
        return Check(False, what, "{} has no {} annotation: calico-node has not come up there "
                     "(kubectl -n kube-system logs -c calico-node on its calico-node "
                     "pod)".format(other, calico.TUNNEL_ADDR))
    ok, said, _done = probe.run(name, ["ping", "-c", "1", "-W", "2", target])
    if ok:
        return Check(True, what, "{}'s vxlan.calico {} answers".format(other, target))
    return Check(False, what, "{}'s vxlan.calico {} does not answer: {} (calico-node on both "
                 "nodes; VXLAN is UDP 4789 between them)".format(other, target, said))


def render(checks: Sequence[Check]) -> List[str]:
    return ["{} {}: {}".format("ok  " if c.ok else "FAIL", c.what, c.detail) for c in checks]


def failed(checks_or_lines: Sequence[str]) -> List[str]:
    """The rendered lines of the checks that failed."""
    return [line for line in checks_or_lines if line.startswith("FAIL")]


def cluster_complete(runner: Runner, kubeconfig: str, expected: Sequence[str]) -> bool:
    """Is every node of cluster.yaml registered? (install runs the check on the node that
    completes the cluster.)"""
    try:
        names = {n["metadata"]["name"] for n in _get(runner, kubeconfig, "nodes")}
    except RuntimeError:
        return False
    return bool(expected) and set(expected) <= names
