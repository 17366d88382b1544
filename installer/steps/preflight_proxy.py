"""Preflight: an HTTP proxy that would swallow cluster traffic.

kubeadm, the kubelet and the container runtime are Go programs: they send every HTTP(S)
request whose host NO_PROXY does not cover to HTTP(S)_PROXY (golang.org/x/net/http/httpproxy:
NO_PROXY takes host names, `.domain` suffixes, IPs, CIDRs and `*`). A proxy set for the
installer's shell or in the runtime's systemd drop-ins (/etc/systemd/system/docker.service.d/,
containerd.service.d/) without NO_PROXY for the VIP, the node addresses and the pod and
service networks sends apiserver, kubelet and pod traffic to the proxy, which on an
air-gapped network answers nothing. kubeadm itself only warns about this ("Connection to ...
uses proxy"); preflight says it before anything is installed.
"""

import glob
import ipaddress
import os
import shlex
from typing import Dict, List, Sequence

from installer.steps.findings import PASS, WARN, Finding

PROXY_KEYS = ("HTTPS_PROXY", "HTTP_PROXY")
DROP_IN_DIRS = {"docker": "/etc/systemd/system/docker.service.d",
                "containerd": "/etc/systemd/system/containerd.service.d"}


def environment_of(text: str) -> Dict[str, str]:
    """The variables a systemd unit or drop-in sets with Environment= lines (quoted or not,
    several per line; later assignments win, as in systemd)."""
    found = {}  # type: Dict[str, str]
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("Environment="):
            continue
        try:
            words = shlex.split(line[len("Environment="):])
        except ValueError:
            continue
        for word in words:
            name, sep, value = word.partition("=")
            if sep:
                found[name] = value
    return found


def _get(env: Dict[str, str], key: str) -> str:
    return env.get(key) or env.get(key.lower()) or ""


def uncovered(no_proxy: str, targets: Sequence[str]) -> List[str]:
    """The targets (IPs, CIDRs, host names) that the NO_PROXY value does not exempt."""
    entries = [e.strip() for e in no_proxy.split(",") if e.strip()]
    if "*" in entries:
        return []
    networks, names = [], []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.append(entry.lower().lstrip("*"))
    missing = []
    for target in targets:
        try:
            net = ipaddress.ip_network(target, strict=False)
        except ValueError:
            host = target.lower()
            if not any(host == n.lstrip(".") or host.endswith("." + n.lstrip("."))
                       for n in names):
                missing.append(target)
            continue
        if not any(net.version == n.version and net.network_address in n
                   and net.broadcast_address in n for n in networks):  # subnet_of is 3.7+
            missing.append(target)
    return missing


def cluster_targets(ctx) -> List[str]:
    """What must bypass the proxy: the endpoint (VIP and DNS name), every node address, the
    pod and service networks."""
    endpoint = ctx.cluster.endpoint
    targets = [t for t in (endpoint.vip, endpoint.dns_name) if t]
    targets += [node.address for node in ctx.cluster.nodes]
    return targets + [str(ctx.cluster.pod_cidr), str(ctx.cluster.service_cidr)]


def _sources(ctx) -> List[tuple]:
    """(where, environment) pairs: this process's environment, then the runtime's drop-ins."""
    sources = [("the installer's environment", dict(os.environ))]
    folder = DROP_IN_DIRS.get(ctx.info.runtime)
    if folder:
        for path in sorted(glob.glob(os.path.join(ctx.host.path(folder), "*.conf"))):
            try:
                with open(path, "r", encoding="utf-8", errors="replace") as handle:
                    env = environment_of(handle.read())
            except OSError:
                continue
            sources.append((os.path.join(folder, os.path.basename(path)), env))
    return sources


def check_proxy(ctx) -> List[Finding]:
    """WARN per place that sets a proxy whose NO_PROXY misses cluster addresses; PASS else."""
    targets = cluster_targets(ctx)
    found = []
    for where, env in _sources(ctx):
        proxy = next((_get(env, key) for key in PROXY_KEYS if _get(env, key)), None)
        if not proxy:
            continue
        missing = uncovered(_get(env, "NO_PROXY"), targets)
        if missing:
            found.append(Finding(
                WARN, "proxy", "{} sets an HTTP(S) proxy but its NO_PROXY does not cover {}: "
                "kubeadm, the kubelet and the runtime would send that cluster traffic to the "
                "proxy".format(where, ", ".join(missing)),
                "add {} to NO_PROXY (and no_proxy) in {}".format(",".join(missing), where)))
        else:
            found.append(Finding(PASS, "proxy", "{} sets a proxy; NO_PROXY covers the "
                                 "cluster's addresses and networks".format(where)))
    return found or [Finding(PASS, "proxy", "no HTTP(S) proxy is set")]
