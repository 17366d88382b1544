"""keepalived and haproxy for the apiserver VIP: the files a control-plane node gets, rendered
from installer/templates/ (docs/load-balancer.md).

`services` mode: configs for the host's keepalived 1.3.5+ and haproxy 1.5.18+ packages.
`static-pods` mode: the same configs (haproxy logging to stdout) plus two static-pod manifests
for the bundled images; the first control-plane node gets the manifests before `kubeadm init`,
the others only after they joined (kubeadm join refuses a non-empty manifests folder).
"""

import re
from typing import List, NamedTuple, Tuple

from installer.format.lbspec import CHECK_WEIGHT, LoadBalancer
from installer.registrystore import REGISTRY_NODE_PORT, REGISTRY_PORT
from installer.render import render

KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/check_apiserver.sh"
# With `selinux: enforcing` and keepalived from the host's RPM, keepalived runs as keepalived_t,
# which may not execute a script labelled etc_t. The policy labels /usr/libexec/keepalived(/.*)?
# keepalived_unconfined_script_exec_t, and keepalived_t runs such a file in the unconfined
# keepalived_unconfined_script_t domain (selinux-policy keepalived.fc and keepalived.te:
# domtrans_pattern(keepalived_t, keepalived_unconfined_script_exec_t, ...)). So the script
# goes there, and `restorecon` gives it that label (docs/selinux.md).
LIBEXEC_DIR = "/usr/libexec/keepalived"
ENFORCING_CHECK_SCRIPT = LIBEXEC_DIR + "/check_apiserver.sh"
SCRIPT_LABEL = "keepalived_unconfined_script_exec_t"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
MANIFESTS = "/etc/kubernetes/manifests"


class HealthCheck(NamedTuple):
    """Timings shared by keepalived's vrrp_script and haproxy's server checks, in seconds.

    A busy but healthy apiserver must pass: its /healthz runs the etcd check, which may take up
    to 2 s (kube-apiserver --etcd-healthcheck-timeout, default 2s), so each probe may take
    `probe_timeout` = 4 s and keepalived kills the script only after `timeout` = 5 s. A dead
    apiserver refuses connections at once, so it fails `fall` checks `interval` apart and its
    node drops below every healthy one within about interval * fall = 4 s; haproxy routes
    around it sooner (observe layer4, on-error mark-down)."""
    interval: int = 2
    timeout: int = 5
    probe_timeout: int = 4
    fall: int = 2
    rise: int = 2
    weight: int = CHECK_WEIGHT


CHECK = HealthCheck()
HAPROXY_INTER = 1  # haproxy checks each apiserver every second, every 250 ms once one failed
# a SYN to a host that dropped off the link goes unanswered: a client waits this long before
# haproxy redispatches it (a connect on the shared link takes well under 1 ms)
CONNECT_TIMEOUT_MS = 500


class Vrrp(NamedTuple):
    """The VRRP version and advertisement interval for the keepalived a node runs. A backup
    takes over when it has heard nothing for 3 intervals plus a skew below one interval
    (RFC 5798 section 6.1), so the interval bounds the failover after a silent loss."""
    version: int
    advert_int: str  # as keepalived.conf spells it

    def master_down_seconds(self, priority: int) -> float:
        """How long a backup of `priority` waits after the last advert it heard."""
        interval = float(self.advert_int)
        return 3 * interval + (256 - priority) * interval / 256


# keepalived 1.3.5 (CentOS 7) refuses a sub-second advert_int with VRRPv2 (vrrp.c,
# vrrp_complete_instance: "sub-second advertisement interval not supported in version 2"),
# and its VRRPv3 is unusable with more than one unicast peer: the checksum of every second
# peer's advert was left 0 until 1.3.7 (keepalived ChangeLog, 1.3.7: "Fix calculation of
# checksum for VRRPv3 IPv4 unicast peers"), and 1.3.6 changed the VRRPv3 unicast checksum.
# So EL7 hosts keep VRRPv2 with 1 s adverts (about 3.2 s to fail over after a silent loss);
# keepalived >= 1.3.7 (EL8's 2.1, EL9's 2.2, the 2.0.20 image) gets VRRPv3 at 0.2 s (0.65 s).
VRRP_V2 = Vrrp(2, "1")
VRRP_V3 = Vrrp(3, "0.2")
VRRPV3_UNICAST_FIXED = (1, 3, 7)
_VERSION_TAG = re.compile(r"\A[vV]?(\d+)\.(\d+)\.(\d+)")


