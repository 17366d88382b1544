"""`kubectl exec` into the pods of the per-node model (_podnet.py): which commands an image
holds, and what busybox `nslookup` and `ping` print when run in a kube-flannel pod.

Images (what `exec` finds on $PATH; anything else is the runtime's "executable file not found"):
- docker.io/flannel/flannel (flannel-io/flannel images/Dockerfile): the final stage is `FROM
  alpine:...` plus `apk add iproute2 ca-certificates iptables strongswan` (and wireguard-tools),
  ENTRYPOINT /opt/bin/flanneld. Alpine's base image is busybox (package `busybox`, whose applets
  include sh, nslookup, ping and wget); iproute2 replaces busybox's `ip`.
- registry.k8s.io/coredns/coredns (coredns/coredns Dockerfile): `FROM scratch`, the /coredns
  binary and CA certificates only: no shell, no nslookup.
- docker.io/flannel/flannel-cni-plugin (flannel-io/cni-plugin Dockerfile): `FROM alpine`, only
  an init container here (never running when the smoke check execs).

The kube-flannel pod is `hostNetwork: true` (Documentation/kube-flannel.yml), so a command in
it runs in the node's network namespace: what it shows is the node's view, not a pod's.

ping (busybox networking/ping.c; `-c 1 -W 2 ADDR`): the node's routes decide.
- flanneld's VXLAN backend gives flannel.1 its lease's network address as a /32 (flannel
  backend/vxlan/vxlan.go RegisterNetwork: `dev.Configure(ip.IP4Net{IP: lease.Subnet.IP,
  PrefixLen: 32}, ...)`), so `<node's podCIDR>.0` answers on every node whose flanneld runs;
- for every other node's lease flanneld adds the neighbour (ARP), the FDB entry (VTEP MAC ->
  public IP) and the route `<subnet> via <subnet>.0 dev flannel.1 onlink` (flannel
  backend/vxlan/vxlan_network.go handleSubnetEvents). A lease exists only for a node whose
  flanneld runs (kube subnet manager: subnet/kube/kube.go AcquireLease writes the node's
  flannel.alpha.coreos.com/* annotations). So node A reaches node B's flannel.1 only when both
  flanneld run; otherwise A has no route for B's subnet: with a default route the packet goes
  to the gateway and is lost (100% packet loss), without one `sendto: Network unreachable`.
- another address of a pod CIDR: the stand-in models no pod IPs (100% packet loss).
The node's pod CIDR is what kube-controller-manager's range allocator gave it (_cidrs below).

nslookup (busybox networking/nslookup.c, `nslookup [-type=a] NAME SERVER`): busybox's
nslookup applies no search list, so NAME is asked as given. SERVER must be the kube-dns
ClusterIP (kubeadm constants.GetDNSIP: the 10th address of the service subnet); kube-proxy
(iptables or IPVS, not modelled: assumed running, as its DaemonSet needs no CNI) sends the query
to a Ready CoreDNS endpoint, and only a Ready pod is an endpoint (EndpointSlice controller).
An endpoint on another node is reached over the pod network (both flanneld running). The
kubernetes plugin answers `kubernetes.default.svc.<domain>` with the `kubernetes` Service's
ClusterIP (the 1st address of the service subnet: pkg/controlplane ServiceIPRange) and
`kube-dns.kube-system.svc.<domain>` with the DNS ClusterIP; other names in the zone: NXDOMAIN.
No Ready endpoint: the query times out (kube-proxy REJECTs or drops a Service without
endpoints), ";; connection timed out; no servers could be reached", exit 1.
"""

import ipaddress

import _nodenet
from _common import StandinError

# busybox applets in Alpine's busybox build that a smoke check or an operator would reach for
BUSYBOX = ("sh", "ash", "cat", "ls", "nslookup", "ping", "wget", "nc", "ip", "grep", "sleep")
IMAGES = {
    "flannel/flannel": BUSYBOX + ("/opt/bin/flanneld", "/opt/bin/mk-docker-opts.sh",
                                  "iptables", "ip6tables", "bridge", "ss"),
    "flannel/flannel-cni-plugin": BUSYBOX + ("/flannel",),
    "coredns/coredns": ("/coredns",),
    # calico node/Dockerfile.amd64: UBI plus iputils, iproute, iptables, ipset, conntrack-tools
    # and the calico-node binary; no DNS client. (Its bash is not listed: the busybox lookup
    # of image_has would then find nslookup.)
    "calico/node": ("ping", "ip", "iptables", "ipset", "conntrack", "calico-node",
                    "/bin/calico-node", "bash", "/bin/bash"),
}
NODE_CIDR_MASK = 24  # kube-controller-manager --node-cidr-mask-size (IPv4 default; kubeadm
# 1.23 sets none)


def image_files(image: str) -> tuple:
    """The commands of IMAGES for an image reference (any registry or mirror, any tag)."""
    repo = image.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    for name, files in IMAGES.items():  # a flat mirror namespace keeps the last part only
        if repo == name or repo.endswith("/" + name) or repo.endswith(
                "/" + name.rsplit("/", 1)[-1]):
            return files
    return ()


def image_has(image: str, command: str) -> bool:
    """Is `command` (a name looked up on $PATH, or an absolute path) in `image`?"""
    files = image_files(image)
    if command in files:
        return True
    folder, _, base = command.rpartition("/")
    return folder in ("/bin", "/sbin", "/usr/bin", "/usr/sbin") and base in BUSYBOX and \
        "sh" in files


