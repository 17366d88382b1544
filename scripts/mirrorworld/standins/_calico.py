"""calico in the per-node pod-network model (_podnet.py has flannel's): would calico-node run on
a node, with which address, pool and VXLAN tunnel address, judged from the applied DaemonSet
`calico-node` (its `calico-node` container's env, ConfigMap references resolved from the
applied calico-config) against that node's recorded facts (_nodenet.py). Upstream, calico
(projectcalico/calico, node/pkg/lifecycle/startup):

- kubelet first (kubernetes pkg/volume/hostpath/host_path.go checkType): a hostPath volume
  with `type: Directory` (calico's bpffs, /sys/fs/bpf) or File/Socket/... whose path is not
  that kind leaves the pod in ContainerCreating: "MountVolume.SetUp failed for volume ...:
  hostPath type check failed: PATH is not a directory". An unset type is not checked, and a
  missing bind source is created by the runtime (containerd pkg/cri/opts/spec_linux.go
  WithMounts; Docker's binds), so a missing /etc/cni/net.d (calico's cni-net-dir, no type) is
  no refusal: install-cni writes 10-calico.conflist into the directory the runtime made.
- the pool (startup.go configureIPPools): CALICO_IPV4POOL_CIDR, else kubeadm-config's
  ClusterConfiguration networking.podSubnet (extractKubeadmCIDRs), else 192.168.0.0/16;
  "Invalid CIDR specified in CALICO_IPV4POOL_CIDR" (also for an IPv6 CIDR), a
  CALICO_IPV4POOL_BLOCK_SIZE outside 20-32 ("Invalid blocksize", validateBlockSize), an
  unknown CALICO_IPV4POOL_IPIP / _VXLAN mode ("Unrecognized IPIP mode" / "Unrecognized VXLAN
  mode", createIPPool) and NO_DEFAULT_POOLS=true with a CIDR each terminate calico-node. A
  valid pool outside the cluster's podSubnet is created without a word: calico does not
  refuse it (the installer always sets it to pod_cidr; kube-proxy's clusterCIDR is podSubnet).
  The pool is created once, by the first calico-node; the others find it (ipv4Present).
- the node's address (autodetection/autodetection_methods.go AutoDetectCIDR), with IP unset
  or "autodetect" (an explicit IP is used as given: parseIPEnvironment):
  - first-found (the default): the first interface, in the kernel's order, whose name no
    DEFAULT_INTERFACES_TO_EXCLUDE regex matches (^docker.*, ^cbr.*, ^dummy.*, ^virbr.*,
    ^lxcbr.*, ^veth.*, ^lo, ^cali.*, ^tunl.*, ^flannel.*, ^kube-ipvs.*, ^cni.*,
    ^vxlan\\.calico.*, ...) and that has an IPv4 address: its first one;
  - kubernetes-internal-ip: the Node's first InternalIP, with the prefix of the interface
    holding it (GetLocalCIDR; as a /32 when no interface holds it);
  - can-reach=DEST: the source address of the route to DEST (reachaddr.go: a UDP "dial");
    no route: "Unable to auto-detect IPv4 address by connecting to DEST";
  - interface=REGEX[,REGEX]: the first interface whose name a regex matches;
    skip-interface=REGEX: first-found also skipping those; cidr=CIDR[,CIDR]: the first address
    inside one;
  - anything else: "Invalid IP autodetection method", exit; nothing found: calico-node exits
    (configureIPsAndSubnets: couldn't autodetect an IPv4 address).
- the VXLAN tunnel address: calico IPAM gives each node a block (CALICO_IPV4POOL_BLOCK_SIZE,
  default /26) of the pool and vxlan.calico the block's first address; calico writes it to the
  Node as projectcalico.org/IPv4VXLANTunnelAddr (libcalico-go lib/backend/k8s/conversion).
  Real IPAM picks a free block per host; the model hands them out in registration order.
- reachability (ping from one calico-node to another's tunnel address): calico-node running
  on both and their autodetected addresses on one IPv4 network (VXLAN, UDP 4789, goes from
  one to the other; an address the other node's network does not hold is unreachable).
FELIX_IPTABLESBACKEND is recorded, not judged: felix takes legacy, nft or auto, and what a
wrong backend breaks (rules in tables kube-proxy does not use) is not modelled.
"""

