"""The per-node pod-network and CoreDNS model behind `kubectl get nodes` / `get pods`.

A node is Ready only when the CNI DaemonSet's pod would run there. For flannel (v0.22.3, the
bundled manifest) that means flanneld on that node finds its external interface from the
selection in the applied DaemonSet (args, or env FLANNELD_* for a flag not given on the
command line), judged against the node's own interfaces (_nodenet.py). Upstream, flannel
main.go main():
- flags from env: `flagutil.SetFlagsFromEnv(flannelFlags, "FLANNELD")` sets FLANNELD_IFACE etc.
  only for flags absent from the command line;
- no --iface/--iface-regex/--iface-can-reach: `ipmatch.LookupExtIface` with nothing asks
  `ip.GetDefaultGatewayInterface()`; none -> "Failed to find any valid interface to use:
  failed to get default interface", exit 1;
- each --iface in order: an IP -> the interface holding it (`ip.GetInterfaceByIP`), else a
  name (`net.InterfaceByName`), "Could not find valid interface matching ..."; then each
  --iface-regex (against the interfaces' IPs, then their names); then --iface-can-reach (the
  route's interface); none -> "Failed to find interface to use that matches the interfaces
  and/or regexes provided", exit 1 (CrashLoopBackOff; no /run/flannel/subnet.env, so the
  kubelet reports NetworkPluginNotReady "cni config uninitialized" and the node NotReady);
- pkg/ipmatch/match.go LookupExtIface: an interface with MTU 0 fails ("failed to determine
  MTU for ... interface").
The downward API `status.hostIP` is the node's first InternalIP (kubernetes
pkg/kubelet/kubelet_pods.go podFieldSelectorRuntimeValue -> getHostIPsAnyWay).

MTU: flannel backend/vxlan/vxlan.go RegisterNetwork creates flannel.1 with `vtepIndex:
be.extIface.Iface.Index` and no MTU, so the kernel's vxlan driver (drivers/net/vxlan.c
vxlan_config_apply: lower device MTU - VXLAN_HEADROOM, 50 for IPv4) sets it, and flanneld
writes that MTU as FLANNEL_MTU to /run/flannel/subnet.env (main.go WriteSubnetFile), which the
flannel CNI plugin gives cni0 and the pods. host-gw adds no header: the interface's MTU.

CoreDNS (1.8.6, kubeadm 1.23's): the Corefile of ConfigMap kube-system/coredns (kubeadm's
default, cmd/kubeadm/app/phases/addons/dns/manifests.go CoreDNSConfigMap, unless one was
applied). Its pods use `dnsPolicy: Default`, i.e. the node's resolv.conf:
- `forward . /etc/resolv.conf` with no nameserver there: "plugin/forward: no nameservers
  found", CoreDNS exits (coredns/coredns#5764) -> CrashLoopBackOff;
- forwarding to a loopback address (127.0.0.0/8, ::1) is the pod's own CoreDNS: the `loop`
  plugin detects it and exits ("Loop ... detected for zone", https://coredns.io/plugins/loop/
  "Troubleshooting loops in Kubernetes clusters");
- no forward plugin: only the cluster zone is served, and CoreDNS is Ready.
The deployment's pods may land on any Ready node (kubeadm's coredns Deployment tolerates the
control-plane taint), so CoreDNS counts as Ready only when it would run on every Ready node.
"""

import ipaddress
import json
import re

import _nodenet
import _pulls

