"""The registry step (images.mode registry): on each control plane, once the bundle carries
distribution's image, a certificate, config.yml and the kubecrate-registry unit; nothing on a
worker, in archive mode or without the image (every node then keeps loading the archive)."""

import logging
from types import SimpleNamespace

import yaml

from installer import registryserve
from installer.format.bundleinfo import BundleImage
from installer.format.cluster import parse_cluster
from installer.host import Host
from installer.steps import images
from installer.steps.registry import RegistryStep
from tests.unit.installer.test_host_steps import FakeRunner
from tests.unit.installer.test_registry_mode import CLUSTER, REGISTRY

REFS = ["registry.k8s.io/pause:3.6", "docker.io/flannel/flannel:v0.22.3"]
DISTRIBUTION = "docker.io/library/registry:2.8.3"


class Runner(FakeRunner):
    def run(self, argv, timeout=0, hint=None):
        return self.query(argv)


def _ctx(tmp_path, text=REGISTRY, node=0, refs=REFS + [DISTRIBUTION], answers=None):
    cluster = parse_cluster(text)
    bundle = [BundleImage(ref, "sha256:" + "a" * 64, 1, ("worker",)) for ref in refs]
    info = SimpleNamespace(runtime="containerd", images=bundle, addons={},
                           images_for=lambda role: bundle)
    return SimpleNamespace(host=Host(str(tmp_path)), cluster=cluster, node=cluster.nodes[node],
                           info=info, runner=Runner(answers))


def test_a_control_plane_gets_its_registry_config_unit_and_certificate(tmp_path):
    ctx = _ctx(tmp_path)
    actions = RegistryStep().actions(ctx)
    assert [a.what for a in actions] == [
        "issue /etc/kubernetes/kubecrate/registry/server.crt for 10.0.0.11",
        "write /etc/kubernetes/kubecrate/registry/config.yml",
        "write /etc/systemd/system/kubecrate-registry.service",
        "start kubecrate-registry on 10.0.0.11:8009"]
    for action in actions[1:]:
        action.do()
    config = yaml.safe_load((tmp_path / "etc/kubernetes/kubecrate/registry/config.yml").read_text())
    assert config["http"]["addr"] == "10.0.0.11:8009"
    assert config["storage"]["filesystem"]["rootdirectory"] == "/var/lib/kubecrate/registry"
    assert config["storage"]["maintenance"]["readonly"] == {"enabled": True}
    assert config["http"]["tls"] == {"certificate": registryserve.CERT, "key": registryserve.KEY}
    unit = (tmp_path / "etc/systemd/system/kubecrate-registry.service").read_text()
    assert " " + DISTRIBUTION + " kubecrate-registry registry serve " + registryserve.CONFIG in unit
    assert ["systemctl", "restart", "kubecrate-registry"] in ctx.runner.calls
    # once written, enabled and running (and the certificate there): nothing left to do
    (tmp_path / "etc/kubernetes/kubecrate/registry/server.crt").write_text("c")
    (tmp_path / "etc/kubernetes/kubecrate/registry/server.key").write_text("k")
    running = {("systemctl", "is-enabled"): (0, "enabled\n"),
               ("systemctl", "is-active"): (0, "active\n")}
    done = _ctx(tmp_path, answers={**running, ("openssl", "x509", "-checkend"): (0, "")})
    assert RegistryStep().actions(done) == []
    # within 30 days of its end (openssl x509 -checkend exits 1): issued again, restarted
    expiring = _ctx(tmp_path, answers=running)
    assert [a.what for a in RegistryStep().actions(expiring)] == [
        "issue /etc/kubernetes/kubecrate/registry/server.crt again for 10.0.0.11 (it expires "
        "within 30 days)", "start kubecrate-registry on 10.0.0.11:8009"]
    assert expiring.runner.calls[0][:4] == ["openssl", "x509", "-checkend", str(30 * 86400)]


def test_no_registry_on_a_worker_in_archive_mode_or_without_distributions_image(tmp_path,
                                                                                 caplog):
    assert RegistryStep().actions(_ctx(tmp_path, node=1)) == []
    assert RegistryStep().actions(_ctx(tmp_path, text=CLUSTER)) == []
    with caplog.at_level(logging.WARNING):
        assert RegistryStep().actions(_ctx(tmp_path, refs=REFS)) == []
    assert "carries no docker.io/library/registry image" in caplog.text


def test_workers_load_no_images_once_the_control_planes_serve_them(tmp_path):
    assert images.wanted_images(_ctx(tmp_path, node=1)) == []
    assert len(images.wanted_images(_ctx(tmp_path, node=0))) == 3  # the registry runs from it
    assert len(images.wanted_images(_ctx(tmp_path, node=1, refs=REFS))) == 2  # none served
    # archive mode: everything but distribution's image, which no node then runs
    archive = images.wanted_images(_ctx(tmp_path, node=0, text=CLUSTER))
    assert [i.reference for i in archive] == REFS


def test_preflight_warns_when_registry_mode_has_no_registry_image_to_run(tmp_path):
    from installer.steps.preflight import check_registry
    (found,) = check_registry(_ctx(tmp_path, refs=REFS, node=1))
    assert (found.level, found.check) == ("warn", "registry")
    assert "every node loads the image archive" in found.message
    assert "rebuild the bundle" in found.fix
    assert check_registry(_ctx(tmp_path)) == []
    assert check_registry(_ctx(tmp_path, text=CLUSTER, refs=REFS)) == []