import ipaddress
import re

import _nodenet

DAEMONSET = "calico-node"
CONTAINER = "calico-node"
DEFAULT_POOL = "192.168.0.0/16"
DEFAULT_BLOCK = 26
MODES = ("", "off", "never", "crosssubnet", "cross-subnet", "always")
EXCLUDED = ("^docker.*", "^cbr.*", "^dummy.*", "^virbr.*", "^lxcbr.*", "^veth.*", "^lo",
            "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*",
            r"^vxlan\.calico.*", r"^vxlan-v6\.calico.*", r"^wireguard\.cali.*",
            r"^wg-v6\.cali.*", "^nodelocaldns.*")
CHECKED_TYPES = {"Directory": "directory", "File": "file"}
TUNNEL = "projectcalico.org/IPv4VXLANTunnelAddr"
ADDRESS = "projectcalico.org/IPv4Address"


def calico_pods(objects: list):
    """(DaemonSet, calico-node container) of the applied calico, or None."""
    for obj in objects:
        if obj.get("kind") != "DaemonSet" or (obj.get("metadata") or {}).get("name") != \
                DAEMONSET:
            continue
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in spec.get("containers") or []:
            if container.get("name") == CONTAINER:
                return obj, container
    return None


def environment(container: dict, objects: list, node: dict) -> dict:
    """The container's env as calico-node sees it: values, ConfigMap keys, field refs."""
    maps = {((o.get("metadata") or {}).get("namespace", ""), o["metadata"]["name"]):
            o.get("data") or {} for o in objects if o.get("kind") == "ConfigMap"}
    env = {}
    for entry in container.get("env") or []:
        name = str(entry.get("name", ""))
        if "value" in entry:
            env[name] = str(entry["value"])
            continue
        source = entry.get("valueFrom") or {}
        ref = source.get("configMapKeyRef") or {}
        if ref:
            data = maps.get(("kube-system", ref.get("name")), {})
            if ref.get("key") in data:
                env[name] = str(data[ref["key"]])
        field = (source.get("fieldRef") or {}).get("fieldPath")
        if field == "spec.nodeName":
            env[name] = node["metadata"]["name"]
        elif field in ("status.hostIP", "status.podIP"):
            env[name] = _internal_ip(node)
    return env


def _internal_ip(node: dict) -> str:
    for entry in (node.get("status") or {}).get("addresses") or []:
        if entry.get("type") == "InternalIP":
            return entry.get("address", "")
    return ""


def volume_problem(daemonset: dict, facts: dict):
    """The kubelet's hostPath type check of the pod's volumes on this node, or None."""
    spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    kinds = facts.get("host_paths") or {}
    for volume in spec.get("volumes") or []:
        host = volume.get("hostPath") or {}
        want = CHECKED_TYPES.get(host.get("type") or "")
        path = str(host.get("path", "")).rstrip("/") or "/"
        if want and path in kinds and kinds[path] != want:
            return "ContainerCreating: MountVolume.SetUp failed for volume \"%s\" : hostPath " \
                   "type check failed: %s is not a %s" % (volume.get("name"), path, want)
    return None


