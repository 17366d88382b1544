"""Typed load-balancer and kubeadm settings: what cluster.yaml's `load_balancer:` and `kubeadm:`
sections (docs/load-balancer.md) become once validated.

The cluster.yaml loader hands each section's mapping to parse_load_balancer() / parse_kubeadm()
together with what it already knows (VIP, endpoint port, control-plane nodes, bundle version);
every problem is a SpecError whose `path` names the key (`load_balancer.auth_pass`), so the
loader can prefix file and line. The objects are immutable NamedTuples (Python 3.6).
"""

import ipaddress
import re
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from installer.format import yamldoc
from installer.format.errors import UsageError

MODES = ("services", "static-pods", "external")
KUBE_PROXY_MODES = ("iptables", "ipvs")
RUNTIMES = ("docker", "containerd")
APISERVER_PORT = 6443
SHARED_LB_PORT = 8443  # the load balancer shares a host with an apiserver on 6443
DEFAULT_ROUTER_ID = 51
# exactly, no unix://: kubeadm 1.23 compares criSocket with this string literally
DOCKERSHIM_SOCKET = "/var/run/dockershim.sock"
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
KEEPALIVED_IMAGE = "docker.io/osixia/keepalived:2.0.20"
HAPROXY_IMAGE = "docker.io/library/haproxy:2.8"
# Priority of the first control-plane node; the next ones get one less each. A failing health
# check subtracts CHECK_WEIGHT, which must exceed the spread so any healthy node outranks it.
TOP_PRIORITY = 200
CHECK_WEIGHT = 50
MAX_CONTROL_PLANES = CHECK_WEIGHT - 1

LB_KEYS = ("mode", "interface", "router_id", "auth_pass", "prefix_length", "unicast_peers",
           "apiserver_port", "keepalived_image", "haproxy_image")
KUBEADM_KEYS = ("kubernetes_version", "image_repository", "cri_socket", "kube_proxy_mode",
                "dns_domain")

_AUTH_PASS = re.compile(r"\A[A-Za-z0-9._:@%+=-]{1,8}\Z")
_IFNAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,14}\Z")
_VERSION = re.compile(r"\Av1\.(\d+)\.(\d+)\Z")
_REPOSITORY = re.compile(r"\A[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*\Z")
_IMAGE = re.compile(r"\A[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)+"
                    r":[\w][\w.-]{0,127}\Z")
_DNS = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

Path = Tuple[Any, ...]
GUIDE = "docs/load-balancer.md"  # describes the load_balancer and kubeadm sections


class SpecError(UsageError):
    """A load-balancer or kubeadm setting is invalid; `path` is the key, e.g. (section, key)."""

    def __init__(self, path: Path, message: str, hint: Optional[str] = None) -> None:
        super().__init__("{}: {}".format(dotted(path), message), hint)
        self.path = tuple(path)
        self.detail = message


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += "[{}]".format(part) if isinstance(part, int) else ("." if text else "") + part
    return text


class Peer(NamedTuple):
    """A control-plane node as the load balancer sees it; order is priority order."""
    name: str
    address: str


class LoadBalancer(NamedTuple):
    mode: str  # services | static-pods | external
    vip: Optional[str]  # None only for external
    port: int  # what clients use: controlPlaneEndpoint's port, haproxy's frontend
    apiserver_port: int
    interface: Optional[str]
    router_id: int
    auth_pass: str
    prefix_length: int  # of the nodes' subnet on `interface`
    peers: Tuple[Peer, ...]  # control-plane nodes, first = initial VIP holder
    unicast_peers: Tuple[str, ...]  # VRRP unicast addresses (default: every peer)
    keepalived_image: str
    haproxy_image: str

    @property
    def on_control_planes(self) -> bool:
        """keepalived and haproxy run on the control-plane nodes (not an external LB)."""
        return self.mode != "external"

    def peer(self, name: str) -> Peer:
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    def priority(self, name: str) -> int:
        """VRRP priority of control-plane node `name`: the first node is highest."""
        return TOP_PRIORITY - [p.name for p in self.peers].index(name)

    def is_first(self, name: str) -> bool:
        return bool(self.peers) and self.peers[0].name == name

    def static_pod_images(self) -> List[str]:
        """The images this mode runs as static pods (none outside static-pods mode): what
        the installer's preflight and `kubecrate lint --cluster` require of the bundle."""
        if self.mode != "static-pods":
            return []
        return [self.keepalived_image, self.haproxy_image]


