"""cluster.yaml's `images.mode` (archive | registry): parsed with a did-you-mean, and
`registry` refused against a Docker bundle with the reason, naming file, line and key (by the
installer) or the file (by `kubecrate lint --cluster`)."""

from types import SimpleNamespace

import pytest
import tomllib

from builder.bundle.lint import lint_cluster
from installer.format.bundleinfo import BundleImage
from installer.format.cluster import ClusterConfigError, kubeadm_settings, parse_cluster
from installer.format.errors import ExitCode
from installer.host import Host
from installer.steps import runtime
from tests.unit.installer.test_host_steps import FakeRunner

CLUSTER = """\
control_plane: {vip: 10.0.0.100}
networking: {pod_cidr: 10.244.0.0/16}
load_balancer: {mode: services, interface: eth0, router_id: 51, auth_pass: k8sVIP42}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
"""
REGISTRY = CLUSTER + "images:\n  mode: registry\n"


def test_images_mode_defaults_to_archive_and_takes_registry():
    assert parse_cluster(CLUSTER).images_mode == "archive"
    assert parse_cluster(CLUSTER + "images: {mode: archive}\n").images_mode == "archive"
    assert parse_cluster(REGISTRY).images_mode == "registry"


@pytest.mark.parametrize("section, message", [
    ("images: {mode: registy}\n",
     "cluster.yaml:7: images.mode: 'registy' is not one of archive, registry "
     "(did you mean 'registry'?)"),
    ("images: {mod: registry}\n", "cluster.yaml:7: images.mod: unknown key"),
    ("images: registry\n", "cluster.yaml:7: images:"),
])
def test_a_wrong_images_section_names_the_line_and_key(section, message):
    with pytest.raises(ClusterConfigError) as err:
        parse_cluster(CLUSTER + section)
    assert err.value.message.startswith(message), err.value.message
    assert err.value.exit_code == ExitCode.USAGE


def test_registry_mode_is_refused_with_a_docker_bundle_and_says_why(tmp_path):
    source = tmp_path / "cluster.yaml"
    source.write_text(REGISTRY)
    cluster = parse_cluster(source.read_text(), str(source))
    with pytest.raises(ClusterConfigError) as err:
        kubeadm_settings(cluster, "v1.23.17", "registry.k8s.io", "docker")
    assert err.value.message.startswith("{}:8: images.mode: 'registry' needs containerd"
                                        .format(source)), err.value.message
    assert "registry-mirrors mirror Docker Hub only" in err.value.message
    assert "images.mode: archive" in err.value.hint
    assert err.value.exit_code == ExitCode.USAGE
    assert kubeadm_settings(cluster, "v1.23.17", "registry.k8s.io", "containerd").runtime \
        == "containerd"
    archive = parse_cluster(CLUSTER, str(source))
    assert kubeadm_settings(archive, "v1.23.17", "registry.k8s.io", "docker").runtime == "docker"


def test_lint_with_the_cluster_yaml_refuses_registry_mode_for_a_docker_bundle():
    contents = SimpleNamespace(sections=SimpleNamespace(roles={}), images=lambda: [],
                               manifest={"runtime": "docker"})
    problems = lint_cluster(contents, parse_cluster(REGISTRY))
    assert problems == ["cluster.yaml: images.mode: registry needs containerd, but the bundle's "
                        "runtime is docker: Docker's registry-mirrors mirror Docker Hub only "
                        "(use images.mode: archive, or a containerd bundle)"]
    assert lint_cluster(contents, parse_cluster(CLUSTER)) == []
    contents.manifest["runtime"] = "containerd"
    assert lint_cluster(contents, parse_cluster(REGISTRY)) == []


@pytest.mark.parametrize("runtime, line, key", [
    ("runtime: {registry_mirrors: [https://mirror.example:5000]}\n", 9, "registry_mirrors"),
    ("runtime:\n  insecure_registries: [r.example:5000]\n", 10, "insecure_registries"),
])
def test_registry_mode_refuses_the_runtime_mirror_settings(runtime, line, key):
    with pytest.raises(ClusterConfigError) as err:
        parse_cluster(REGISTRY + runtime)
    assert err.value.message.startswith("cluster.yaml:{}: runtime.{}: cannot be combined with "
                                        "images.mode: registry".format(line, key)), \
        err.value.message
    assert parse_cluster(CLUSTER + runtime).runtime  # fine in archive mode


def _runtime_ctx(tmp_path, text):
    refs = ["registry.k8s.io/pause:3.6", "docker.io/flannel/flannel:v0.22.3",
            "registry.k8s.io/coredns/coredns:v1.8.6"]
    cluster = parse_cluster(text)
    info = SimpleNamespace(runtime="containerd", pause_image=refs[0],
                           images=[BundleImage(ref, "sha256:" + "a" * 64, 1, ("worker",))
                                   for ref in refs])
    return SimpleNamespace(host=Host(str(tmp_path)), cluster=cluster, node=cluster.nodes[1],
                           info=info, runner=FakeRunner())


def test_registry_mode_points_containerd_at_certs_d_with_a_hosts_toml_per_registry(tmp_path):
    ctx = _runtime_ctx(tmp_path, REGISTRY)
    actions = runtime.RuntimeStep().actions(ctx)
    assert actions[0].what == (
        "write /etc/containerd/config.toml, /etc/crictl.yaml, "
        "/etc/containerd/certs.d/docker.io/hosts.toml, "
        "/etc/containerd/certs.d/registry.k8s.io/hosts.toml and restart containerd")
    actions[0].do()
    cri = tomllib.loads((tmp_path / "etc/containerd/config.toml").read_text())[
        "plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"] == {"config_path": "/etc/containerd/certs.d"}
    hosts = tomllib.loads((tmp_path / "etc/containerd/certs.d/registry.k8s.io/hosts.toml")
                          .read_text())
    pull = {"capabilities": ["pull", "resolve"], "ca": "/etc/kubernetes/pki/ca.crt",
            "override_path": True}
    # the VIP's frontend first, then each control plane's own registry (containerd tries the
    # next host on a 404: one whose storage an upgrade has not fed yet)
    assert list(hosts["host"].items()) == [
        ("https://10.0.0.100:8008/v2/registry.k8s.io", pull),
        ("https://10.0.0.11:8009/v2/registry.k8s.io", pull)]
    archive = _runtime_ctx(tmp_path / "archive", CLUSTER)
    assert "certs.d" not in runtime.RuntimeStep().actions(archive)[0].what
    assert "registry" not in tomllib.loads(runtime.containerd_config(archive))[
        "plugins"]["io.containerd.grpc.v1.cri"]


def test_open_ports_on_a_control_plane_include_the_registry_ports_in_registry_mode():
    from installer.steps import hostprep
    for text, expected in ((CLUSTER, False), (REGISTRY, True)):
        cluster = parse_cluster(text)
        for node in cluster.nodes:
            ctx = SimpleNamespace(cluster=cluster, node=node, info=SimpleNamespace(addons={}))
            ports = hostprep.firewall_ports(ctx)
            assert ("8008/tcp" in ports and "8009/tcp" in ports) == (
                expected and node.is_control_plane), (text, node.name, ports)
