"""Preflight that sees the cluster, not only the host (called from preflight.CHECKS):

- etcd's disk: fdatasync latency where etcd will live (/var/lib/etcd), control planes only
  (none with etcd.external); with etcd.external the files the first control plane needs;
- the pod and service CIDRs against the host's own addresses and routes;
- the other nodes' kubelet/apiserver/etcd ports, on a node that joins an existing cluster;
- VRRP's interface and a host firewall that would drop IP protocol 112;
- the ARP and bind sysctls the VIP depends on;
- on a node that joins, its machine-id and product UUID against the registered nodes'.

Each check only reads, except the disk probe, which writes a scratch file of a few hundred
KiB next to /var/lib/etcd and removes it. Every loop is bounded in count and time.
"""

import errno
import ipaddress
import math
import os
import socket
import time
from typing import Callable, List, Sequence

from installer.format.errors import PreconditionError
from installer.kubeadmconfig import EXTERNAL_ETCD_CA, EXTERNAL_ETCD_CERT, EXTERNAL_ETCD_KEY
from installer.steps import Context, clones
from installer.steps.findings import FAIL, PASS, WARN, Finding

ETCD_DIR = "/var/lib/etcd"
# etcd's hardware guide: the 99th percentile of WAL fdatasync should stay below 10 ms
# (etcd-io/website content/en/docs/v3.5/op-guide/hardware.md, "Disks": fio with
# --fdatasync=1 --bs=2300). Far above that - slower than etcd's default 100 ms heartbeat
# interval (op-guide/configuration.md, --heartbeat-interval) - followers miss heartbeats
# and leaders churn: refuse.
FSYNC_WARN_MS = 10.0
FSYNC_FAIL_MS = 100.0
FSYNC_WRITES = 200  # at most; etcd's WAL entries are small: fio's 2300-byte blocks
FSYNC_BLOCK = 2300
FSYNC_BUDGET_S = 3.0  # and at most this long; a disk this slow has answered already
CONNECT_TIMEOUT = 0.5
REACH_BUDGET_S = 8.0
CONTROL_PLANE_PORTS = (6443, 2379, 2380, 10250)
WORKER_PORTS = (10250,)
VRRP_PROTOCOL = 112


# ------------------------------------------------------------------------------ etcd disk


def fsync_latencies(folder: str, writes: int = FSYNC_WRITES, budget: float = FSYNC_BUDGET_S,
                    clock: Callable[[], float] = time.monotonic,
                    sync: Callable[[int], None] = os.fdatasync) -> List[float]:
    """Seconds per `write + fdatasync` of a small block to a scratch file in `folder`, as
    etcd's WAL does; at most `writes` of them and at most `budget` seconds in all. The file
    is removed."""
    path = os.path.join(folder, ".kubecrate-fsync-probe.{}".format(os.getpid()))
    block = b"\0" * FSYNC_BLOCK
    samples: List[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        started = clock()
        while len(samples) < writes and clock() - started < budget:
            before = clock()
            os.write(fd, block)
            sync(fd)
            samples.append(clock() - before)
    finally:
        os.close(fd)
        os.unlink(path)
    return samples


def p99(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(math.ceil(0.99 * len(ordered))) - 1)]