def vrrp_for(lb: LoadBalancer, os_release: str) -> Vrrp:
    """The VRRP profile for the keepalived this cluster runs: the bundle's RPM for the target
    release (`services`; "7" = CentOS 7's 1.3.5), or the version in the image tag
    (`static-pods`; a tag that names no version keeps the conservative VRRPv2)."""
    if lb.mode == "static-pods":
        match = _VERSION_TAG.match(lb.keepalived_image.rsplit(":", 1)[1])
        version = tuple(int(part) for part in match.groups()) if match else (0, 0, 0)
        return VRRP_V3 if version >= VRRPV3_UNICAST_FIXED else VRRP_V2
    return VRRP_V2 if os_release.split(".")[0] == "7" else VRRP_V3


class RenderedFile(NamedTuple):
    path: str  # host path
    content: str
    mode: int


def _node(lb: LoadBalancer, node_name: str):
    if not lb.on_control_planes:
        raise ValueError("load balancer mode 'external' renders no keepalived or haproxy")
    return lb.peer(node_name)


def keepalived_conf(lb: LoadBalancer, node_name: str, check_script: str = CHECK_SCRIPT,
                    vrrp: Vrrp = VRRP_V2) -> str:
    """keepalived.conf for control-plane node `node_name` (first node: MASTER, highest priority;
    unicast to every other peer), speaking `vrrp` (see vrrp_for)."""
    node = _node(lb, node_name)
    peers = [address for address in lb.unicast_peers if address != node.address]
    return render("keepalived.conf.j2", lb=lb, node=node, first=lb.is_first(node_name),
                  priority=lb.priority(node_name), peers=peers, check=CHECK,
                  check_script=check_script, vrrp=vrrp)


def check_script(lb: LoadBalancer, node_name: str) -> str:
    """The vrrp_script health check (POSIX sh + curl) for `node_name`."""
    return render("check_apiserver.sh.j2", lb=lb, node=_node(lb, node_name), check=CHECK)


def haproxy_cfg(lb: LoadBalancer, static_pod: bool = False, registry: bool = False,
                registry_ports: Tuple[int, int] = (REGISTRY_PORT, REGISTRY_NODE_PORT)) -> str:
    """haproxy.cfg, the same on every control-plane node; `static_pod` logs to stdout (1.9+)
    and keeps the image's own user; `registry` (images.mode registry) adds a frontend on
    REGISTRY_PORT over every control plane's registry at REGISTRY_NODE_PORT (`registry_ports`:
    other ports, for the tests)."""
    if not lb.on_control_planes:
        raise ValueError("load balancer mode 'external' renders no keepalived or haproxy")
    return render("haproxy.cfg.j2", lb=lb, check=CHECK, static_pod=static_pod,
                  haproxy_inter=HAPROXY_INTER, connect_timeout_ms=CONNECT_TIMEOUT_MS,
                  registry=registry, registry_port=registry_ports[0],
                  registry_node_port=registry_ports[1])


def check_script_path(lb: LoadBalancer, enforcing: bool = False) -> str:
    """Where keepalived's check script goes: under /usr/libexec/keepalived for the host's
    keepalived on an enforcing host (`selinux: enforcing`), else /etc/keepalived (also in
    static-pods mode, where the container runs it, not keepalived_t)."""
    return ENFORCING_CHECK_SCRIPT if enforcing and lb.mode == "services" else CHECK_SCRIPT


def config_files(lb: LoadBalancer, node_name: str, vrrp: Vrrp = VRRP_V2,
                 enforcing: bool = False, registry: bool = False) -> List[RenderedFile]:
    """The keepalived and haproxy configs node `node_name` needs in either mode (none for an
    external load balancer); `registry`: see haproxy_cfg."""
    if not lb.on_control_planes:
        return []
    script = check_script_path(lb, enforcing)
    return [
        RenderedFile(KEEPALIVED_CONF, keepalived_conf(lb, node_name, script, vrrp=vrrp), 0o644),
        RenderedFile(script, check_script(lb, node_name), 0o755),
        RenderedFile(HAPROXY_CFG, haproxy_cfg(lb, static_pod=lb.mode == "static-pods",
                                              registry=registry), 0o644),
    ]


def static_pod_files(lb: LoadBalancer, enforcing: bool = False) -> List[RenderedFile]:
    """The keepalived and haproxy static-pod manifests (mode static-pods only). With
    `enforcing` the pods run as spc_t, as kubeadm's own do then (installer/kubeadmconfig.py
    SELINUX_PATCHES): they read host files the runtime would not relabel for them."""
    if lb.mode != "static-pods":
        return []
    return [
        RenderedFile(MANIFESTS + "/keepalived.yaml",
                     render("keepalived-pod.yaml.j2", lb=lb, config_path=KEEPALIVED_CONF,
                            check_script=CHECK_SCRIPT, spc_t=enforcing), 0o600),
        RenderedFile(MANIFESTS + "/haproxy.yaml",
                     render("haproxy-pod.yaml.j2", lb=lb, config_path=HAPROXY_CFG,
                            spc_t=enforcing), 0o600),
    ]
