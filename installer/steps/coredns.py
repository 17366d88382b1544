"""CoreDNS's forwarder: `upstream_dns` from cluster.yaml, the node's resolv.conf, or none.

kubeadm 1.23 creates ConfigMap kube-system/coredns during init (kubernetes
cmd/kubeadm/app/phases/addons/dns/dns.go createCoreDNSAddon, template CoreDNSConfigMap in
manifests.go) with `forward . /etc/resolv.conf`. CoreDNS's pods run with `dnsPolicy: Default`,
so that file is the node's resolv.conf as the kubelet hands it over. The rule (docs/cluster.md,
"CoreDNS's upstream"):

- `upstream_dns` given: CoreDNS forwards to those addresses;
- none given, the resolv.conf has a non-loopback nameserver: kubeadm's `forward .
  /etc/resolv.conf` stays;
- none given, no nameserver at all: no forward plugin, CoreDNS serves the cluster zone only
  (with `forward` and no nameserver CoreDNS 1.8.6 exits "plugin/forward: no nameservers found",
  coredns/coredns#5764), and preflight says so;
- none given, only loopback nameservers: preflight fails; CoreDNS would forward to itself and
  its `loop` plugin stops it (https://coredns.io/plugins/loop/, "Troubleshooting loops in
  Kubernetes clusters").

The Corefile is applied after init from the first control-plane node, as an operator would:
the ConfigMap written (JSON) to MANIFEST and `kubectl apply -f`, re-applied only when it changed
(STAMP holds the digest). CoreDNS's `reload` plugin picks the change up.
"""

import hashlib
import ipaddress
import json
from functools import partial
from typing import List, Optional, Sequence, Tuple

from installer.steps import Action, Context
from installer.steps.findings import FAIL, PASS, WARN, Finding
from installer.steps.loadbalancer import ADMIN_CONF

RESOLV_CONF = "/etc/resolv.conf"
MANIFEST = "/etc/kubernetes/kubecrate/coredns.yaml"
STAMP = "/var/lib/kubecrate/coredns-applied"
DNS_DOMAIN = "cluster.local"  # kubeadm's default networking.dnsDomain; cluster.yaml has no key

# kubeadm 1.23's Corefile (manifests.go CoreDNSConfigMap); FORWARD is its forward block.
COREFILE = """.:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
{forward}    cache 30
    loop
    reload
    loadbalance
}}
"""
FORWARD = """    forward . {to} {{
       max_concurrent 1000
    }}
"""

UPSTREAM, RESOLV, ZONE_ONLY, LOOP = "upstream_dns", "resolv.conf", "zone-only", "loopback"


def nameservers(text: Optional[str]) -> List[str]:
    """The `nameserver` addresses of a resolv.conf (resolv.conf(5))."""
    found = []
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
    return found


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def mode(upstream_dns: Sequence[str], resolv_conf: Optional[str]) -> Tuple[str, List[str]]:
    """(UPSTREAM | RESOLV | ZONE_ONLY | LOOP, the addresses that decided it)."""
    if upstream_dns:
        return UPSTREAM, list(upstream_dns)
    servers = nameservers(resolv_conf)
    usable = [s for s in servers if not is_loopback(s)]
    if usable:
        return RESOLV, servers
    return (LOOP, servers) if servers else (ZONE_ONLY, [])


def corefile(upstream_dns: Sequence[str], resolv_conf: Optional[str]) -> str:
    kind, servers = mode(upstream_dns, resolv_conf)
    if kind == UPSTREAM:
        forward = FORWARD.format(to=" ".join(servers))
    elif kind == RESOLV:
        forward = FORWARD.format(to=RESOLV_CONF)
    else:  # ZONE_ONLY (LOOP never gets here: preflight fails first)
        forward = ""
    return COREFILE.format(domain=DNS_DOMAIN, forward=forward)


def configmap(text: str) -> str:
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "coredns", "namespace": "kube-system"},
           "data": {"Corefile": text}}
    return "---\n" + json.dumps(doc, indent=1, sort_keys=True) + "\n"


def describe(kind: str, servers: Sequence[str]) -> str:
    if kind == UPSTREAM:
        return "CoreDNS forwards to upstream_dns " + ", ".join(servers)
    if kind == RESOLV:
        return "CoreDNS forwards to this node's /etc/resolv.conf ({})".format(
            ", ".join(servers))
    return "no nameserver in /etc/resolv.conf and no upstream_dns: CoreDNS serves the " \
        "cluster zone ({}) only (no forward plugin)".format(DNS_DOMAIN)


def actions(ctx: Context) -> List[Action]:
    """The apply of the coredns ConfigMap, when it differs from what was applied last."""
    kind, servers = mode(ctx.cluster.upstream_dns, ctx.host.read_text(RESOLV_CONF))
    if kind == LOOP:
        return []  # preflight refused this host already; never render a looping Corefile
    text = configmap(corefile(ctx.cluster.upstream_dns, ctx.host.read_text(RESOLV_CONF)))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if (ctx.host.read_text(STAMP) or "").strip() == digest and \
            ctx.host.needs_write(MANIFEST, text.encode("utf-8")) is None:
        return []
    return [Action("apply ConfigMap kube-system/coredns: " + describe(kind, servers),
                   partial(_apply, ctx, text, digest))]


def _apply(ctx: Context, text: str, digest: str) -> None:
    ctx.host.write(MANIFEST, text)
    ctx.runner.run(["kubectl", "--kubeconfig", ADMIN_CONF, "apply", "-f", MANIFEST],
                   timeout=300)
    ctx.host.write(STAMP, digest + "\n")


def findings(ctx: Context) -> List[Finding]:
    """Preflight, on every node: what CoreDNS will forward to, judged by this node's
    resolv.conf (the file a CoreDNS pod scheduled here would use)."""
    kind, servers = mode(ctx.cluster.upstream_dns, ctx.host.read_text(RESOLV_CONF))
    if kind == UPSTREAM:
        bad = [s for s in servers if is_loopback(s)]
        if bad:
            return [Finding(FAIL, "dns", "upstream_dns {} is a loopback address: inside the "
                            "CoreDNS pod that is CoreDNS itself, and its loop plugin stops it"
                            .format(", ".join(bad)), "set upstream_dns in cluster.yaml to the "
                            "site's DNS servers' network addresses")]
        return [Finding(PASS, "dns", describe(kind, servers))]
    if kind == LOOP:
        return [Finding(FAIL, "dns", "/etc/resolv.conf names only loopback nameservers ({}) and "
                        "cluster.yaml has no upstream_dns: CoreDNS would forward to itself and "
                        "its loop plugin stops it (CrashLoopBackOff)".format(", ".join(servers)),
                        "set upstream_dns in cluster.yaml to the site's DNS servers (the "
                        "upstream of the local resolver), or put a non-loopback nameserver in "
                        "/etc/resolv.conf")]
    if kind == ZONE_ONLY:
        return [Finding(WARN, "dns", describe(kind, servers) + "; names outside the cluster "
                        "will not resolve in pods", "set upstream_dns in cluster.yaml if the "
                        "site has DNS servers (all nodes should agree: the first control-plane "
                        "node's resolv.conf decides the Corefile)")]
    loop = [s for s in servers if is_loopback(s)]
    if loop:
        return [Finding(WARN, "dns", describe(kind, servers) + ", including loopback {}: a "
                        "query CoreDNS forwards there comes back to itself".format(
                            ", ".join(loop)), "set upstream_dns in cluster.yaml, or remove "
                        "the loopback nameserver from /etc/resolv.conf")]
    return [Finding(PASS, "dns", describe(kind, servers))]