def check_etcd_disk(ctx: Context, measure: Callable[[str], List[float]] = fsync_latencies
                    ) -> List[Finding]:
    local = ctx.node.is_control_plane and not ctx.cluster.etcd_hosts
    if not (local or ctx.node.is_etcd_host):  # external etcd lives on the etcd hosts
        return []
    probe = ctx.host.path(ETCD_DIR)
    while not os.path.isdir(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    try:
        samples = measure(probe)
    except OSError as err:
        return [Finding(WARN, "etcd-disk", "cannot measure fdatasync under {}: {}".format(
            probe, err.strerror or err), "check that {} is writable".format(probe))]
    if not samples:
        return [Finding(WARN, "etcd-disk", "no fdatasync finished under {} within {:.0f}s"
                        .format(probe, FSYNC_BUDGET_S), "put /var/lib/etcd on a faster disk")]
    worst = p99(samples) * 1000
    text = "fdatasync p99 {:.1f} ms over {} writes under {} (etcd wants < {:.0f} ms)".format(
        worst, len(samples), probe, FSYNC_WARN_MS)
    fix = "put /var/lib/etcd on an SSD or a disk with a write cache that survives power " \
          "loss; shared or thin-provisioned VM disks are often this slow"
    if worst > FSYNC_FAIL_MS:
        return [Finding(FAIL, "etcd-disk", text + ": slower than etcd's 100 ms heartbeat",
                        fix)]
    if worst > FSYNC_WARN_MS:
        return [Finding(WARN, "etcd-disk", text, fix)]
    return [Finding(PASS, "etcd-disk", text)]


def check_external_etcd_files(ctx: Context) -> List[Finding]:
    """etcd.external: the first control plane, before its kubeadm init, holds the etcd CA and
    the apiserver-etcd-client pair (kubeadm's guide; its preflight refuses the init without
    them: ExternalEtcdClientCertificates), or gets them from --etcd-certs. The others receive
    them with the certificates of the join. An etcd host after the first needs --etcd-certs
    (installer/steps/etcdhost.py)."""
    from installer import etcdcerts
    from installer.steps import etcdhost

    if ctx.node.is_etcd_host:
        problems = etcdhost.certs_findings(ctx)
        return [Finding(FAIL, "etcd-certs", problems[0], etcdcerts.where_from(ctx.cluster))] \
            if problems else [Finding(PASS, "etcd-certs", "the etcd CA is {}".format(
                "from " + str(ctx.etcd_certs_path) if ctx.etcd_certs else
                "made here (first etcd host)" if etcdhost.is_first(ctx) else "in place"))]
    lb = ctx.cluster.load_balancer
    if not (ctx.cluster.etcd_hosts and ctx.node.is_control_plane
            and lb.is_first(ctx.node.name)) or ctx.host.exists("/etc/kubernetes/admin.conf"):
        return []
    if ctx.etcd_certs is not None:
        clash = etcdhost.certs_findings(ctx)
        return [Finding(FAIL, "external-etcd", clash[0], "use the file of this cluster's "
                        "first etcd host, or remove the old files")] if clash else \
            [Finding(PASS, "external-etcd", "the etcd CA certificate and apiserver-etcd-client "
                     "pair come from " + str(ctx.etcd_certs_path))]
    files = (EXTERNAL_ETCD_CA, EXTERNAL_ETCD_CERT, EXTERNAL_ETCD_KEY)
    missing = [path for path in files if not ctx.host.exists(path)]
    if missing:
        return [Finding(FAIL, "external-etcd", "{} missing: kubeadm init reaches etcd.external "
                        "with them".format(", ".join(missing)),
                        "pass {} FILE: {}".format(etcdcerts.OPTION,
                                                  etcdcerts.where_from(ctx.cluster)))]
    return [Finding(PASS, "external-etcd", "the etcd CA and apiserver-etcd-client pair for "
                    "etcd.external are in place")]


# ------------------------------------------------------------------------------ CIDRs


def check_cidrs(ctx: Context) -> List[Finding]:
    """Pods and services get addresses from the CIDRs; a host address or a route inside one
    would send that traffic the wrong way (or make the host unreachable from its pods)."""
    probes = ctx.host.probes
    own = [ipaddress.ip_network(a + "/32") for a in probes.addresses()
           if not a.startswith("127.")]
    routes = [(iface, net) for iface, net in probes.routes()
              if net.prefixlen > 0 and iface not in ("cni0", "flannel.1", "docker0")
              and not iface.startswith(("veth", "kube-ipvs"))]
    found = []
    for key, text in (("pod_cidr", ctx.cluster.pod_cidr),
                      ("service_cidr", ctx.cluster.service_cidr)):
        cidr = ipaddress.ip_network(text)
        clash = ["address {}".format(a.network_address) for a in own if a.overlaps(cidr)]
        clash += ["route {} on {}".format(net, iface) for iface, net in routes
                  if net.overlaps(cidr)]
        if clash:
            found.append(Finding(FAIL, "cidrs", "networking.{} {} overlaps this host's {}"
                                 .format(key, cidr, ", ".join(clash)),
                                 "choose a {} in cluster.yaml that no network of the site uses"
                                 .format(key)))
    return found or [Finding(PASS, "cidrs", "pod {} and service {} overlap no address or route "
                             "of this host".format(ctx.cluster.pod_cidr,
                                                   ctx.cluster.service_cidr))]


# ------------------------------------------------------------------------------ other nodes


def connect(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> str:
    """"open", "refused" (the host answered: nothing listens yet), "timeout" (dropped on the
    way) or "unreachable"."""
    try:
        with socket.create_connection((address, port), timeout):
            return "open"
    except socket.timeout:
        return "timeout"
    except OSError as err:
        if err.errno == errno.ECONNREFUSED:
            return "refused"
        return "unreachable"


def check_reachability(ctx: Context, probe: Callable[[str, int], str] = connect,
                       clock: Callable[[], float] = time.monotonic) -> List[Finding]:
    """On a node that joins (not the first, not joined yet): the other nodes' ports. A port
    that refuses is fine (that node may not be installed yet); a timeout means a firewall
    drops the traffic or the host is down: kubeadm join, etcd or the kubelet's API would
    hang on it later. Warnings only: which nodes are installed is not known here."""
    if getattr(ctx, "join", None) is None or ctx.host.exists("/etc/kubernetes/kubelet.conf"):
        return []
    started = clock()
    problems: List[str] = []
    checked = 0
    targets = [(node, port) for node in ctx.cluster.nodes if node.name != ctx.node.name
               for port in (CONTROL_PLANE_PORTS if node.is_control_plane else WORKER_PORTS)]
    unreachable = set()
    for node, port in targets:
        if clock() - started > REACH_BUDGET_S:
            problems.append("stopped after {:.0f}s".format(REACH_BUDGET_S))
            break
        if node.name in unreachable:
            continue  # the rest of that host's ports would say the same
        outcome = probe(node.address, port)
        checked += 1
        if outcome == "timeout":
            problems.append("{} {}:{} timed out".format(node.name, node.address, port))
        elif outcome == "unreachable":
            unreachable.add(node.name)
            problems.append("{} {} is unreachable".format(node.name, node.address))
    if problems:
        return [Finding(WARN, "reachability", "; ".join(problems),
                        "open these TCP ports between the nodes (firewall, security groups) "
                        "and check the hosts are up")]
    return [Finding(PASS, "reachability", "{} port(s) of the other nodes answer (open or "
                    "refused: not dropped)".format(checked))]


# ------------------------------------------------------------------------------ VRRP, ARP


def check_vrrp(ctx: Context) -> List[Finding]:
    """keepalived sends VRRP (IP protocol 112, unicast to the other control planes) on the
    configured interface: it must exist and carry the node address, and a host firewall
    other than firewalld (which host prep handles) must not drop protocol 112. Whether the
    peers' packets really arrive is not probed (that needs raw sockets and a running
    keepalived on both sides): the VIP wait of the first node and the e2e failover test
    are where it shows."""
    lb = ctx.cluster.load_balancer
    if not (ctx.node.is_control_plane and lb.on_control_planes and lb.interface):
        return []
    out = ctx.runner.query(["ip", "-o", "-4", "addr", "show", "dev", lb.interface])
    if out.returncode != 0:
        return [Finding(FAIL, "vrrp", "load_balancer.interface {} does not exist on this host"
                        .format(lb.interface), "set the interface that carries {}".format(
                            ctx.node.address))]
    found = []
    if " {}/".format(ctx.node.address) not in out.stdout:
        found.append(Finding(WARN, "vrrp", "{} does not carry this node's address {}: "
                             "keepalived sends VRRP from it".format(lb.interface,
                                                                    ctx.node.address),
                             "set load_balancer.interface to the interface of {}".format(
                                 ctx.node.address)))
    firewalld = ctx.runner.query(["systemctl", "is-active", "firewalld"]).stdout.strip()
    if firewalld != "active":
        rules = ctx.runner.query(["iptables", "-S", "INPUT"])
        text = rules.stdout if rules.returncode == 0 else ""
        blocks = "-P INPUT DROP" in text or "-j REJECT" in text or "-j DROP" in text
        allows = any(word in text for word in (" -p vrrp ", " -p 112 "))
        if blocks and not allows:
            found.append(Finding(WARN, "vrrp", "iptables INPUT drops or rejects traffic and "
                                 "has no rule for VRRP (protocol {})".format(VRRP_PROTOCOL),
                                 "iptables -I INPUT -p vrrp -j ACCEPT (and save the rules)"))
    return found or [Finding(PASS, "vrrp", "VRRP on {} ({}); the peers' packets are not "
                             "probed".format(lb.interface, ctx.node.address))]


def check_arp(ctx: Context) -> List[Finding]:
    """The VIP is found by ARP. Linux answers ARP for the VIP on the interface keepalived
    adds it to unless arp_ignore forbids it; the effective value is the larger of
    conf/all and conf/<iface> (kernel Documentation/networking/ip-sysctl.rst, arp_ignore):
    8 never replies, 2 and 3 reply only to senders in the VIP's own prefix or scope.
    haproxy binds `*:port` (templates/haproxy.cfg.j2), so net.ipv4.ip_nonlocal_bind, which
    a bind to the VIP itself would need on the backups, is not required."""
    lb = ctx.cluster.load_balancer
    if not (ctx.node.is_control_plane and lb.on_control_planes and lb.interface):
        return []
    probes = ctx.host.probes
    values = [probes.sysctl("net.ipv4.conf.{}.arp_ignore".format(name))
              for name in ("all", lb.interface)]
    ignore = max((int(v) for v in values if v is not None and v.isdigit()), default=0)
    nonlocal_bind = probes.sysctl("net.ipv4.ip_nonlocal_bind") or "0"
    detail = "arp_ignore {} on {}, ip_nonlocal_bind {} (not needed: haproxy binds *:{})".format(
        ignore, lb.interface, nonlocal_bind, lb.port)
    fix = "sysctl -w net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.{}.arp_ignore=0 and " \
          "remove the setting from /etc/sysctl.d".format(lb.interface)
    if ignore >= 8:
        return [Finding(FAIL, "arp", detail + ": the host never answers ARP, so the VIP "
                        "cannot be reached", fix)]
    if ignore in (2, 3):
        return [Finding(WARN, "arp", detail + ": ARP for the VIP is answered only to some "
                        "senders", fix)]
    return [Finding(PASS, "arp", detail)]


def check_clone(ctx: Context) -> List[Finding]:
    """On a node that joins: its machine-id and product UUID against the registered nodes'
    (installer/steps/clones.py; the kubeadm step checks again right before the join)."""
    if getattr(ctx, "join", None) is None or ctx.host.exists("/etc/kubernetes/kubelet.conf"):
        return []
    try:
        text = clones.refuse_clone(ctx)
    except PreconditionError as err:
        return [Finding(FAIL, "clone", err.message, err.hint or "")]
    if text.startswith(clones.NOT_COMPARED):
        return [Finding(WARN, "clone", text, "check that {} is reachable from this host"
                        .format(ctx.join_info().endpoint))]
    return [Finding(PASS, "clone", text)]


def findings(ctx: Context) -> List[Finding]:
    """Every cluster-level check, in report order."""
    found: List[Finding] = []
    for check in (check_cidrs, check_etcd_disk, check_external_etcd_files, check_vrrp,
                  check_arp, check_reachability, check_clone):
        found.extend(check(ctx))
    return found

