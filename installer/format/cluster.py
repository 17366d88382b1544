"""cluster.yaml: the one file describing the cluster, copied to every host (docs/cluster.md).

Loaded with yaml.safe_load into immutable NamedTuples; every problem is a ClusterConfigError
naming the file, the line and the key (`cluster.yaml:14: nodes[2].role: ...`), with a
did-you-mean for misspelt keys and values. A host finds its own entry by its addresses or by
`--node NAME` (find_node).
"""

import ipaddress
import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from installer.format import yamldoc
from installer.format.lbspec import (
    Kubeadm,
    LoadBalancer,
    Peer,
    SpecError,
    parse_kubeadm,
    parse_load_balancer,
)

API_SERVER_PORT = 6443
ROLES = ("control-plane", "worker")
FIREWALL_POLICIES = ("disable", "open-ports")
# networking.cni: the pod network the install applies, from the bundle's add-ons (docs/cluster.md)
CNIS = ("flannel", "calico")
# permissive: host prep sets SELinux permissive (kubeadm's install guide, the runbooks);
# enforcing: it is left enforcing and the cluster is set up for it (docs/selinux.md)
SELINUX_MODES = ("permissive", "enforcing")
# images.mode: archive: every node loads the bundle's image archive into its runtime;
# registry: the control planes serve it from a registry (containerd only; docs/cluster.md)
IMAGE_MODES = ("archive", "registry")
# distribution's image, which each control plane runs as its registry in images.mode registry
# (installer/registryserve.py); a containerd recipe carries it with "@registry" (docs/recipe.md)
REGISTRY_IMAGE = "docker.io/library/registry:2.8.3"
_MIRROR_URL = re.compile(r"\Ahttps?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?\Z")
_URL_CREDENTIALS = re.compile(r"\A[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@")
_REGISTRY = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?\Z")
_NAME = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

Path = Tuple[Any, ...]


class ClusterConfigError(yamldoc.DocumentError):
    """cluster.yaml is missing, not YAML, or does not describe a valid cluster."""

    guide = "docs/cluster.md"


class Endpoint(NamedTuple):
    vip: Optional[str]  # the virtual IP clients reach the apiservers on
    dns_name: Optional[str]  # e.g. cluster-endpoint; mapped to the VIP in /etc/hosts
    port: int  # the load balancer's port (lbspec's default unless control_plane.port)

    @property
    def host(self) -> str:
        return self.dns_name or str(self.vip)

    def __str__(self) -> str:
        return "{}:{}".format(self.host, self.port)


class Node(NamedTuple):
    name: str
    address: str
    role: str  # "control-plane" | "worker", or "etcd" for an etcd.external host

    @property
    def is_control_plane(self) -> bool:
        return self.role == "control-plane"

    @property
    def is_etcd_host(self) -> bool:
        """An etcd.external host: etcd as a static pod, no Kubernetes node."""
        return self.role == ETCD_ROLE


class Runtime(NamedTuple):
    registry_mirrors: Tuple[str, ...]
    insecure_registries: Tuple[str, ...]


class Cluster(NamedTuple):
    source: str
    name: str
    endpoint: Endpoint
    pod_cidr: str
    service_cidr: str
    ntp_servers: Tuple[str, ...]
    upstream_dns: Tuple[str, ...]
    firewall: str
    runtime: Runtime
    nodes: Tuple[Node, ...]
    load_balancer: LoadBalancer  # keepalived + haproxy, or the external one (lbspec.py)
    # The `kubeadm:` section as given; kubeadm_settings() validates it against the bundle.
    kubeadm: Tuple[Tuple[str, Any], ...] = ()
    # networking.cni as given (one of CNIS), or "" for the bundle's one CNI (installer/cnis.py)
    cni: str = ""
    selinux: str = "permissive"  # SELINUX_MODES
    # etcd.external: the dedicated etcd hosts (role "etcd"), or () for etcd on the control planes
    etcd_hosts: Tuple[Node, ...] = ()
    images_mode: str = "archive"  # IMAGE_MODES

    @property
    def etcd_endpoints(self) -> Tuple[str, ...]:
        """The client URLs of the external etcd hosts, () for stacked etcd."""
        return tuple("https://{}:{}".format(h.address, ETCD_CLIENT_PORT)
                     for h in self.etcd_hosts)

    @property
    def enforcing(self) -> bool:
        """Whether the hosts keep SELinux enforcing (`selinux: enforcing`)."""
        return self.selinux == "enforcing"

    def node(self, name: str) -> Optional[Node]:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def lb_port(self) -> Optional[int]:
        """The load balancer's port when it differs from the apiserver's."""
        return self.endpoint.port if self.endpoint.port != API_SERVER_PORT else None


