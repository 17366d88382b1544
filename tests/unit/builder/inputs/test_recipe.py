"""Recipes: every shipped one loads; mistakes are reported with file:line: key and a hint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.inputs.mirrors import load_preset
from builder.inputs.recipe import (
    PackageSpec,
    RecipeError,
    check_against_preset,
    role_images,
)
from builder.inputs.recipefile import load_recipe, parse_recipe
from builder.registry.kubeadm_images import kubeadm_images

REPO = Path(__file__).resolve().parents[4]
MANIFESTS = REPO / "manifests"
PRIMARY = MANIFESTS / "k8s-1.23.17-el7.yaml"
# `kubeadm config images list` of v1.23.17 (the table test_registry_kubeadm_images checks)
KUBEADM_1_23_17 = [image.reference for image in kubeadm_images("1.23.17")]


def recipes() -> list[Path]:
    found = sorted(MANIFESTS.glob("*.yaml"))
    assert PRIMARY in found
    return found


@pytest.mark.parametrize("path", recipes(), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert set(recipe.roles) == {"control-plane", "worker"}


def test_primary_recipe_matches_the_users_profile():
    recipe = load_recipe(PRIMARY)
    assert (recipe.target.os, recipe.target.release, recipe.target.arch) == (
        "centos", "7.9", "x86_64")
    assert recipe.target.base == ("@core",)
    assert recipe.kubernetes.version == "v1.23.17"
    assert (recipe.runtime.name, recipe.runtime.version) == ("docker", "20.10.24")
    assert recipe.repos == ("base", "updates", "extras", "docker-ce-stable")
    assert recipe.binaries == {"crictl": "v1.23.0", "cni": "v1.1.1"}
    pins = {p.name: p for p in recipe.packages}
    assert pins["docker-ce"] == PackageSpec("docker-ce", "=", "3:20.10.24-3.el7")
    assert pins["docker-ce-cli"] == PackageSpec("docker-ce-cli", "=", "1:20.10.24-3.el7")
    assert pins["containerd.io"].op == "="
    for name in ("python3", "conntrack-tools", "socat", "ipvsadm", "ipset", "ebtables", "chrony"):
        assert name in pins
    control = {p.name for p in recipe.role_packages("control-plane")}
    worker = {p.name for p in recipe.role_packages("worker")}
    assert control - worker == {"keepalived", "haproxy"}
    assert recipe.addons["flannel"].version == "v0.22.3"


def test_primary_recipe_role_images_and_preset():
    recipe = load_recipe(PRIMARY)
    check_against_preset(recipe, load_preset(recipe.preset_path))
    images = role_images(recipe, KUBEADM_1_23_17)
    flannel = {"docker.io/flannel/flannel:v0.22.3", "docker.io/flannel/flannel-cni-plugin:v1.2.0"}
    loadbalancer = {"docker.io/osixia/keepalived:2.0.20", "docker.io/library/haproxy:2.8"}
    assert set(images["control-plane"]) == set(KUBEADM_1_23_17) | flannel | loadbalancer
    assert set(images["worker"]) == flannel | {
        "registry.k8s.io/kube-proxy:v1.23.17", "registry.k8s.io/pause:3.6",
        "registry.k8s.io/coredns/coredns:v1.8.6"}


def _write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = PRIMARY.read_text()
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_unknown_key_names_file_line_key_and_suggestion(tmp_path):
    path = _write_variant(tmp_path, "  image_repository:", "  image_repositry:")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    err = info.value
    assert isinstance(err, BuildError)
    line = _line_of(path, "image_repositry")
    assert err.message.startswith(f"{path}:{line}: kubernetes.image_repositry: unknown key")
    assert err.hint == "did you mean 'image_repository'?"
    assert (err.file, err.line, err.key) == (str(path), line, "kubernetes.image_repositry")


def test_unknown_top_level_key(tmp_path):
    path = _write_variant(tmp_path, "binaries:", "binares:")
    with pytest.raises(RecipeError, match=r":\d+: binares: unknown key") as info:
        load_recipe(path)
    assert info.value.hint == "did you mean 'binaries'?"


def test_wrong_type_names_key(tmp_path):
    path = _write_variant(tmp_path, 'release: "7.9"', "release: 7.9")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    line = _line_of(path, "release: 7.9")
    assert info.value.message == f"{path}:{line}: target.release: must be a string, not float"
    assert 'quote it: "7.9"' in info.value.hint


def test_wrong_type_in_list_names_index(tmp_path):
    path = _write_variant(tmp_path, "  - socat\n", "  - {socat: 1}\n")
    with pytest.raises(RecipeError, match=r"packages\[5\]: must be a non-empty string, not dict"):
        load_recipe(path)


@pytest.mark.parametrize("old,new,expected", [
    ("name: docker\n", "name: dockr\n", r"runtime\.name: 'dockr' is not one of docker, "),
    ("version: v1.23.17", "version: v1.23", r"kubernetes\.version: 'v1\.23' is not a Kubernetes"),
    ("  - socat\n", "  - socat == 1\n", r"packages\[5\]: 'socat == 1' is not a package"),
    ("  - socat\n", "  - chrony\n", r"packages\[9\]: 'chrony' is listed twice"),
    ('"@kubeadm:pause"', '"@kubeadm:pauze"', r"images\[0\]: kubeadm has no image 'pauze'"),
    ('"@flannel"', '"@flanel"', r"images\[3\]: no image set '@flanel'"),
    ("repos: [base, updates", "repos: [base, base", r"repos\[1\]: 'base' is listed twice"),
    ("packages: [keepalived, haproxy]", "packages: [keepalived, socat]",
     r"roles\.control-plane\.packages\[1\]: 'socat' is already in the common packages"),
    ("  worker: {}\n", "", r"roles\.worker: required key is missing"),
    ("docker.io/flannel/flannel:v0.22.3", "docker.io/flannel/flannel@sha256:" + "a" * 64,
     r"addons\.flannel\.images\[0\]: .* by tag, not by digest"),
    ("version: v1.23.17", "version: v1.24.17", r"runtime\.name: Kubernetes v1\.24\.17 has no"),
])
def test_value_errors_name_the_key(tmp_path, old, new, expected):
    path = _write_variant(tmp_path, old, new)
    with pytest.raises(RecipeError, match=rf"^{path}:\d+: {expected}"):
        load_recipe(path)


def test_duplicate_key_is_an_error(tmp_path):
    path = _write_variant(tmp_path, "mirrors: upstream", "mirrors: upstream\nmirrors: china")
    with pytest.raises(RecipeError, match=r":\d+: mirrors: key given twice"):
        load_recipe(path)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match=r"^x\.yaml:2: not valid YAML"):
        parse_recipe("name: a\n  - b: [\n", "x.yaml")
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_preset_cross_check_names_recipe_key(tmp_path):
    path = _write_variant(tmp_path, "repos: [base, updates", "repos: [base, update")
    recipe = load_recipe(path)
    with pytest.raises(RecipeError) as info:
        check_against_preset(recipe, load_preset(PRIMARY.parent / "mirrors" / "upstream.yaml"))
    assert f"{path}:{_line_of(path, 'repos:')}: repos[1]: preset 'upstream'" in info.value.message
    assert info.value.hint == "did you mean 'updates'?"


def test_recipe_is_immutable():
    recipe = load_recipe(PRIMARY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.name = "x"
    with pytest.raises(TypeError):
        recipe.roles["worker"] = None


EL9 = MANIFESTS / "k8s-1.30-el9-containerd.yaml"
EL8 = MANIFESTS / "k8s-1.23.17-el8.yaml"


def test_target_hosts_and_removals_of_the_el_recipes():
    assert load_recipe(EL9).target.hosts == ("rocky", "almalinux", "rhel", "centos")
    assert load_recipe(EL8).remove == ("podman", "buildah", "runc")
    assert load_recipe(PRIMARY).target.hosts == () and load_recipe(PRIMARY).remove == ()


@pytest.mark.parametrize("old,new,expected", [
    ("hosts: [rocky, almalinux", "hosts: [almalinux", r"target\.hosts: does not list the "
                                                      r"target's own os 'rocky'"),
    ("hosts: [rocky, almalinux", "hosts: [rocky, alma", r"target\.hosts\[1\]: 'alma' is not one"),
    ("hosts: [rocky, almalinux", "hosts: [rocky, rocky", r"target\.hosts\[1\]: 'rocky' is listed"),
])
def test_target_hosts_errors_name_the_key(tmp_path, old, new, expected):
    path = tmp_path / EL9.name
    path.write_text(EL9.read_text().replace(old, new))
    with pytest.raises(RecipeError, match=rf"^{path}:\d+: {expected}"):
        load_recipe(path)


@pytest.mark.parametrize("new,expected", [
    ("remove: [podman, socat]", r"remove\[1\]: socat is also one of the bundle's packages"),
    ("remove: [podman, haproxy]", r"remove\[1\]: haproxy is also one of the bundle's packages"),
    ("remove: [podman, 'run c']", r"remove\[1\]: 'run c' is not a package name"),
])
def test_removal_errors_name_the_key(tmp_path, new, expected):
    path = tmp_path / EL8.name
    path.write_text(EL8.read_text().replace("remove: [podman, buildah, runc]", new))
    with pytest.raises(RecipeError, match=rf"^{path}:\d+: {expected}"):
        load_recipe(path)


def test_containerd_recipes_carry_distributions_image_for_the_control_planes_only():
    """"@registry" (images.mode registry): every containerd recipe carries distribution's image
    for its control planes, which run the registry; no worker loads it, no Docker recipe has
    it (installer/registryserve.py looks for its repository)."""
    from installer.format.cluster import REGISTRY_IMAGE
    from installer.registryserve import IMAGE_REPOSITORY

    assert REGISTRY_IMAGE.startswith(IMAGE_REPOSITORY + ":")
    for path in recipes():
        recipe = load_recipe(path)
        images = role_images(recipe, KUBEADM_1_23_17)
        has = REGISTRY_IMAGE in images["control-plane"]
        assert has == (recipe.runtime.name == "containerd"), path.name
        assert REGISTRY_IMAGE not in images["worker"], path.name
        check_against_preset(recipe, load_preset(recipe.preset_path))


@pytest.mark.parametrize("old,new,expected", [
    ('images: ["@kubeadm", "@loadbalancer"]', 'images: ["@kubeadm", "@registry"]',
     r'roles\.control-plane\.images\[1\]: "@registry" needs runtime containerd, not docker'),
    ("  worker: {}\n", '  worker: {images: ["@registry"]}\n',
     r'roles\.worker\.images\[0\]: "@registry" needs runtime containerd'),
])
def test_registry_set_is_refused_on_docker(tmp_path, old, new, expected):
    path = _write_variant(tmp_path, old, new)
    with pytest.raises(RecipeError, match=rf"^{path}:\d+: {expected}"):
        load_recipe(path)


def test_registry_set_belongs_to_the_control_planes(tmp_path):
    text = (MANIFESTS / "k8s-1.30-el9-containerd.yaml").read_text()
    assert "  worker: {}\n" in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("  worker: {}\n", '  worker: {images: ["@registry"]}\n'))
    with pytest.raises(RecipeError, match=rf'^{path}:\d+: roles\.worker\.images\[0\]: '
                                          r'"@registry" belongs in roles\.control-plane'):
        load_recipe(path)
