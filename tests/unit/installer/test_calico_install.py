"""calico as the cluster's CNI: cluster.yaml's networking.cni, the customised manifest (pool =
pod_cidr, per-node address autodetection, the EL release's iptables backend), the choice
against the bundle's add-ons, and what host prep and preflight do for calico."""

import hashlib
import json

import pytest
import yaml

from builder.bundle.addons import render_calico
from builder.inputs.recipe import Addon
from installer.format.bundleinfo import BundleAddon
from installer.format.cluster import ClusterConfigError, parse_cluster
from installer.format.errors import VerificationError
from installer.steps import calico, cni, hostprep, nmconf, preflight, run_steps
from installer.steps.cnichoice import choice_problem, chosen
from installer.steps.images import wanted_images
from tests.unit.installer.test_ha_steps import CLUSTER, FLANNEL, cluster_steps, make_ctx

CALICO = render_calico(Addon("calico", "v3.28.5", (
    "docker.io/calico/node:v3.28.5", "docker.io/calico/cni:v3.28.5",
    "docker.io/calico/kube-controllers:v3.28.5")))
WITH_CALICO = CLUSTER.replace("service_cidr: 10.96.0.0/12}",
                              "service_cidr: 10.96.0.0/12, cni: calico}")


def node_env(text):
    """The calico-node container's env in the installer's output (JSON documents)."""
    docs = [json.loads(part) for part in text.split("---\n") if part.strip()]
    ds = [d for d in docs if d["kind"] == "DaemonSet"][0]
    container = [c for c in ds["spec"]["template"]["spec"]["containers"]
                 if c["name"] == "calico-node"][0]
    return [(e["name"], e.get("value")) for e in container["env"]]


def test_networking_cni_is_checked_naming_file_line_and_key():
    with pytest.raises(ClusterConfigError) as err:
        parse_cluster(WITH_CALICO.replace("cni: calico", "cni: calcio"), "/etc/c.yaml")
    assert str(err.value).startswith("/etc/c.yaml:2: networking.cni: 'calcio' is not one of "
                                     "flannel, calico (did you mean 'calico'?)")
    with pytest.raises(ClusterConfigError, match="networking.cni: must be a string"):
        parse_cluster(WITH_CALICO.replace("cni: calico", "cni: [calico]"))
    assert parse_cluster(WITH_CALICO).cni == "calico"
    assert parse_cluster(CLUSTER).cni == ""


def test_customize_sets_pool_autodetection_and_backend_on_calico_node_only():
    text = calico.customize(CALICO, "10.32.0.0/16", "9")
    env = node_env(text)
    names = [n for n, _ in env]
    for name in ("CALICO_IPV4POOL_CIDR", "IP", "IP_AUTODETECTION_METHOD",
                 "FELIX_IPTABLESBACKEND"):
        assert names.count(name) == 1, name  # the template's default pool is replaced
    values = dict(env)
    assert values["CALICO_IPV4POOL_CIDR"] == "10.32.0.0/16"
    assert values["IP_AUTODETECTION_METHOD"] == "kubernetes-internal-ip"
    assert values["FELIX_IPTABLESBACKEND"] == "NFT"
    assert dict(node_env(calico.customize(CALICO, "10.32.0.0/16", "7")))[
        "FELIX_IPTABLESBACKEND"] == "Legacy"
    # a first-found or can-reach method in the manifest is replaced, not added to
    custom = CALICO.replace('            - name: CLUSTER_TYPE\n',
                            '            - name: IP_AUTODETECTION_METHOD\n'
                            '              value: "can-reach=10.0.0.100"\n'
                            '            - name: CLUSTER_TYPE\n')
    assert dict(node_env(calico.customize(custom, "10.32.0.0/16", "8")))[
        "IP_AUTODETECTION_METHOD"] == "kubernetes-internal-ip"
    assert calico.customize(text, "10.32.0.0/16", "9") == text  # idempotent
    with pytest.raises(ValueError, match="no calico-node container"):
        calico.customize(FLANNEL, "10.32.0.0/16", "9")


def test_every_image_the_manifest_runs_is_one_of_the_addons_images():
    images = {c["image"] for d in yaml.safe_load_all(CALICO) if d and d["kind"] in (
        "DaemonSet", "Deployment") for part in ("initContainers", "containers")
        for c in d["spec"]["template"]["spec"].get(part, [])}
    assert images == {"docker.io/calico/node:v3.28.5", "docker.io/calico/cni:v3.28.5",
                      "docker.io/calico/kube-controllers:v3.28.5"}


def calico_ctx(tmp_path, text=WITH_CALICO, both=True):
    files = {"addons/calico/calico.yaml": CALICO}
    if both:
        files["addons/flannel/kube-flannel.yml"] = FLANNEL
    ctx = make_ctx(tmp_path, "cp1", text=text, addons=files)
    ctx.info.addons = {"calico": BundleAddon("v3.28.5", ("docker.io/calico/node:v3.28.5",),
                                             "addons/calico/calico.yaml")}
    if both:
        ctx.info.addons["flannel"] = BundleAddon(
            "v0.22.3", ("docker.io/flannel/flannel:v0.22.3",),
            "addons/flannel/kube-flannel.yml")
    ctx.info.major_release = "8"
    return ctx


