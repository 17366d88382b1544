"""Preflight for the static-pod load balancer: the bundle must carry the images it runs.

In `load_balancer.mode: static-pods` the kubelet runs keepalived and haproxy from the images
named by `load_balancer.keepalived_image` / `haproxy_image` with `imagePullPolicy:
IfNotPresent`. On an air-gapped host an image that the bundle does not load is pulled from its
registry, which fails: the VIP never appears and `kubeadm init` times out. A bundle gets them
with `"@loadbalancer"` in its recipe's control-plane images (docs/recipe.md).
"""

from typing import List

from installer.steps import Context
from installer.steps.findings import Finding

PASS, FAIL = "pass", "fail"


def _short(reference: str) -> str:
    for prefix in ("docker.io/library/", "docker.io/"):
        if reference.startswith(prefix):
            return reference[len(prefix):]
    return reference


def missing_lb_images(ctx: Context) -> List[str]:
    """The static-pod images this control-plane node would run that its bundle set lacks."""
    wanted = ctx.cluster.load_balancer.static_pod_images()
    have = {_short(image.reference) for image in ctx.info.images_for("control-plane")}
    return [ref for ref in wanted if _short(ref) not in have]


def check_lb_images(ctx: Context) -> List[Finding]:
    if not ctx.node.is_control_plane or ctx.cluster.load_balancer.mode != "static-pods":
        return []
    missing = missing_lb_images(ctx)
    if missing:
        return [Finding(FAIL, "lb-images", "load_balancer.mode static-pods runs {} as static "
                        "pods, but bundle {} does not carry {}".format(
                            " and ".join(ctx.cluster.load_balancer.static_pod_images()),
                            ctx.info.name, " or ".join(missing)),
                        "build the bundle with \"@loadbalancer\" (or these references) in the "
                        "recipe's roles.control-plane.images, or set load_balancer.keepalived_image"
                        "/haproxy_image to images the bundle has, or use mode services")]
    return [Finding(PASS, "lb-images", "the bundle carries the static-pod images {}".format(
        ", ".join(ctx.cluster.load_balancer.static_pod_images())))]