KUBEADM_COREFILE = """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""
VXLAN_HEADROOM = 50
IFACE_FLAGS = ("iface", "iface-regex", "iface-can-reach")


def _internal_ip(node: dict) -> str:
    for entry in (node.get("status") or {}).get("addresses") or []:
        if entry.get("type") == "InternalIP":
            return entry.get("address", "")
    return ""


def flannel_pods(objects: list):
    """(DaemonSet, kube-flannel container, backend type) of the applied flannel, or None."""
    backend = "vxlan"
    for obj in objects:
        data = obj.get("data") if obj.get("kind") == "ConfigMap" else None
        if isinstance(data, dict) and "net-conf.json" in data:
            try:
                backend = (json.loads(data["net-conf.json"]).get("Backend") or {}).get(
                    "Type", "udp")
            except ValueError:
                pass
    for obj in objects:
        if obj.get("kind") != "DaemonSet":
            continue
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in spec.get("containers") or []:
            words = [str(w) for w in (container.get("command") or []) +
                     (container.get("args") or [])]
            if any("flanneld" in w for w in words) or "--kube-subnet-mgr" in words:
                return obj, container, backend
    return None


def selection(container: dict, node: dict) -> dict:
    """flag -> list of values, after flags from the command line and then FLANNELD_* env."""
    chosen = {flag: [] for flag in IFACE_FLAGS}
    args = [str(a) for a in container.get("args") or []]
    i = 0
    while i < len(args):
        name, eq, value = args[i].lstrip("-").partition("=")
        if args[i].startswith("-") and name in chosen:
            if not eq and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            chosen[name].append(value)
        i += 1
    for entry in container.get("env") or []:
        flag = str(entry.get("name", "")).replace("FLANNELD_", "", 1).lower().replace("_", "-")
        if not str(entry.get("name", "")).startswith("FLANNELD_") or flag not in chosen \
                or chosen[flag]:
            continue
        value = entry.get("value")
        ref = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if ref in ("status.hostIP", "status.podIP"):  # hostNetwork: the pod IP is the host's
            value = _internal_ip(node)
        elif ref == "spec.nodeName":
            value = node["metadata"]["name"]
        if value:
            chosen[flag].append(value)
    return chosen


def _by_ip(facts: dict, text: str):
    try:
        wanted = ipaddress.ip_address(text)
    except ValueError:
        return None
    for iface in facts["interfaces"]:
        if any(ipaddress.ip_interface(a).ip == wanted for a in iface["addresses"]):
            return iface
    return None


def external_iface(chosen: dict, facts: dict):
    """(interface dict, None) or (None, flanneld's error) per main.go's lookup order."""
    names = {i["name"]: i for i in facts["interfaces"]}
    if not any(chosen.values()):
        iface = names.get(facts.get("default_iface") or "")
        if iface is None:
            return None, ("Failed to find any valid interface to use: failed to get default "
                          "interface: Unable to find default route")
        return _checked(iface)
    for value in chosen["iface"]:
        iface = _by_ip(facts, value) or names.get(value)
        if iface:
            return _checked(iface)
    for pattern in chosen["iface-regex"]:
        try:
            regex = re.compile(pattern)
        except re.error:
            continue
        for iface in facts["interfaces"]:
            if any(regex.search(a.split("/")[0]) for a in iface["addresses"]):
                return _checked(iface)
        for iface in facts["interfaces"]:
            if regex.search(iface["name"]):
                return _checked(iface)
    for target in chosen["iface-can-reach"]:
        for iface in facts["interfaces"]:
            try:
                if any(ipaddress.ip_address(target) in ipaddress.ip_interface(a).network
                       for a in iface["addresses"]):
                    return _checked(iface)
            except ValueError:
                continue
        if facts.get("default_iface") in names:
            return _checked(names[facts["default_iface"]])
    return None, ("Failed to find interface to use that matches the interfaces and/or "
                  "regexes provided")


def _checked(iface: dict):
    if not iface.get("mtu"):
        return None, "failed to determine MTU for %s interface" % iface["name"]
    if not iface["addresses"]:
        return None, "failed to find IPv4 address for interface %s" % iface["name"]
    return iface, None


def flannel_on(node: dict, objects: list) -> dict:
    """What flanneld does on `node`: {"running", "message", "public_ip", "mtu", "iface"}."""
    found = flannel_pods(objects)
    if found is None:
        return {"running": False, "message": "container runtime network not ready: "
                "NetworkReady=false reason:NetworkPluginNotReady message:docker: network "
                "plugin is not ready: cni config uninitialized"}
    ds, container, backend = found
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    lacking = [str(c.get("image")) for c in (spec.get("initContainers") or []) +
               (spec.get("containers") or []) if str(c.get("image")) in _pulls.missing(node)]
    if lacking:  # its kubelet could not pull them (_pulls.py)
        return {"running": False, "message": "kube-flannel: ImagePullBackOff: Back-off "
                "pulling image \"%s\"" % lacking[0]}
    facts = _nodenet.read(node)
    if facts is None:
        return {"running": False, "message": "stand-in: the node recorded no network facts"}
    iface, error = external_iface(selection(container, node), facts)
    if iface is None:
        return {"running": False, "message": "kube-flannel: CrashLoopBackOff: " + error}
    mtu = iface["mtu"] - (VXLAN_HEADROOM if backend == "vxlan" else 0)
    return {"running": True, "message": "flannel on %s, %s MTU %d" % (iface["name"], backend,
                                                                       mtu),
            "public_ip": iface["addresses"][0].split("/")[0], "mtu": mtu,
            "iface": iface["name"]}


def corefile(objects: list, configmaps: dict) -> str:
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "ConfigMap" and meta.get("name") == "coredns" and \
                meta.get("namespace") == "kube-system":
            return str((obj.get("data") or {}).get("Corefile", ""))
    applied = (configmaps or {}).get("kube-system/coredns")
    if applied:
        return str((applied.get("data") or {}).get("Corefile", ""))
    return KUBEADM_COREFILE


def forwards(text: str) -> list:
    """The TO lists of every `forward FROM TO...` line of a Corefile."""
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].replace("{", " ").split()
        if len(words) >= 3 and words[0] == "forward":
            found.append(words[2:])
    return found


def _loopback(address: str) -> bool:
    host = address.split("://")[-1]  # forward takes dns://, tls:// and host:port too
    if host.count(":") == 1:
        host = host.split(":")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def coredns_on(node: dict, text: str) -> dict:
    """Would a CoreDNS pod with Corefile `text` be Ready on `node`? {"ready", "message"}."""
    facts = _nodenet.read(node) or {"nameservers": []}
    has_loop = any(line.split()[:1] == ["loop"] for line in text.splitlines())
    for targets in forwards(text):
        upstreams = []
        for target in targets:
            upstreams += facts["nameservers"] if target.startswith("/") else [target]
        if not upstreams:
            return {"ready": False, "message": "CrashLoopBackOff: plugin/forward: no "
                    "nameservers found (coredns#5764)"}
        if any(_loopback(u) for u in upstreams):
            return {"ready": False, "message": "CrashLoopBackOff: [FATAL] plugin/loop: Loop "
                    "detected for zone \".\" (a loopback upstream is CoreDNS itself)"
                    if has_loop else "queries loop back to CoreDNS itself"}
        return {"ready": True, "message": "forwarding to " + " ".join(upstreams)}
    return {"ready": True, "message": "no forward plugin: serving the cluster zone only"}