# Allowed keys per section; `load_balancer` and `kubeadm` are lbspec's (docs/load-balancer.md).
TOP_KEYS = ("cluster_name", "control_plane", "networking", "ntp_servers", "upstream_dns",
            "firewall", "selinux", "runtime", "nodes", "load_balancer", "kubeadm", "etcd", "images")
ENDPOINT_KEYS = ("vip", "dns_name", "port")
NETWORK_KEYS = ("pod_cidr", "service_cidr", "cni")
RUNTIME_KEYS = ("registry_mirrors", "insecure_registries")
NODE_KEYS = ("name", "address", "role")
IMAGES_KEYS = ("mode",)
ETCD_KEYS = ("external",)
ETCD_HOST_KEYS = ("name", "address")
ETCD_ROLE = "etcd"  # the role of an external etcd host (etcd.external), never of a node
ETCD_CLIENT_PORT = 2379


class _Doc(yamldoc.Reader):
    """The parsed document, read with the reader recipes and presets use (installer.yamldoc):
    the same messages for unknown keys, wrong types and keys given twice."""

    error_class = ClusterConfigError

    def __init__(self, document: yamldoc.Document) -> None:
        super().__init__(document)
        self.data = document.data

    def fail(self, path: Path, message: str, hint: Optional[str] = None) -> None:
        raise self.error(tuple(path), message, hint)

    def text(self, value: Any, path: Path, pattern: Any, what: str) -> str:
        """A string matching `pattern` exactly (no stripping: a trailing newline is refused)."""
        if not isinstance(value, str) or not value:
            raise self.wrong_type(path, "a non-empty string", value)
        if not pattern.match(value):
            self.fail(path, "{!r} is not {}".format(value, what))
        return value


