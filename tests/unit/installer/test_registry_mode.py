"""cluster.yaml's `images.mode` (archive | registry): parsed with a did-you-mean, and
`registry` refused against a Docker bundle with the reason, naming file, line and key (by the
installer) or the file (by `kubecrate lint --cluster`)."""

from types import SimpleNamespace

import pytest

from builder.bundle.lint import lint_cluster
from installer.format.cluster import ClusterConfigError, kubeadm_settings, parse_cluster
from installer.format.errors import ExitCode

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