def pool(env: dict, pod_subnet: str):
    """(pool network, block size, None) or (None, None, calico-node's error)."""
    cidr = env.get("CALICO_IPV4POOL_CIDR", "")
    if env.get("NO_DEFAULT_POOLS", "").lower() == "true" and cidr:
        return None, None, "Invalid configuration with NO_DEFAULT_POOLS defined and " \
                           "CALICO_IPV4POOL_CIDR or CALICO_IPV6POOL_CIDR defined."
    cidr = cidr or pod_subnet.split(",")[0] or DEFAULT_POOL
    block = env.get("CALICO_IPV4POOL_BLOCK_SIZE", "")
    try:
        size = int(block) if block else DEFAULT_BLOCK
    except ValueError:
        return None, None, "Unable to convert blocksize to int"
    if not 20 <= size <= 32:
        return None, None, "Invalid blocksize %d for version 4" % size
    try:
        network = ipaddress.ip_network(cidr, strict=False)
        if network.version != 4:
            raise ValueError(cidr)
    except ValueError:
        return None, None, "Invalid CIDR specified in CALICO_IPV4POOL_CIDR '%s'" % cidr
    for var, what in (("CALICO_IPV4POOL_IPIP", "IPIP"), ("CALICO_IPV4POOL_VXLAN", "VXLAN")):
        if env.get(var, "").lower() not in MODES:
            return None, None, "Unrecognized %s mode specified in %s '%s'" % (
                what, var if what == "IPIP" else "CALICO_IPV4POOL_VXLAN", env[var])
    return network, size, None


def _v4(facts: dict, iface: dict) -> list:
    return [a for a in iface.get("addresses") or [] if ":" not in a]


def _first(facts: dict, include=(), exclude=(), cidrs=()):
    for iface in facts.get("interfaces") or []:
        name = iface["name"]
        if include and not any(re.search(r, name) for r in include):
            continue
        if any(re.search(r, name) for r in exclude):
            continue
        for address in _v4(facts, iface):
            if cidrs and not any(ipaddress.ip_interface(address).ip in c for c in cidrs):
                continue
            return address, name
    return None


def autodetect(env: dict, node: dict, facts: dict):
    """(address with prefix, interface, None) or (None, None, calico-node's error)."""
    explicit = env.get("IP", "")
    if explicit and explicit.lower() != "autodetect":
        if explicit.lower() == "none":
            return None, None, "IP=none: no IPv4 address, no VXLAN tunnel"
        try:
            ipaddress.ip_interface(explicit)
        except ValueError:
            return None, None, "Environment does not contain a valid IPv4 address: IP=%s" % \
                explicit
        return explicit if "/" in explicit else explicit + "/32", "", None
    method = env.get("IP_AUTODETECTION_METHOD", "") or "first-found"
    regexes = re.split(r"\s*,\s*", method.split("=", 1)[1]) if "=" in method else []
    found = None
    try:
        if method == "first-found":
            found = _first(facts, exclude=EXCLUDED)
        elif method.startswith("interface="):
            found = _first(facts, include=regexes)
        elif method.startswith("skip-interface="):
            found = _first(facts, exclude=EXCLUDED + tuple(regexes))
        elif method.startswith("cidr="):
            found = _first(facts, cidrs=[ipaddress.ip_network(c, strict=False)
                                         for c in regexes])
        elif method.startswith("can-reach="):
            found = _reach(facts, method.split("=", 1)[1])
            if found is None:
                return None, None, "Unable to auto-detect IPv4 address by connecting to " \
                    "%s: dial udp4: connect: network is unreachable" % method.split("=", 1)[1]
        elif method.startswith("kubernetes-internal-ip"):
            address = _internal_ip(node)
            if not address:
                return None, None, "Couldn't autodetect an IPv4 address: the Node has no " \
                                   "InternalIP"
            for iface in facts.get("interfaces") or []:
                for cidr in _v4(facts, iface):
                    if cidr.split("/")[0] == address:
                        return cidr, iface["name"], None
            return address + "/32", "", None
        else:
            return None, None, "Invalid IP autodetection method: %s" % method
    except (re.error, ValueError) as exc:
        return None, None, "Invalid IP autodetection method %s: %s" % (method, exc)
    if found is None:
        return None, None, "Couldn't autodetect an IPv4 address (IP_AUTODETECTION_METHOD=%s)" \
            % method
    return found[0], found[1], None


def _reach(facts: dict, destination: str):
    try:
        target = ipaddress.ip_address(destination)
    except ValueError:
        return None
    for iface in facts.get("interfaces") or []:
        for cidr in _v4(facts, iface):
            if target in ipaddress.ip_interface(cidr).network and iface["name"] != "lo":
                return cidr, iface["name"]
    default = next((i for i in facts.get("interfaces") or []
                    if i["name"] == facts.get("default_iface")), None)
    if default and _v4(facts, default):
        return _v4(facts, default)[0], default["name"]
    return None


