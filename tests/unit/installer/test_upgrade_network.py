"""`upgrade --bundle` re-applies the CNI manifest (first control plane) and rewrites the
static-pod load balancer's files (control planes, mode static-pods) after the control plane is
upgraded, only where the new bundle makes them differ (installer/steps/upgradenet.py): an
unchanged manifest is neither applied nor counted, `plan` shows the apply before anything
changes, and a load balancer whose new images the bundle lacks is refused by preflight."""

import hashlib

from installer import upgrade
from installer.format.bundleinfo import BundleImage
from installer.steps import cni, run_steps, upgradenet, upgradesteps
from installer.steps.loadbalancer import LoadBalancerStep
from tests.unit.installer.test_ha_steps import CLUSTER, FLANNEL, make_ctx

NEW_FLANNEL = FLANNEL.replace("flannel:v0.22.3", "flannel:v0.26.7")
STATIC = CLUSTER.replace("mode: services", "mode: static-pods")
LB_IMAGES = ("docker.io/osixia/keepalived:2.0.20", "docker.io/library/haproxy:2.8")


def installed(tmp_path, name="cp1", text=CLUSTER):
    """`name` as install left it from the old bundle (digest d...): CNI applied on cp1, the
    load balancer's files written on a control plane."""
    ctx = make_ctx(tmp_path, name, text=text)
    for conf in ("admin.conf", "kubelet.conf"):  # joined (cp2: its load balancer after it)
        ctx.host.write("/etc/kubernetes/" + conf, "x\n", 0o600)
    steps = [cni.CniStep()] if name == "cp1" else []
    steps += [LoadBalancerStep()] if "static-pods" in text else []
    run_steps(ctx, steps, apply=True)
    return ctx


def upgrading(tmp_path, name, manifest, unpacked=True, text=CLUSTER, images=LB_IMAGES):
    """`name`'s context for the new bundle (digest e...) that carries `manifest` as its
    flannel manifest and `images`, in the cache when `unpacked` (else as plan sees it), and
    the Upgrade from the old bundle (make_ctx's, digest d...)."""
    ctx = make_ctx(tmp_path, name, text=text)
    old = make_ctx(tmp_path, name, text=text).info
    old.name = "k8s-old"
    source = "addons/flannel/kube-flannel-v2.yml"
    ctx.info.digest, ctx.info.name = "e" * 64, "k8s-new"
    ctx.info.hashes = {source: hashlib.sha256(manifest.encode()).hexdigest()}
    ctx.info.addons = {"flannel": ctx.info.addons["flannel"]._replace(manifest=source)}
    ctx.info.images = tuple(BundleImage(ref, "sha256:" + "1" * 64, 1, ("control-plane",))
                            for ref in images)
    ctx.info.images_for = lambda role: ctx.info.images
    if unpacked:
        ctx.host.write(ctx.bundle_host_dir + "/" + source, manifest)
    return ctx, upgrade.Upgrade(ctx, old, None, True)


def network_steps(up):
    return [upgradenet.LoadBalancerStep(up), upgradenet.CniStep(up)]


def kubectl_applies(ctx):
    return [c for c in ctx.runner.calls if c[:1] == ["kubectl"] and "apply" in c
            and cni.MANIFEST in c]


def test_an_unchanged_cni_manifest_is_neither_applied_nor_counted(tmp_path):
    before = installed(tmp_path)
    assert len(kubectl_applies(before)) == 1
    ctx, up = upgrading(tmp_path, "cp1", FLANNEL)  # the same bytes under another path
    ctx.runner = before.runner
    for plan in (True, False):
        reports = run_steps(ctx, network_steps(up), apply=not plan)
        assert [r.changes for r in reports] == [[], []]
    assert len(kubectl_applies(ctx)) == 1
    # plan before the new bundle is unpacked: the same bytes are read from the old bundle
    ctx, up = upgrading(tmp_path, "cp1", FLANNEL, unpacked=False)
    assert [r.changes for r in run_steps(ctx, network_steps(up), apply=False)] == [[], []]


