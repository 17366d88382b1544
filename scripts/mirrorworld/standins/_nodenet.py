"""What a node's kubelet stand-in records of the node's own network when the node registers:
its interfaces (name, IPv4 addresses with prefix, MTU), the default-route interface, and the
nameservers of its /etc/resolv.conf. The per-node pod-network and CoreDNS model (_podnet.py)
judges the applied flannel DaemonSet and the CoreDNS Corefile against these facts, as flanneld
and CoreDNS would on that node.

Where the facts come from:
- `$KUBECRATE_STANDIN_NET=netns` (the e2e namespace hosts): the real namespace, from
  `ip -o -4 addr show`, `ip -o link show` and `ip -4 route show default`, i.e. what flanneld
  in a hostNetwork pod on that node would see (netlink).
- otherwise the host model of the host tests: `$KUBECRATE_PROBE_ROOT` (the fake kernel the
  installer's probes read): the LOCAL addresses of /proc/net/fib_trie but 127.0.0.1 on the
  first non-lo interface of /sys/class/net (its `mtu` file, else 1500), the default route of
  /proc/net/route. Without a probe root: the registered address on `eth0`, MTU 1500.
- nameservers: `<root>/etc/resolv.conf`, the file the kubelet hands to `dnsPolicy: Default`
  pods such as CoreDNS (kubelet --resolv-conf, default /etc/resolv.conf).
- host_paths: what kind of file (directory, file, or missing) each of HOST_PATHS is, for the
  kubelet's hostPath type check of a DaemonSet's volumes (_calico.py): /sys and /proc paths
  from `$KUBECRATE_PROBE_ROOT` (the fake kernel stands for them), the others under the root.
"""

import json
import os
import re
import subprocess

from _common import rooted

ANNOTATION = "kubecrate.standin/node-network"
DEFAULT_MTU = 1500
# hostPath volumes of the CNI DaemonSets (calico's calico-node) whose kind is worth recording
HOST_PATHS = ("/sys/fs/bpf", "/sys/fs", "/proc", "/lib/modules", "/etc/cni/net.d",
              "/opt/cni/bin", "/run/xtables.lock", "/var/run/calico", "/var/lib/calico")


def node_network(address: str) -> dict:
    if os.environ.get("KUBECRATE_STANDIN_NET") == "netns":
        facts = _from_namespace()
    else:
        facts = _from_probe_root(address)
    facts["nameservers"] = nameservers(rooted("/etc/resolv.conf"))
    facts["host_paths"] = {path: path_kind(path) for path in HOST_PATHS}
    return facts


def path_kind(path: str) -> str:
    """"directory", "file" or "missing", as the node sees `path`."""
    probe = os.environ.get("KUBECRATE_PROBE_ROOT")
    if probe and path.split("/")[1] in ("sys", "proc"):
        real = os.path.join(probe, path.lstrip("/"))
    else:
        real = rooted(path)
    if os.path.isdir(real):
        return "directory"
    return "file" if os.path.exists(real) else "missing"


def annotation(address: str) -> dict:
    return {ANNOTATION: json.dumps(node_network(address), sort_keys=True)}


def read(node: dict):
    """The recorded facts of a Node object, or None (registered by an older stand-in)."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def nameservers(path: str) -> list:
    """`nameserver` lines of a resolv.conf (glibc resolv.conf(5): the first word, up to 3)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
    return found


def _ip(*args) -> str:
    try:
        return subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _from_namespace() -> dict:
    interfaces = {}
    for line in _ip("-o", "link", "show").splitlines():
        match = re.match(r"\d+:\s+([^:@\s]+)[^:]*:.*\bmtu (\d+)", line)
        if match:
            interfaces[match.group(1)] = {"name": match.group(1), "addresses": [],
                                          "mtu": int(match.group(2))}
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        match = re.match(r"\d+:\s+(\S+)\s+inet (\d+\.\d+\.\d+\.\d+/\d+)", line)
        if match and match.group(1) in interfaces:
            interfaces[match.group(1)]["addresses"].append(match.group(2))
    default = re.search(r"^default .*\bdev (\S+)", _ip("-4", "route", "show", "default"), re.M)
    return {"interfaces": list(interfaces.values()),
            "default_iface": default.group(1) if default else ""}


def _read(base: str, path: str):
    try:
        with open(os.path.join(base, path.lstrip("/"))) as handle:
            return handle.read()
    except OSError:
        return None


def _from_probe_root(address: str) -> dict:
    base = os.environ.get("KUBECRATE_PROBE_ROOT")
    lo = {"name": "lo", "addresses": ["127.0.0.1/8"], "mtu": 65536}
    if not base:
        return {"interfaces": [lo, {"name": "eth0", "addresses": [address + "/32"],
                                    "mtu": DEFAULT_MTU}], "default_iface": ""}
    try:
        names = sorted(n for n in os.listdir(os.path.join(base, "sys/class/net")) if n != "lo")
    except OSError:
        names = []
    names = names or ["eth0"]
    local, last = [], None
    for line in (_read(base, "/proc/net/fib_trie") or "").splitlines():
        match = re.match(r"^[\s|`+-]*(\d+\.\d+\.\d+\.\d+)\s*$", line)
        if match:
            last = match.group(1)
        elif "/32 host LOCAL" in line and last and last != "127.0.0.1" and last not in local:
            # (the host tests' loopback-range node addresses, 127.0.0.11 ..., are the node's)
            local.append(last)
    if address and address not in local:
        # The registered address is the kubelet's --node-ip, which the real kubelet only
        # accepts on a local interface (kubernetes pkg/kubelet/kubelet_node_status.go
        # validateNodeIP: "node IP: ... not found in the host's network interfaces"); the
        # host tests share one fake kernel between their nodes.
        local.append(address)
    interfaces = [lo]
    for index, name in enumerate(names):
        mtu = (_read(base, "/sys/class/net/%s/mtu" % name) or "").strip()
        interfaces.append({"name": name, "addresses": [a + "/32" for a in local] if index == 0
                           else [], "mtu": int(mtu) if mtu.isdigit() else DEFAULT_MTU})
    default = ""
    for line in (_read(base, "/proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            default = fields[0]
            break
    return {"interfaces": interfaces, "default_iface": default}