def pod_cidrs(nodes: list, cluster_cidr: str) -> dict:
    """name -> pod CIDR: kube-controller-manager's range allocator (pkg/controller/nodeipam/
    ipam/range_allocator.go with cidrset) hands out the cluster CIDR's /24s in turn, as the
    nodes register (kubeadm sets --allocate-node-cidrs and --cluster-cidr when podSubnet is
    given). Nodes are taken in registration order (creationTimestamp, then name)."""
    try:
        network = ipaddress.ip_network(cluster_cidr)
    except ValueError:
        return {}
    if network.prefixlen > NODE_CIDR_MASK:
        return {}
    subnets = network.subnets(new_prefix=NODE_CIDR_MASK)
    order = sorted(nodes, key=lambda n: (n["metadata"].get("creationTimestamp", ""),
                                         n["metadata"]["name"]))
    return {n["metadata"]["name"]: str(next(subnets)) for n in order}


def service_ips(service_subnet: str):
    """(the `kubernetes` Service's ClusterIP, kube-dns's ClusterIP) of a service subnet."""
    network = ipaddress.ip_network(service_subnet)
    return str(network.network_address + 1), str(network.network_address + 10)


class Model:
    """What exec needs to know about the cluster: per node the flanneld outcome
    (_podnet.flannel_on), its pod CIDR and network facts, the Ready CoreDNS pods' nodes."""

    def __init__(self, nodes, flannel, cidrs, coredns_ready, service_subnet, domain):
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self.flannel = flannel
        self.cidrs = cidrs
        self.coredns_ready = coredns_ready
        self.api_ip, self.dns_ip = service_ips(service_subnet)
        self.domain = domain.strip(".")

    def running(self, name: str) -> bool:
        return bool((self.flannel.get(name) or {}).get("running"))

    def reaches(self, source: str, target: str) -> bool:
        """Does a packet from node `source` reach node `target`'s pod subnet?"""
        return source == target or (self.running(source) and self.running(target))


def run(model: Model, node: str, argv: list):
    """Run a busybox command in the kube-flannel pod on `node`: (exit code, stdout)."""
    name = argv[0].rsplit("/", 1)[-1]
    if name == "ping":
        return ping(model, node, argv[1:])
    if name == "nslookup":
        return nslookup(model, node, argv[1:])
    raise StandinError("the stand-in models nslookup and ping in pods, not %s" % argv[0])


def ping(model: Model, node: str, args: list):
    targets = [a for i, a in enumerate(args) if not a.startswith("-")
               and (i == 0 or args[i - 1] not in ("-c", "-W", "-w", "-s", "-I", "-i"))]
    if len(targets) != 1:
        return 1, "BusyBox v1.36.1 multi-call binary.\n\nUsage: ping [OPTIONS] HOST\n"
    target = targets[0]
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return 1, "ping: bad address '%s'\n" % target
    head = "PING %s (%s): 56 data bytes\n" % (target, target)
    owner = next((n for n, cidr in model.cidrs.items()
                  if address in ipaddress.ip_network(cidr)), None)
    routed = owner is not None and model.reaches(node, owner)
    if not routed:
        facts = _nodenet.read(model.nodes.get(node) or {}) or {}
        if not facts.get("default_iface"):
            return 1, head + "ping: sendto: Network unreachable\n"
        return 1, head + _stats(target, 0)  # out through the default gateway, and lost
    gateway = ipaddress.ip_network(model.cidrs[owner]).network_address
    if address != gateway:
        return 1, head + _stats(target, 0)
    line = "64 bytes from %s: seq=0 ttl=64 time=0.412 ms\n" % target
    return 0, head + line + _stats(target, 1) + \
        "round-trip min/avg/max = 0.412/0.412/0.412 ms\n"


def _stats(target: str, received: int) -> str:
    return "\n--- %s ping statistics ---\n1 packets transmitted, %d packets received, " \
           "%d%% packet loss\n" % (target, received, 0 if received else 100)


def nslookup(model: Model, node: str, args: list):
    words = [a for a in args if not a.startswith("-")]
    if not words or len(words) > 2:
        return 1, "BusyBox v1.36.1 multi-call binary.\n\nUsage: nslookup [-type=QUERY_TYPE] " \
                  "[-debug] HOST [DNS_SERVER]\n"
    name = words[0].rstrip(".")
    server = words[1] if len(words) == 2 else ""
    if server.split(":")[0] != model.dns_ip:
        raise StandinError("the stand-in models queries to the kube-dns ClusterIP %s only, "
                           "not %r" % (model.dns_ip, server or "the pod's resolv.conf"))
    head = "Server:\t\t%s\nAddress:\t%s:53\n\n" % (model.dns_ip, model.dns_ip)
    if not any(model.reaches(node, where) for where in model.coredns_ready):
        return 1, ";; connection timed out; no servers could be reached\n\n"
    zone = "." + model.domain
    if not name.endswith(zone):
        raise StandinError("the stand-in answers names in the cluster zone %s only (CoreDNS "
                           "would forward %s upstream)" % (model.domain, name))
    answers = {"kubernetes.default.svc" + zone: model.api_ip,
               "kube-dns.kube-system.svc" + zone: model.dns_ip}
    if name not in answers:
        return 1, head + "** server can't find %s: NXDOMAIN\n\n" % name
    return 0, head + "\nName:\t%s\nAddress: %s\n\n" % (name, answers[name])