class Kubeadm(NamedTuple):
    kubernetes_version: str  # "v1.23.17"
    image_repository: str
    control_plane_endpoint: str  # "host:port"
    pod_cidr: str
    service_cidr: str
    runtime: str  # docker | containerd
    cri_socket: str
    kube_proxy_mode: str
    dns_domain: str
    cluster_name: str

    @property
    def minor(self) -> int:
        match = _VERSION.match(self.kubernetes_version)
        if match is None:  # parse_kubeadm accepts only versions that match
            raise ValueError("not a Kubernetes version: {!r}".format(self.kubernetes_version))
        return int(match.group(1))


def _known(path: Path, data: Any, keys: Sequence[str]) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(path, *yamldoc.wrong_type("a mapping", data, GUIDE))
    for key in data:
        if key not in keys:
            raise SpecError(path + (key,), *yamldoc.unknown_key(key, keys))
    return data


def _choice(path: Path, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise SpecError(path, "{!r} is not one of {}{}".format(
            value, ", ".join(choices), yamldoc.suggestion(value, choices)))
    return value


def _int(path: Path, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, *yamldoc.wrong_type("a whole number", value, GUIDE))
    if not low <= value <= high:
        raise SpecError(path, "{!r} must be a whole number from {} to {}".format(value, low, high))
    return value


def _ipv4(path: Path, value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise SpecError(path, "{!r} is not an IPv4 address".format(value))


def _image(path: Path, value: Any) -> str:
    if not isinstance(value, str) or "@" in value or not _IMAGE.match(value):
        raise SpecError(path, "{!r} must be a full image reference with a tag, e.g. {} (no "
                        "digests: docker load keeps none)".format(value, HAPROXY_IMAGE))
    return value


def parse_load_balancer(data: Any, vip: Optional[str], port: Optional[int],
                        control_planes: Sequence[Peer],
                        section: Path = ("load_balancer",)) -> LoadBalancer:
    """Validate the `load_balancer:` mapping (None = all defaults) for the cluster's VIP,
    endpoint port (None = default) and control-plane nodes in cluster.yaml order."""
    data = _known(section, data, LB_KEYS)
    mode = _choice(section + ("mode",), data.get("mode", "services"), MODES)
    api_port = _int(section + ("apiserver_port",), data.get("apiserver_port", APISERVER_PORT),
                    1, 65535)
    shared = mode != "external"
    if port is None:
        port = SHARED_LB_PORT if shared else api_port
    port = _int(("control_plane", "port"), port, 1, 65535)
    if shared and port == api_port:
        raise SpecError(("control_plane", "port"), "{} is also the apiserver port, and in mode "
                        "{!r} haproxy runs on the same hosts as the apiservers".format(port, mode),
                        hint="use {} (or 16443) for the load balancer".format(SHARED_LB_PORT))
    peers = _peers(control_planes)
    router_id = _int(section + ("router_id",), data.get("router_id", DEFAULT_ROUTER_ID), 1, 255)
    auth_pass = data.get("auth_pass", "")
    prefix = _int(section + ("prefix_length",), data.get("prefix_length", 24), 8, 30)
    interface = data.get("interface")
    unicast = ()  # type: Tuple[str, ...]
    if shared:
        if not vip:
            raise SpecError(("control_plane", "vip"), "mode {!r} needs a virtual IP".format(mode))
        if interface is None:
            raise SpecError(section + ("interface",), "required in mode {!r}: the interface "
                            "that carries the node addresses and the VIP".format(mode))
        if not isinstance(interface, str) or not _IFNAME.match(interface):
            raise SpecError(section + ("interface",), "{!r} is not an interface name".format(
                interface))
        if not isinstance(auth_pass, str) or not _AUTH_PASS.match(auth_pass):
            raise SpecError(section + ("auth_pass",), "must be 1 to 8 characters from "
                            "A-Z a-z 0-9 . _ : @ % + = - (VRRP PASS authentication keeps 8)")
        vip = str(_check_vip(vip, peers, prefix, section))
        unicast = _unicast(section + ("unicast_peers",), data.get("unicast_peers"), peers, vip)
    elif vip:
        vip = str(_ipv4(("control_plane", "vip"), vip))
    return LoadBalancer(
        mode, vip or None, port, api_port, interface if shared else None, router_id,
        auth_pass if shared else "", prefix, peers, unicast,
        _image(section + ("keepalived_image",), data.get("keepalived_image", KEEPALIVED_IMAGE)),
        _image(section + ("haproxy_image",), data.get("haproxy_image", HAPROXY_IMAGE)))


def _peers(control_planes: Sequence[Peer]) -> Tuple[Peer, ...]:
    if not control_planes:
        raise SpecError(("nodes",), "no control-plane node is listed")
    if len(control_planes) > MAX_CONTROL_PLANES:
        raise SpecError(("nodes",), "at most {} control-plane nodes are supported".format(
            MAX_CONTROL_PLANES))
    seen = {}  # type: dict
    out = []
    for index, peer in enumerate(control_planes):
        address = str(_ipv4(("nodes", index, "address"), peer.address))
        if address in seen:
            raise SpecError(("nodes", index, "address"), "{} is also the address of {}".format(
                address, seen[address]))
        seen[address] = peer.name
        out.append(Peer(str(peer.name), address))
    return tuple(out)


def _check_vip(vip: Any, peers: Sequence[Peer], prefix: int,
               section: Path) -> ipaddress.IPv4Address:
    address = _ipv4(("control_plane", "vip"), vip)
    subnet = ipaddress.IPv4Interface("{}/{}".format(peers[0].address, prefix)).network
    if address not in subnet:
        raise SpecError(("control_plane", "vip"), "{} is outside the control-plane nodes' subnet "
                        "{} (VRRP moves the VIP only between hosts on one link)".format(
                            address, subnet),
                        hint="pick a free address in {}, or set {}".format(
                            subnet, dotted(section + ("prefix_length",))))
    if address in (subnet.network_address, subnet.broadcast_address):
        raise SpecError(("control_plane", "vip"), "{} is not a host address of {}".format(
            address, subnet))
    for index, peer in enumerate(peers):
        if ipaddress.IPv4Address(peer.address) not in subnet:
            raise SpecError(("nodes", index, "address"), "{} is not in {}, the subnet of the "
                            "first control-plane node".format(peer.address, subnet))
        if str(address) == peer.address:
            raise SpecError(("control_plane", "vip"), "{} is the address of node {}; the VIP "
                            "must be a free address".format(address, peer.name))
    return address


def _unicast(path: Path, value: Any, peers: Sequence[Peer], vip: str) -> Tuple[str, ...]:
    if value is None:
        return tuple(p.address for p in peers)
    if not isinstance(value, list) or not value:
        raise SpecError(path, "must be a non-empty list of addresses")
    out = []
    for index, item in enumerate(value):
        address = str(_ipv4(path + (index,), item))
        if address == vip or address in out:
            raise SpecError(path + (index,), "{} is the VIP or listed twice".format(address))
        out.append(address)
    return tuple(out)


def parse_kubeadm(data: Any, bundle_version: str, bundle_repository: str, runtime: str,
                  endpoint: str, pod_cidr: str, service_cidr: str,
                  cluster_name: str = "kubernetes", section: Path = ("kubeadm",)) -> Kubeadm:
    """Validate the `kubeadm:` mapping (None = all defaults) against the bundle's Kubernetes
    version, image repository and runtime; `endpoint` is the controlPlaneEndpoint host:port."""
    data = _known(section, data, KUBEADM_KEYS)
    version = data.get("kubernetes_version", bundle_version)
    match = _VERSION.match(str(version))
    if not match:
        raise SpecError(section + ("kubernetes_version",), "{!r} is not a version like "
                        "v1.23.17".format(version))
    if version != bundle_version:
        raise SpecError(section + ("kubernetes_version",), "{} differs from the bundle's {}; the "
                        "bundle carries only its own binaries and images".format(
                            version, bundle_version))
    minor = int(match.group(1))
    repository = data.get("image_repository", bundle_repository)
    if not isinstance(repository, str) or not _REPOSITORY.match(repository):
        raise SpecError(section + ("image_repository",), "{!r} is not an image repository like "
                        "registry.k8s.io".format(repository))
    if repository != bundle_repository:
        # kubeadm names every image <imageRepository>/<name>, and CoreDNS <repository>/coredns
        # once the repository is not its default (kubernetes cmd/kubeadm/app/images/images.go,
        # GetDNSImage): none of that is what the bundle loaded, and offline it cannot pull.
        raise SpecError(section + ("image_repository",), "{} differs from the bundle's {}: "
                        "kubeadm would look for {}/pause, {}/kube-apiserver, ... and {}/coredns, "
                        "which the bundle does not carry, and try to pull them offline".format(
                            repository, bundle_repository, repository, repository, repository),
                        hint="remove kubeadm.image_repository (the bundle's {} is used), or "
                             "build a bundle whose recipe sets kubernetes.image_repository: {}"
                             .format(bundle_repository, repository))
    runtime = _choice(("runtime",), runtime, RUNTIMES)
    if runtime == "docker" and minor > 23:
        raise SpecError(("runtime",), "Kubernetes {} has no dockershim; use containerd".format(
            version))
    default_socket = DOCKERSHIM_SOCKET if runtime == "docker" else CONTAINERD_SOCKET
    socket = data.get("cri_socket", default_socket)
    if runtime == "docker" and socket != DOCKERSHIM_SOCKET:
        raise SpecError(section + ("cri_socket",), "{!r}: with Docker, kubeadm {} needs exactly "
                        "{!r}; anything else makes the kubelet use a remote runtime and fail"
                        .format(socket, version, DOCKERSHIM_SOCKET),
                        hint="remove cri_socket; the default is right for Docker")
    if not isinstance(socket, str) or not re.match(r"\A(unix://)?/[\w./-]+\.sock\Z", socket):
        raise SpecError(section + ("cri_socket",), "{!r} is not a socket path like {}".format(
            socket, CONTAINERD_SOCKET))
    proxy = _choice(section + ("kube_proxy_mode",), data.get("kube_proxy_mode", "iptables"),
                    KUBE_PROXY_MODES)
    domain = data.get("dns_domain", "cluster.local")
    if not isinstance(domain, str) or not _DNS.match(domain):
        raise SpecError(section + ("dns_domain",), "{!r} is not a DNS domain".format(domain))
    pod = _cidr(("networking", "pod_cidr"), pod_cidr)
    svc = _cidr(("networking", "service_cidr"), service_cidr)
    if pod.overlaps(svc):
        raise SpecError(("networking", "service_cidr"), "{} overlaps pod_cidr {}".format(svc, pod))
    if not re.match(r"\A[A-Za-z0-9.-]+:\d{1,5}\Z", endpoint):
        raise SpecError(("control_plane",), "{!r} is not an endpoint host:port".format(endpoint))
    return Kubeadm(version, repository, endpoint, str(pod), str(svc), runtime, socket, proxy,
                   domain, cluster_name)


def _cidr(path: Path, value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError:
        raise SpecError(path, "{!r} is not an IPv4 network like 10.244.0.0/16".format(value))