def test_a_changed_cni_manifest_is_planned_then_applied_once_after_the_control_plane(
        tmp_path):
    before = installed(tmp_path)
    ctx, up = upgrading(tmp_path, "cp1", NEW_FLANNEL, unpacked=False)
    (plan,) = run_steps(ctx, [upgradenet.CniStep(up)], apply=False)
    assert plan.changes == ["apply addons/flannel/kube-flannel-v2.yml (bundle k8s-new carries "
                            "another flannel manifest than bundle k8s-old)"]
    ctx, up = upgrading(tmp_path, "cp1", NEW_FLANNEL)
    ctx.runner = before.runner
    names = [s.name for s in upgradesteps.steps(up)]
    assert names.index("upgrade-kubeadm-upgrade") < names.index("upgrade-loadbalancer") \
        < names.index("upgrade-cni") < names.index("upgrade-drain")
    (done,) = run_steps(ctx, [upgradenet.CniStep(up)], apply=True)
    assert done.changes == ["apply addons/flannel/kube-flannel-v2.yml with pod CIDR "
                            "10.244.0.0/16 and FLANNELD_IFACE = each node's status.hostIP"]
    assert kubectl_applies(ctx)[-1] == ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf",
                                        "apply", "-f", cni.MANIFEST]
    assert "flannel:v0.26.7" in ctx.host.read_text(cni.MANIFEST)
    (again,) = run_steps(ctx, [upgradenet.CniStep(up)], apply=True)
    assert again.changes == [] and len(kubectl_applies(ctx)) == 2
    # the other nodes apply nothing: the DaemonSet is the cluster's
    other, other_up = upgrading(tmp_path, "cp2", NEW_FLANNEL)
    assert upgradenet.CniStep(other_up).actions(other) == []


def test_static_pod_load_balancer_rewritten_only_where_it_differs(tmp_path):
    before = installed(tmp_path, "cp2", STATIC)
    manifest = before.host.read_text("/etc/kubernetes/manifests/haproxy.yaml")
    ctx, up = upgrading(tmp_path, "cp2", FLANNEL, text=STATIC)
    assert run_steps(ctx, network_steps(up), apply=True)[0].changes == []
    assert upgradenet.lb_findings(ctx) == []
    # cluster.yaml names the haproxy image the new bundle carries
    text = STATIC.replace("auth_pass: k8sVIP42", "auth_pass: k8sVIP42\n"
                          "  haproxy_image: docker.io/library/haproxy:2.9")
    images = (LB_IMAGES[0], "docker.io/library/haproxy:2.9")
    ctx, up = upgrading(tmp_path, "cp2", FLANNEL, text=text, images=images)
    ctx.runner = before.runner
    assert [f.level for f in upgradenet.lb_findings(ctx)] == ["pass"]
    (plan, _) = run_steps(ctx, network_steps(up), apply=False)
    assert plan.changes == ["write /etc/kubernetes/manifests/haproxy.yaml"]
    assert ctx.host.read_text("/etc/kubernetes/manifests/haproxy.yaml") == manifest
    (done, _) = run_steps(ctx, network_steps(up), apply=True)
    assert done.changes == plan.changes
    assert "haproxy:2.9" in ctx.host.read_text("/etc/kubernetes/manifests/haproxy.yaml")
    assert run_steps(ctx, network_steps(up), apply=True)[0].changes == []


def test_a_load_balancer_image_the_bundle_lacks_is_refused_before_it_is_written(tmp_path):
    installed(tmp_path, "cp2", STATIC)
    text = STATIC.replace("auth_pass: k8sVIP42", "auth_pass: k8sVIP42\n"
                          "  haproxy_image: docker.io/library/haproxy:2.9")
    ctx, up = upgrading(tmp_path, "cp2", FLANNEL, text=text)  # carries haproxy:2.8 only
    (found,) = upgradenet.lb_findings(ctx)
    assert found.level == "fail" and "does not carry docker.io/library/haproxy:2.9" in \
        found.message, found
    # unchanged files keep the pods (and the images the runtime has) as they are
    ctx, up = upgrading(tmp_path, "cp2", FLANNEL, text=STATIC, images=())
    assert upgradenet.lb_findings(ctx) == []


def test_plan_of_a_later_step_whose_previous_bundle_is_not_cached_yet(tmp_path):
    """A walk's plan (installer/upgradepath.py): the step before this one is not in the cache
    yet, so the manifest's bytes are nowhere to read; the plan says the apply is decided once
    the bundle is unpacked, instead of failing on the missing file."""
    installed(tmp_path)
    ctx, up = upgrading(tmp_path, "cp1", FLANNEL, unpacked=False)
    up.old.digest = "c" * 64  # the previous step's bundle: only its bundle.json is known
    (plan,) = run_steps(ctx, [upgradenet.CniStep(up)], apply=False)
    assert plan.changes == ["apply addons/flannel/kube-flannel-v2.yml unless the cluster runs "
                            "the same (decided once bundle k8s-new is unpacked)"]