def parse_cluster(text: str, source: str = "cluster.yaml") -> Cluster:
    """Validate cluster.yaml text into a Cluster; raises ClusterConfigError."""
    document = yamldoc.parse(text, source, ClusterConfigError)
    data = document.data
    doc = _Doc(document)
    doc.mapping(data, (), optional=TOP_KEYS)
    for required in ("control_plane", "networking", "nodes"):
        if required not in data:
            doc.fail((), "required key {!r} is missing".format(required))
    vip, dns_name, asked_port = _endpoint(doc, _mapping(doc, ("control_plane",), ENDPOINT_KEYS))
    net = _mapping(doc, ("networking",), NETWORK_KEYS)
    pod = _cidr(doc, ("networking", "pod_cidr"), net.get("pod_cidr", "10.244.0.0/16"))
    svc = _cidr(doc, ("networking", "service_cidr"), net.get("service_cidr", "10.96.0.0/12"))
    if pod.overlaps(svc):
        doc.fail(("networking", "service_cidr"), "{} overlaps pod_cidr {}".format(svc, pod))
    cni = net.get("cni", "")
    if cni != "" and cni not in CNIS:
        if not isinstance(cni, str):
            raise doc.wrong_type(("networking", "cni"), "a string", cni)
        doc.fail(("networking", "cni"), "{!r} is not one of {}{}".format(
            cni, ", ".join(CNIS), yamldoc.suggestion(cni, CNIS)),
            "name a CNI the bundle carries (kubecrate inspect BUNDLE: addons)")
    runtime_map = _mapping(doc, ("runtime",), RUNTIME_KEYS, optional=True)
    runtime = Runtime(_mirror_urls(doc, ("runtime", "registry_mirrors"),
                                   runtime_map.get("registry_mirrors", [])),
                      _registries(doc, ("runtime", "insecure_registries"),
                                  runtime_map.get("insecure_registries", [])))
    firewall = data.get("firewall", "disable")
    if firewall not in FIREWALL_POLICIES:
        doc.fail(("firewall",), "{!r} is not one of {}{}".format(
            firewall, ", ".join(FIREWALL_POLICIES),
            yamldoc.suggestion(firewall, FIREWALL_POLICIES)))
    selinux = data.get("selinux", "permissive")
    if selinux not in SELINUX_MODES:
        doc.fail(("selinux",), "{!r} is not one of {}{}".format(
            selinux, ", ".join(SELINUX_MODES), yamldoc.suggestion(str(selinux), SELINUX_MODES)))
    images_mode = _mapping(doc, ("images",), IMAGES_KEYS, optional=True).get("mode", "archive")
    if images_mode not in IMAGE_MODES:
        doc.fail(("images", "mode"), "{!r} is not one of {}{}".format(
            images_mode, ", ".join(IMAGE_MODES),
            yamldoc.suggestion(str(images_mode), IMAGE_MODES)))
    for key in RUNTIME_KEYS:
        if images_mode == "registry" and runtime_map.get(key):
            # containerd then reads its registries from config_path, and its CRI plugin
            # refuses `mirrors` and `configs.*.tls` beside config_path (containerd 1.6
            # pkg/cri/config/config.go, ValidatePluginConfig)
            doc.fail(("runtime", key), "cannot be combined with images.mode: registry: "
                     "containerd then takes its registries from /etc/containerd/certs.d, and "
                     "refuses this setting beside it",
                     "leave out runtime.{} or use images.mode: archive".format(key))
    name = doc.text(data.get("cluster_name", "kubernetes"), ("cluster_name",), _NAME,
                    "a DNS-1123 name")
    nodes = _nodes(doc, (pod, svc), vip)
    etcd_hosts = _etcd_hosts(doc, nodes, (pod, svc), vip)
    try:
        lb = parse_load_balancer(data.get("load_balancer"), vip, asked_port,
                                 [Peer(n.name, n.address) for n in nodes if n.is_control_plane])
    except SpecError as err:
        doc.fail(err.path, err.detail, err.hint)
    kubeadm = data.get("kubeadm")
    if kubeadm is not None and not isinstance(kubeadm, dict):
        raise doc.wrong_type(("kubeadm",), "a mapping", kubeadm)
    return Cluster(source, name, Endpoint(vip, dns_name, lb.port), str(pod), str(svc),
                   _servers(doc, ("ntp_servers",), data.get("ntp_servers", [])),
                   _servers(doc, ("upstream_dns",), data.get("upstream_dns", []), ip_only=True),
                   firewall, runtime, nodes, lb, tuple(sorted((kubeadm or {}).items())), cni,
                   selinux, etcd_hosts, images_mode)


def kubeadm_settings(cluster: Cluster, version: str, image_repository: str,
                     runtime: str) -> Kubeadm:
    """The `kubeadm:` section (and `images.mode`) validated against the bundle (its
    Kubernetes version, image repository and runtime); a problem is a ClusterConfigError
    naming file, line and key."""
    if cluster.images_mode == "registry" and runtime == "docker":
        # dockerd's registry-mirrors apply to Docker Hub only ("It's currently not possible to
        # mirror another private registry. Only the central Hub can be mirrored":
        # docs.docker.com/docker-hub/image-library/mirror/; --registry-mirror in
        # docs.docker.com/reference/cli/dockerd/), and kubeadm's images are registry.k8s.io's
        _fail_at(cluster, ("images", "mode"), "'registry' needs containerd, and this bundle's "
                 "runtime is docker: Docker's registry-mirrors mirror Docker Hub only, so "
                 "Docker would still pull registry.k8s.io's and the add-ons' images from their "
                 "own registries",
                 "use images.mode: archive (the default) with a Docker bundle, or a bundle "
                 "built for containerd (docs/cluster.md \"images: mode\")")
    try:
        return parse_kubeadm(dict(cluster.kubeadm), version, image_repository, runtime,
                             str(cluster.endpoint), cluster.pod_cidr, cluster.service_cidr,
                             cluster.name)
    except SpecError as err:
        _fail_at(cluster, err.path, err.detail, err.hint)
        raise AssertionError  # unreachable; _fail_at raises


def _fail_at(cluster: Cluster, path: Path, detail: str, hint: Optional[str]) -> None:
    """Raise the ClusterConfigError for `path`, with its line read back from the file."""
    try:
        with open(cluster.source, "r", encoding="utf-8") as handle:
            document = yamldoc.parse(handle.read(), cluster.source, ClusterConfigError)
    except (OSError, ClusterConfigError):  # then the message has no line number
        document = yamldoc.Document(cluster.source, {}, {})
    _Doc(document).fail(path, detail, hint)


