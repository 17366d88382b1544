"""keepalived and haproxy for the apiserver VIP: the files a control-plane node gets, rendered
from installer/templates/ (docs/load-balancer.md).

`services` mode: configs for the host's keepalived 1.3.5+ and haproxy 1.5.18+ packages.
`static-pods` mode: the same configs (haproxy logging to stdout) plus two static-pod manifests
for the bundled images; the first control-plane node gets the manifests before `kubeadm init`,
the others only after they joined (kubeadm join refuses a non-empty manifests folder).
"""

from typing import List, NamedTuple

from installer.lbspec import CHECK_WEIGHT, LoadBalancer
from installer.render import render

KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/check_apiserver.sh"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
MANIFESTS = "/etc/kubernetes/manifests"


class HealthCheck(NamedTuple):
    """Timings shared by keepalived's vrrp_script and haproxy's server checks, in seconds.
    A dead apiserver fails `fall` checks `interval` apart, each bounded by `timeout`: it is
    noticed within interval * fall + timeout = 3 s."""
    interval: int = 1
    timeout: int = 1
    fall: int = 2
    rise: int = 2
    weight: int = CHECK_WEIGHT

    @property
    def detection_seconds(self) -> int:
        return self.interval * self.fall + self.timeout


CHECK = HealthCheck()


class RenderedFile(NamedTuple):
    path: str  # host path
    content: str
    mode: int


def _node(lb: LoadBalancer, node_name: str):
    if not lb.on_control_planes:
        raise ValueError("load balancer mode 'external' renders no keepalived or haproxy")
    return lb.peer(node_name)


def keepalived_conf(lb: LoadBalancer, node_name: str, check_script: str = CHECK_SCRIPT) -> str:
    """keepalived.conf for control-plane node `node_name` (first node: MASTER, highest priority;
    unicast to every other peer)."""
    node = _node(lb, node_name)
    peers = [address for address in lb.unicast_peers if address != node.address]
    return render("keepalived.conf.j2", lb=lb, node=node, first=lb.is_first(node_name),
                  priority=lb.priority(node_name), peers=peers, check=CHECK,
                  check_script=check_script)


def check_script(lb: LoadBalancer, node_name: str) -> str:
    """The vrrp_script health check (POSIX sh + curl) for `node_name`."""
    return render("check_apiserver.sh.j2", lb=lb, node=_node(lb, node_name), check=CHECK)


def haproxy_cfg(lb: LoadBalancer, static_pod: bool = False) -> str:
    """haproxy.cfg, the same on every control-plane node; `static_pod` logs to stdout (1.9+)
    and keeps the image's own user."""
    if not lb.on_control_planes:
        raise ValueError("load balancer mode 'external' renders no keepalived or haproxy")
    return render("haproxy.cfg.j2", lb=lb, check=CHECK, static_pod=static_pod)


def config_files(lb: LoadBalancer, node_name: str) -> List[RenderedFile]:
    """The keepalived and haproxy configs node `node_name` needs in either mode (none for an
    external load balancer)."""
    if not lb.on_control_planes:
        return []
    return [
        RenderedFile(KEEPALIVED_CONF, keepalived_conf(lb, node_name), 0o644),
        RenderedFile(CHECK_SCRIPT, check_script(lb, node_name), 0o755),
        RenderedFile(HAPROXY_CFG, haproxy_cfg(lb, static_pod=lb.mode == "static-pods"), 0o644),
    ]


def static_pod_files(lb: LoadBalancer) -> List[RenderedFile]:
    """The keepalived and haproxy static-pod manifests (mode static-pods only)."""
    if lb.mode != "static-pods":
        return []
    return [
        RenderedFile(MANIFESTS + "/keepalived.yaml",
                     render("keepalived-pod.yaml.j2", lb=lb, config_path=KEEPALIVED_CONF,
                            check_script=CHECK_SCRIPT), 0o600),
        RenderedFile(MANIFESTS + "/haproxy.yaml",
                     render("haproxy-pod.yaml.j2", lb=lb, config_path=HAPROXY_CFG), 0o600),
    ]
