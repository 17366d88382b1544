"""Watching for the VIP while `kubeadm init` runs (load_balancer.mode static-pods).

In static-pods mode keepalived is a static pod: the kubelet starts it only inside `kubeadm
init`, so no VIP can exist before init, and init itself waits for the apiserver through the
VIP. If keepalived never takes the VIP (its image is not in the runtime, its pod fails, VRRP is
blocked), kubeadm would wait out its whole wait-control-plane timeout (4 min) and say only that
the control plane did not come up. The installer watches the interface instead and, when the
VIP has not appeared within INIT_VIP_BOUND seconds, stops init and says why.
"""

import time
from typing import Callable, List, Optional

from installer.format.errors import StepFailed
from installer.steps import Context
from installer.steps.images import normalize, present_images
from installer.steps.loadbalancer import holds_vip

# The kubelet's start, the pods' start and keepalived's first advertisements (about 3 s)
# take well under a minute on a healthy node.
INIT_VIP_BOUND = 60.0


class VipWatch:
    """A Runner `watch`: None while all is well, a StepFailed once the bound has passed
    without the VIP on this host; quiet for good once the VIP was seen."""

    def __init__(self, ctx: Context, bound: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx, self.clock = ctx, clock
        self.bound = INIT_VIP_BOUND if bound is None else bound
        self.started = clock()
        self.seen = False

    def __call__(self) -> Optional[StepFailed]:
        if self.seen:
            return None
        if holds_vip(self.ctx):
            self.seen = True
            return None
        if self.clock() - self.started < self.bound:
            return None
        return diagnose(self.ctx, self.bound)


def missing_images(ctx: Context) -> List[str]:
    """The static-pod images the container runtime does not have."""
    present = present_images(ctx)
    return [ref for ref in ctx.cluster.load_balancer.static_pod_images()
            if normalize(ref) not in present]


def diagnose(ctx: Context, bound: float) -> StepFailed:
    lb = ctx.cluster.load_balancer
    head = "kubeadm init stopped: the VIP {} did not appear on {} within {:.0f}s".format(
        lb.vip, lb.interface, bound)
    missing = missing_images(ctx)
    if missing:
        return StepFailed(
            "{}: image {} is not in the container runtime, so the kubelet cannot start the "
            "load balancer's static pods (ImagePullBackOff; this host cannot pull)".format(
                head, " and ".join(missing)),
            hint="rebuild the bundle with \"@loadbalancer\" in the recipe's "
                 "roles.control-plane.images (`kubecrate lint BUNDLE --cluster cluster.yaml` "
                 "checks it), run `reset`, and install again")
    return StepFailed(
        "{}: keepalived's static pod is not running, or VRRP (IP protocol 112) between the "
        "control-plane nodes is blocked, or the interface is wrong".format(head),
        hint="see `journalctl -u kubelet` and `{} ps -a` for the keepalived pod; "
             "/etc/keepalived/keepalived.conf must name interface {} and router id {} unused "
             "on the link; then `reset` and install again".format(
                 "docker" if ctx.info.runtime == "docker" else "crictl", lb.interface,
                 lb.router_id))