def load_cluster(path: str) -> Cluster:
    """Read and validate the cluster.yaml at `path`."""
    text = yamldoc.read(path, "cluster.yaml", ClusterConfigError,
                        hint="pass --cluster with the cluster.yaml of this cluster")
    return parse_cluster(text, path)


def find_node(cluster: Cluster, addresses: Sequence[str], name: Optional[str] = None) -> Node:
    """This host's node entry: by `name` (--node) if given, else by one of its `addresses`.
    An etcd.external host is found the same way, as a Node of role "etcd"."""
    etcd_host = next((h for h in cluster.etcd_hosts if h.name == name or
                      (not name and h.address in set(addresses))), None)
    if etcd_host is not None:
        return etcd_host
    if name:
        node = cluster.node(name)
        if node is None:
            names = [n.name for n in cluster.nodes]
            raise ClusterConfigError("{}: no node named {!r}{}".format(
                cluster.source, name, yamldoc.suggestion(name, names)),
                hint="nodes: " + ", ".join(names))
        return node
    mine = [n for n in cluster.nodes if n.address in set(addresses)]
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise ClusterConfigError(
            "{}: none of this host's addresses ({}) is a node address".format(
                cluster.source, ", ".join(addresses) or "none found"),
            hint="pass --node NAME to say which node this host is")
    raise ClusterConfigError("{}: this host has the addresses of several nodes ({})".format(
        cluster.source, ", ".join(n.name for n in mine)), hint="pass --node NAME")


# --------------------------------------------------------------------------- sections


def _mapping(doc: _Doc, path: Path, allowed: Sequence[str], optional: bool = False) -> Dict:
    value = doc.data.get(path[0]) if len(path) == 1 else None
    if value is None and optional:
        return {}
    return doc.mapping(value, path, optional=allowed)


def _ip(doc: _Doc, path: Path, value: Any) -> str:
    if not isinstance(value, str):
        raise doc.wrong_type(path, "a string (an IPv4 address)", value)
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        doc.fail(path, "{!r} is not an IPv4 address".format(value))
    raise AssertionError  # unreachable; fail() raises