def calico_on(nodes: list, node: dict, objects: list, pod_subnet: str) -> dict:
    """What calico-node does on `node` (of `nodes`, the cluster in registration order):
    {"running", "message", "address", "iface", "pool", "tunnel", "backend"}."""
    found = calico_pods(objects)
    if found is None:
        return {"running": False, "message": "container runtime network not ready: "
                "NetworkReady=false reason:NetworkPluginNotReady message:Network plugin "
                "returns error: cni plugin not initialized"}
    daemonset, container = found
    facts = _nodenet.read(node)
    if facts is None:
        return {"running": False, "message": "stand-in: the node recorded no network facts"}
    stuck = volume_problem(daemonset, facts)
    if stuck:
        return {"running": False, "message": "calico-node: " + stuck}
    env = environment(container, objects, node)
    network, size, error = pool(env, pod_subnet)
    if error is None:
        address, iface, error = autodetect(env, node, facts)
    if error is not None:
        return {"running": False, "message": "calico-node: CrashLoopBackOff: " + error}
    order = sorted(nodes, key=lambda n: (n["metadata"].get("creationTimestamp", ""),
                                         n["metadata"]["name"]))
    index = [n["metadata"]["name"] for n in order].index(node["metadata"]["name"])
    blocks = network.subnets(new_prefix=max(size, network.prefixlen))
    block = next((b for i, b in enumerate(blocks) if i == index), None)
    if block is None:
        return {"running": False, "message": "calico-node: no free block in pool %s" % network}
    return {"running": True, "address": address, "iface": iface, "pool": str(network),
            "tunnel": str(block.network_address), "block": str(block),
            "backend": env.get("FELIX_IPTABLESBACKEND", "Auto"),
            "message": "calico on %s (%s), pool %s, vxlan.calico %s" % (
                iface or "?", address, network, block.network_address)}


def reaches(one: dict, other: dict) -> bool:
    """Does VXLAN from calico-node `one` reach `other` (both running, one IPv4 network)?"""
    if not (one.get("running") and other.get("running")):
        return False
    mine = ipaddress.ip_interface(one["address"])
    theirs = ipaddress.ip_interface(other["address"])
    return theirs.ip in mine.network or mine.ip in theirs.network


def ping(results: dict, source: str, args: list):
    """iputils ping (calico/node's, UBI's iputils) from node `source`'s calico-node pod
    (hostNetwork): (exit code, output). `results`: node name -> calico_on(...). Exit 1 when
    no reply, 2 on a bad address (iputils ping.c)."""
    targets = [a for i, a in enumerate(args) if not a.startswith("-")
               and (i == 0 or args[i - 1] not in ("-c", "-W", "-w", "-s", "-I", "-i"))]
    if len(targets) != 1:
        return 2, "ping: usage error: Destination address required\n"
    target = targets[0]
    try:
        ipaddress.ip_address(target)
    except ValueError:
        return 2, "ping: %s: Name or service not known\n" % target
    head = "PING %s (%s) 56(84) bytes of data.\n" % (target, target)
    owner = next((name for name, result in results.items()
                  if result.get("running") and result.get("tunnel") == target), None)
    mine = results.get(source) or {}
    if owner is None or not (owner == source or reaches(mine, results[owner])):
        return 1, head + "\n--- %s ping statistics ---\n1 packets transmitted, 0 received, " \
                         "100%% packet loss, time 0ms\n\n" % target
    return 0, head + "64 bytes from %s: icmp_seq=1 ttl=64 time=0.388 ms\n\n--- %s ping " \
        "statistics ---\n1 packets transmitted, 1 received, 0%% packet loss, time 0ms\n" \
        "rtt min/avg/max/mdev = 0.388/0.388/0.388/0.000 ms\n" % (target, target)
