"""The apiserver load balancer on the control-plane nodes (docs/load-balancer.md).

`services`: keepalived and haproxy from the bundle repo, their configs and the health-check
script rendered by installer/lbconfig.py, haproxy.cfg checked with `haproxy -c`, both units
enabled and started (restarted when a config changed). `static-pods`: the same configs plus the
two static-pod manifests, which the kubelet runs. `external`: nothing is installed; the step only
checks that the endpoint accepts connections.

Ordering is the point (the VIP race of the users' runbooks): the **first** control-plane node
brings up its load balancer and, in services mode, holds the VIP before `kubeadm init`, which
waits for the apiserver through the endpoint. Every other control-plane node gets its load
balancer only **after** `kubeadm join` (join refuses a non-empty manifests folder, and a VRRP
peer without a local apiserver would only take the VIP away): the kubeadm step calls
bring_up() right after the join, and this step is a no-op on such a node until then.
"""

import socket
import time
from functools import partial
from typing import Callable, List

from installer import lbconfig
from installer.format.errors import PreconditionError, StepFailed
from installer.runner import Runner
from installer.steps import Action, ActionStep, Context
from installer.steps.hostprep import _enabled
from installer.steps.repo import ONLY_BUNDLE, missing_packages

PACKAGES = ("keepalived", "haproxy")
ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
VIP_WAIT = 30.0  # keepalived takes the VIP after about 3 advertisement intervals
VIP_POLL = 0.2
ENDPOINT_TIMEOUT = 3.0
# selinux-policy haproxy.te: gen_tunable(haproxy_connect_any, false); when on, haproxy_t may
# bind and connect to any port (Red Hat's own HAProxy guides turn it on for their backends)
HAPROXY_BOOLEAN = "haproxy_connect_any"


def haproxy_may_connect(runner: Runner) -> bool:
    """Under enforcing, haproxy_t may connect only to ports of a few types (http_port_t and
    kin); the apiservers' 6443 is unreserved_port_t, so without the boolean every backend is
    DOWN with "General socket error (Permission denied)". `getsebool NAME` prints
    "NAME --> on" or "NAME --> off" (libselinux utils/getsebool.c)."""
    answer = runner.query(["getsebool", HAPROXY_BOOLEAN])
    return answer.returncode == 0 and answer.stdout.split()[-1:] == ["on"]


def is_first(ctx: Context) -> bool:
    """This node is the first control-plane node in cluster.yaml: it runs `kubeadm init`."""
    return ctx.node.is_control_plane and ctx.cluster.load_balancer.is_first(ctx.node.name)


def joined(ctx: Context) -> bool:
    """kubeadm init or join completed on this node (it has the kubelet's kubeconfig)."""
    return ctx.host.exists(KUBELET_CONF)


def holds_vip(ctx: Context) -> bool:
    """The VIP is on this host's interface (`ip addr`, which sees the real network)."""
    lb = ctx.cluster.load_balancer
    out = ctx.runner.query(["ip", "-o", "-4", "addr", "show", "dev", str(lb.interface)])
    return " {}/".format(lb.vip) in out.stdout


def wait_for_vip(ctx: Context, sleep: Callable[[float], None] = time.sleep) -> str:
    """Bounded wait until keepalived has put the VIP on this host."""
    lb = ctx.cluster.load_balancer
    if ctx.runner.dry_run:
        return "wait for the VIP {} on {}".format(lb.vip, lb.interface)
    started = time.monotonic()
    while not holds_vip(ctx):
        if time.monotonic() - started > VIP_WAIT:
            raise StepFailed("keepalived did not bring up the VIP {} on {} within {:.0f}s".format(
                lb.vip, lb.interface, VIP_WAIT),
                hint="see `journalctl -u keepalived`; another host may answer VRRP for router "
                     "id {} with a different auth_pass, or the interface is wrong".format(
                         lb.router_id))
        sleep(VIP_POLL)
    return "the VIP {} is up on {} after {:.1f}s".format(lb.vip, lb.interface,
                                                         time.monotonic() - started)