def _cidr(doc: _Doc, path: Path, value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as err:
        doc.fail(path, "{!r} is not a network in CIDR form ({})".format(value, err))
    raise AssertionError


def _endpoint(doc: _Doc, section: Dict[str, Any]
              ) -> Tuple[Optional[str], Optional[str], Optional[int]]:
    """The VIP, the DNS name and the port asked for (None: the load balancer's default)."""
    path = ("control_plane",)
    vip = section.get("vip")
    dns_name = section.get("dns_name")
    if vip is None and dns_name is None:
        doc.fail(path, "give the control-plane endpoint as vip, dns_name or both")
    if vip is not None:
        vip = _ip(doc, path + ("vip",), vip)
    if dns_name is not None:
        doc.text(dns_name, path + ("dns_name",), _NAME, "a DNS name")
    port = section.get("port")  # None: the load balancer's default (lbspec)
    if port is not None:
        port = doc.integer(port, path + ("port",))
        if not 0 < port < 65536:
            doc.fail(path + ("port",), "{!r} is not a TCP port".format(port))
    return vip, dns_name, port


def _strings(doc: _Doc, path: Path, value: Any) -> Tuple[str, ...]:
    if not isinstance(value, list):
        raise doc.wrong_type(path, "a list of strings", value)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise doc.wrong_type(path + (index,), "a non-empty string", item)
    return tuple(value)


def _mirror_urls(doc: _Doc, path: Path, value: Any) -> Tuple[str, ...]:
    """Registry mirror URLs for daemon.json and containerd's TOML: http(s)://host[:port][/path]
    and nothing else (a quote or newline here wrote new sections into containerd's config)."""
    items = _strings(doc, path, value)
    for index, item in enumerate(items):
        if _URL_CREDENTIALS.match(item):
            doc.fail(path + (index,), "{!r}: credentials in a mirror URL end up in files other "
                     "users read".format(re.sub(r"//[^/]*@", "//***@", item)),
                     "give the registry credentials to the runtime (docker login / containerd "
                     "registry auth), not in the URL")
        if not _MIRROR_URL.match(item):
            doc.fail(path + (index,), "{!r} is not a mirror URL like https://mirror.example:5000"
                     .format(item))
    return items


def _registries(doc: _Doc, path: Path, value: Any) -> Tuple[str, ...]:
    """Insecure registries: host[:port] or a CIDR, as Docker and containerd take them."""
    items = _strings(doc, path, value)
    for index, item in enumerate(items):
        if _REGISTRY.match(item):
            continue
        try:
            ipaddress.ip_network(item)
        except ValueError:
            doc.fail(path + (index,), "{!r} is not a registry host[:port] or a CIDR".format(item))
    return items


def _servers(doc: _Doc, path: Path, value: Any, ip_only: bool = False) -> Tuple[str, ...]:
    items = _strings(doc, path, value)
    for index, item in enumerate(items):
        if ip_only:
            _ip(doc, path + (index,), item)
        elif not _NAME.match(item):
            try:
                ipaddress.IPv4Address(item)
            except ValueError:
                doc.fail(path + (index,), "{!r} is neither a host name nor an IPv4 address"
                         .format(item))
    return items


def _host(doc: _Doc, item: Any, path: Path, keys: Sequence[str], taken: Sequence[Node],
          networks: Sequence[ipaddress.IPv4Network], vip: Optional[str]) -> Tuple[str, str]:
    """The name and address of a host entry (a node or an external etcd host), each unique
    among the hosts `taken` before it."""
    doc.mapping(item, path, optional=keys)
    for key in keys:
        if key not in item:
            doc.fail(path, "required key {!r} is missing".format(key))
    name = doc.text(item["name"], path + ("name",), _NAME, "a lower-case DNS-1123 host name")
    address = _ip(doc, path + ("address",), item["address"])
    for other in taken:
        if other.name == name:
            doc.fail(path + ("name",), "node name {!r} is used twice".format(name))
        if other.address == address:
            doc.fail(path + ("address",), "address {} is also node {}'s".format(
                address, other.name))
    for network in networks:
        if ipaddress.IPv4Address(address) in network:
            doc.fail(path + ("address",), "{} lies inside the cluster network {}".format(
                address, network))
    if vip == address:
        doc.fail(path + ("address",), "{} is the control-plane VIP; a VIP must be an "
                 "address no node owns".format(address))
    return name, address


def _nodes(doc: _Doc, networks: Sequence[ipaddress.IPv4Network], vip: Optional[str]
           ) -> Tuple[Node, ...]:
    items = doc.items(doc.data.get("nodes"), ("nodes",))
    nodes: List[Node] = []
    for index, item in enumerate(items):
        path = ("nodes", index)
        name, address = _host(doc, item, path, NODE_KEYS, nodes, networks, vip)
        role = item["role"]
        if role not in ROLES:
            doc.fail(path + ("role",), "{!r} is not one of {}{}".format(
                role, ", ".join(ROLES), yamldoc.suggestion(role, ROLES)))
        nodes.append(Node(name, address, role))
    if not any(n.is_control_plane for n in nodes):
        doc.fail(("nodes",), "at least one node needs role control-plane")
    return tuple(nodes)


def _etcd_hosts(doc: _Doc, nodes: Sequence[Node], networks: Sequence[ipaddress.IPv4Network],
                vip: Optional[str]) -> Tuple[Node, ...]:
    """`etcd: {external: [{name, address}, ...]}`: the dedicated etcd hosts (kubeadm's
    external etcd topology), none of them a node of `nodes`."""
    if "etcd" not in doc.data:
        return ()
    section = _mapping(doc, ("etcd",), ETCD_KEYS)
    if "external" not in section:
        doc.fail(("etcd",), "required key 'external' is missing",
                 "list the etcd hosts, or leave out `etcd:` for etcd on the control planes")
    items = doc.items(section["external"], ("etcd", "external"))
    hosts: List[Node] = []
    for index, item in enumerate(items):
        name, address = _host(doc, item, ("etcd", "external", index), ETCD_HOST_KEYS,
                              list(nodes) + hosts, networks, vip)
        hosts.append(Node(name, address, ETCD_ROLE))
    return tuple(hosts)