def test_the_cni_step_applies_the_customised_calico_manifest(tmp_path):
    ctx = calico_ctx(tmp_path)
    assert chosen(ctx) == "calico" and choice_problem(ctx) is None
    reports = run_steps(ctx, cluster_steps())
    assert "cni" in [r.name for r in reports if r.changes]
    applied = ctx.host.read_text(calico.MANIFEST)
    assert dict(node_env(applied))["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"
    assert dict(node_env(applied))["FELIX_IPTABLESBACKEND"] == "NFT"
    assert ctx.host.read_text(cni.MANIFEST) is None  # flannel is not applied
    assert hashlib.sha256(applied.encode()).hexdigest() in ctx.host.read_text(cni.STAMP)
    again = [a.what for a in cni.CniStep().actions(ctx)]
    assert not [a for a in again if "addons/calico" in a]  # a re-run applies nothing


def test_a_cni_the_bundle_lacks_is_refused_naming_file_key_and_bundle(tmp_path):
    ctx = make_ctx(tmp_path, "cp1", text=WITH_CALICO)  # flannel only
    ctx.info.addons = {"flannel": BundleAddon("v0.22.3", (), "addons/flannel/kube-flannel.yml")}
    problem = choice_problem(ctx)
    assert problem == "{}: networking.cni: calico, but bundle b carries no calico manifest " \
        "(bundle.json addons: flannel)".format(tmp_path / "cluster.yaml")
    finding = preflight.check_cni(ctx)
    assert finding.level == preflight.FAIL and finding.message == problem
    with pytest.raises(VerificationError, match="carries no calico manifest"):
        cni.CniStep().actions(ctx)


def test_without_networking_cni_a_calico_only_bundle_runs_calico(tmp_path):
    ctx = calico_ctx(tmp_path, text=CLUSTER, both=False)
    assert chosen(ctx) == "calico"
    (tmp_path / "b").mkdir()
    ctx = calico_ctx(tmp_path / "b", text=CLUSTER, both=True)
    assert chosen(ctx) == "flannel"  # flannel stays the default when the bundle has both


def test_host_prep_opens_calicos_port_and_leaves_its_devices_to_it(tmp_path):
    ctx = calico_ctx(tmp_path)
    assert "4789/udp" in hostprep.firewall_ports(ctx)
    assert "8472/udp" not in hostprep.firewall_ports(ctx)
    assert "--zone=trusted --add-interface=vxlan.calico" in hostprep.firewall_rules(ctx)
    assert nmconf.content("calico").endswith(
        "unmanaged-devices=interface-name:cali*;interface-name:vxlan.calico;"
        "interface-name:tunl*\n")
    assert preflight.required_modules("5.14.0", cni="calico")[-3:] == [
        "ip_set", "xt_set", "vxlan"]
    assert "vxlan" not in preflight.required_modules("5.14.0")


def test_the_unused_cnis_images_are_not_loaded(tmp_path):
    from installer.format.bundleinfo import BundleImage

    ctx = calico_ctx(tmp_path)
    ctx.node = ctx.cluster.node("cp1")
    images = [BundleImage(ref, "sha256:aa", 1, ("control-plane",)) for ref in (
        "docker.io/calico/node:v3.28.5", "docker.io/flannel/flannel:v0.22.3",
        "registry.k8s.io/pause:3.6")]
    ctx.info.images_for = lambda role: tuple(images)
    assert [i.reference for i in wanted_images(ctx)] == [
        "docker.io/calico/node:v3.28.5", "registry.k8s.io/pause:3.6"]


def test_without_the_key_only_the_node_that_applies_needs_a_cni_manifest(tmp_path):
    ctx = make_ctx(tmp_path, "w1")  # a worker; the bundle carries no CNI at all
    ctx.info.addons = {}
    assert preflight.check_cni(ctx).level == preflight.PASS
    (tmp_path / "cp").mkdir()
    ctx = make_ctx(tmp_path / "cp", "cp1")
    ctx.info.addons = {}
    assert preflight.check_cni(ctx).level == preflight.FAIL
    (tmp_path / "w").mkdir()
    ctx = make_ctx(tmp_path / "w", "w1", text=WITH_CALICO)
    ctx.info.addons = {}
    assert preflight.check_cni(ctx).level == preflight.FAIL  # named: every node refuses


def test_preflight_fails_a_kernel_without_calicos_modules_and_host_prep_loads_them(tmp_path):
    from installer.steps.hostprep import MODULES_FILE
    from tests.unit.installer.test_host_steps import GOOD
    from tests.unit.installer.test_hostprep_items import BASE_DEP, KERNEL7, ctx_for

    text = GOOD.replace("service_cidr: 10.96.0.0/12}", "service_cidr: 10.96.0.0/12, cni: calico}")
    calico_addon = {"calico": BundleAddon("v3.28.5", (), "addons/calico/calico.yaml")}
    ctx = ctx_for(tmp_path / "a", text, addons=calico_addon)
    finding = preflight.check_modules(ctx)
    assert finding.level == preflight.FAIL
    assert finding.message == "kernel module(s) ip_set, xt_set, vxlan not available in kernel " \
        "{} (networking.cni: calico needs ip_set, xt_set, vxlan: felix's ipsets and the " \
        "vxlan.calico device)".format(KERNEL7)
    dep = BASE_DEP + "kernel/net/netfilter/ipset/ip_set.ko.xz:\nkernel/net/netfilter/" \
        "xt_set.ko.xz:\nkernel/drivers/net/vxlan.ko.xz:\n"
    ctx = ctx_for(tmp_path / "b", text, addons=calico_addon,
                  kernel_files={"lib/modules/{}/modules.dep".format(KERNEL7): dep})
    assert preflight.check_modules(ctx).level == preflight.PASS
    assert preflight.check_modules(ctx_for(tmp_path / "c")).level == preflight.PASS  # flannel
    for action in hostprep.HostPrepStep().actions(ctx):
        if MODULES_FILE in action.what:
            action.do()
    assert ctx.host.read_text(MODULES_FILE).split()[-3:] == ["ip_set", "xt_set", "vxlan"]
