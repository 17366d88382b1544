"""Preflight refuses static-pods mode with a bundle that lacks the load balancer's images:
the kubelet would try to pull them on a host that cannot."""

from types import SimpleNamespace

from installer.format.bundleinfo import BundleImage
from installer.format.cluster import parse_cluster
from installer.steps.preflight import findings

CLUSTER = """\
cluster_name: lb
control_plane: {{vip: 10.0.0.100}}
networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}
load_balancer: {{mode: {mode}, interface: eth0, auth_pass: kcLb01}}
nodes:
  - {{name: cp1, address: 10.0.0.11, role: control-plane}}
  - {{name: w1, address: 10.0.0.21, role: worker}}
"""
KEEPALIVED = "docker.io/osixia/keepalived:2.0.20"
HAPROXY = "docker.io/library/haproxy:2.8"


def _ctx(mode, node, images):
    cluster = parse_cluster(CLUSTER.format(mode=mode))
    info = SimpleNamespace(
        name="k8s", images=tuple(BundleImage(ref, "sha256:a", 1, ("control-plane",))
                                 for ref in images),
        images_for=lambda role: tuple(BundleImage(ref, "sha256:a", 1, ("control-plane",))
                                      for ref in images if role == "control-plane"))
    return SimpleNamespace(cluster=cluster, node=cluster.node(node), info=info)


def _lb(ctx):
    from installer.steps.preflight_lb import check_lb_images

    return check_lb_images(ctx)


def test_static_pods_needs_both_images_in_the_control_plane_set():
    (found,) = _lb(_ctx("static-pods", "cp1", [HAPROXY]))
    assert found.level == "fail"
    assert "does not carry docker.io/osixia/keepalived:2.0.20" in found.message
    assert "@loadbalancer" in found.fix
    (ok,) = _lb(_ctx("static-pods", "cp1", [KEEPALIVED, HAPROXY]))
    assert ok.level == "pass"


def test_other_modes_and_workers_need_no_load_balancer_images():
    assert _lb(_ctx("services", "cp1", [])) == []
    assert _lb(_ctx("static-pods", "w1", [])) == []


def test_the_check_is_part_of_preflight():
    from installer.steps import preflight

    assert any(getattr(c, "__name__", "") == "check_lb_images" for c in preflight.CHECKS)
    assert callable(findings)