def test_an_upgrade_feeds_the_new_images_on_control_planes_and_loads_nothing_on_workers(
        tmp_path):
    """`upgrade --bundle NEW.tar` runs the images step first (installer/steps/upgradesteps.py):
    with the new bundle's images, a control plane loads its own and lays every role's out as
    registry storage before kubeadm changes anything; a worker loads none (containerd pulls
    through the VIP)."""
    from installer import upgrade
    from installer.steps import upgradesteps
    from tests.unit.installer.test_ha_steps import CLUSTER as HA
    from tests.unit.installer.test_ha_steps import make_ctx

    new = ["registry.k8s.io/kube-proxy:v1.31.14", "registry.k8s.io/pause:3.10", DISTRIBUTION]
    plans = {}
    for name in ("cp1", "w1"):
        (tmp_path / name).mkdir()
        ctx = make_ctx(tmp_path / name, name, text=HA + "images: {mode: registry}\n")
        ctx.info.runtime, ctx.info.kubernetes_version = "containerd", "v1.31.14"
        ctx.info.images = tuple(BundleImage(ref, "sha256:" + "b" * 64, 1,
                                            ("control-plane", "worker")) for ref in new)
        ctx.info.images_for = lambda role, images=ctx.info.images: images
        steps = upgradesteps.steps(upgrade.Upgrade(ctx, ctx.info, None, False))
        assert [s.name for s in steps][:2] == ["unpack", "images"]
        plans[name] = [a.what for a in steps[1].actions(ctx)]
    assert plans["w1"] == []
    load, lay = plans["cp1"]
    assert load.startswith("load 3 image(s)") and DISTRIBUTION in load
    assert lay == ("lay 2 image(s) out as registry storage in /var/lib/kubecrate/registry: "
                   "registry.k8s.io/kube-proxy:v1.31.14 registry.k8s.io/pause:3.10")


def test_an_upgrade_to_another_distribution_tag_runs_the_registry_on_the_new_image(tmp_path):
    """A new bundle whose "@registry" set carries another distribution tag: on each control
    plane, as it takes its upgrade, the kubecrate-registry unit is written for the new image
    (loaded by the images step just before) and restarted; once it runs, nothing is left to
    do, and an upgrade with the same image changes nothing. A worker gets no registry, and its
    hosts.toml (the runtime step) still sends the new bundle's pulls to the VIP."""
    from installer import upgrade
    from installer.steps import upgradesteps
    from tests.unit.installer.test_ha_steps import CLUSTER as HA
    from tests.unit.installer.test_ha_steps import make_ctx

    newer = "docker.io/library/registry:2.8.4"

    def plan(name, image):
        ctx = make_ctx(tmp_path / name, name, text=HA + "images: {mode: registry}\n")
        ctx.info.runtime, ctx.info.kubernetes_version = "containerd", "v1.31.14"
        ctx.info.pause_image = "registry.k8s.io/pause:3.10"
        ctx.info.images = tuple(BundleImage(ref, "sha256:" + "b" * 64, 1, ("control-plane",))
                                for ref in ("registry.k8s.io/pause:3.10", image))
        steps = upgradesteps.steps(upgrade.Upgrade(ctx, ctx.info, None, False))
        registry = next((s for s in steps if s.name == "registry"), None)
        assert registry, "upgrade runs no registry step: {}".format([s.name for s in steps])
        return ctx, steps, registry

    (tmp_path / "cp1").mkdir()
    ctx, steps, registry = plan("cp1", newer)
    names = [s.name for s in steps]
    assert names.index("images") < names.index("registry") < names.index(
        "upgrade-kubeadm-upgrade")  # the new image is loaded before the unit names it
    address = ctx.node.address
    unit = registryserve.UNIT_FILE
    ctx.host.write(registryserve.CONFIG, registryserve.config_yml(address))
    ctx.host.write(unit, registryserve.unit_text(address, DISTRIBUTION))  # the install's
    for path in (registryserve.CERT, registryserve.KEY):
        ctx.host.write(path, "x")
    ctx.runner.units.update({registryserve.UNIT: "active", registryserve.UNIT + "+": "on"})
    ctx.runner.calls.clear()
    actions = registry.actions(ctx)
    assert [a.what for a in actions] == [
        "write " + unit, "start kubecrate-registry on {}:8009".format(address)]
    for action in actions:
        action.do()
    assert " {} kubecrate-registry registry serve".format(newer) in ctx.host.read_text(unit)
    assert ["systemctl", "restart", registryserve.UNIT] in ctx.runner.calls
    assert registry.actions(ctx) == []  # running the new image: nothing again
    # the same distribution image as the install's: nothing written or restarted
    ctx.host.write(unit, registryserve.unit_text(address, DISTRIBUTION))
    same, _steps, registry = plan("cp1", DISTRIBUTION)
    same.runner.units.update(ctx.runner.units)
    assert registry.actions(same) == []
    (tmp_path / "w1").mkdir()
    worker, steps, registry = plan("w1", newer)
    assert registry.actions(worker) == []
    runtime = [s for s in steps if s.name == "runtime"][0]
    for action in runtime.actions(worker):
        action.do()
    vip = worker.cluster.endpoint.host
    for registry_host in ("registry.k8s.io", "docker.io"):
        hosts = worker.host.read_text("/etc/containerd/certs.d/{}/hosts.toml".format(
            registry_host))
        assert '[host."https://{}:8008/v2/{}"]'.format(vip, registry_host) in hosts