def check_endpoint(ctx: Context) -> None:
    """External mode: the endpoint must accept TCP connections (raises PreconditionError)."""
    endpoint = ctx.cluster.endpoint
    try:
        with socket.create_connection((endpoint.host, endpoint.port), ENDPOINT_TIMEOUT):
            return
    except OSError as err:
        raise PreconditionError(
            "the external load balancer {} does not accept connections: {}".format(
                endpoint, err.strerror or err),
            hint="load_balancer.mode is external: bring the load balancer up first, with "
                 "this node's apiserver ({}:{}) as a backend".format(
                     ctx.node.address, ctx.cluster.load_balancer.apiserver_port))


def bring_up(ctx: Context) -> List[Action]:
    """What this control-plane node still needs for its load balancer, in order."""
    lb = ctx.cluster.load_balancer
    host, runner = ctx.host, ctx.runner
    found: List[Action] = []
    if lb.mode == "services":
        missing = missing_packages(ctx, list(PACKAGES))
        if missing:
            found.append(Action("install " + " ".join(missing), partial(
                runner.run, ["yum", "-y"] + ONLY_BUNDLE + ["install"] + list(PACKAGES),
                timeout=1800)))
    vrrp = lbconfig.vrrp_for(lb, ctx.info.release)
    enforcing = ctx.cluster.enforcing
    script = lbconfig.check_script_path(lb, enforcing)
    registry = ctx.cluster.images_mode == "registry"
    files = lbconfig.config_files(lb, ctx.node.name, vrrp, enforcing, registry) + \
        lbconfig.static_pod_files(lb, enforcing)
    stale = [f for f in files if host.needs_write(f.path, f.content.encode("utf-8"), f.mode)]
    if stale:
        def write() -> None:
            for item in stale:
                host.write(item.path, item.content, item.mode)
            if script == lbconfig.ENFORCING_CHECK_SCRIPT:
                # the policy's label for the folder and the script, so keepalived_t may run it
                runner.run(["restorecon", "-R", host.path(lbconfig.LIBEXEC_DIR)],
                           hint="restorecon (policycoreutils) labels the check script for "
                                "keepalived; see docs/selinux.md")
            if lb.mode == "services":
                runner.run(["haproxy", "-c", "-f", host.path(lbconfig.HAPROXY_CFG)],
                           hint="the rendered haproxy.cfg was refused; see docs/load-balancer.md")

        found.append(Action("write " + ", ".join(f.path for f in stale), write))
    if lb.mode == "services" and enforcing and not haproxy_may_connect(runner):
        found.append(Action("setsebool -P {} 1 (haproxy_t may connect to the apiservers' "
                            "port)".format(HAPROXY_BOOLEAN), partial(
                                runner.run, ["setsebool", "-P", HAPROXY_BOOLEAN, "1"],
                                hint="setsebool (policycoreutils) lets the host's haproxy "
                                     "reach the apiservers; see docs/selinux.md")))
    if lb.mode == "services":
        changed = {f.path for f in stale}
        for unit, configs in (("haproxy", {lbconfig.HAPROXY_CFG}),
                              ("keepalived", {lbconfig.KEEPALIVED_CONF, script})):
            actions = _enabled(ctx, unit, start=True, step="loadbalancer")
            starting = any(a.what == "start " + unit for a in actions)
            if changed & configs and not starting:
                actions.append(Action("restart " + unit,
                                      partial(runner.run, ["systemctl", "restart", unit])))
            found.extend(actions)
        if is_first(ctx) and not host.exists(ADMIN_CONF) and not holds_vip(ctx):
            found.append(Action("wait for keepalived to take the VIP {}".format(lb.vip),
                                partial(wait_for_vip, ctx)))
    return found


class LoadBalancerStep(ActionStep):
    name = "loadbalancer"
    title = "keepalived + haproxy for the apiserver VIP (first node before kubeadm init)"

    def actions(self, ctx: Context) -> List[Action]:
        lb = ctx.cluster.load_balancer
        if not ctx.node.is_control_plane:
            return []
        if lb.mode == "external":
            check_endpoint(ctx)
            return []
        if not (is_first(ctx) or joined(ctx)):
            return []  # after `kubeadm join`: the kubeadm step brings it up
        return bring_up(ctx)
