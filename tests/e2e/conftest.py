"""Fixtures shared by the e2e modules: the bundles and .pyz files built by `kubecrate build`
against the mirror world, and the pristine host roots, each made once per session so that the
CentOS 7 HA run (test_ha_install.py) and the fleet run (test_fleet_install.py) share one
EL7 bundle, and the static-pods runs (test_ha_static_pods.py) the EL8/EL9 ones."""

import pytest
from lab import halab
from lab.bundles import make_key

from tests.conftest import require_root
from tests.integration.builder.test_build import RECIPE, kubecrate, seeded_cache
from tests.integration.builder.test_upgrade_path_build import recipe_copy


def build(profile: "halab.Profile", preset: str, folder, recipe: str = "",
          out: str = "out") -> object:
    """`kubecrate build manifests/<recipe or profile.bundle>.yaml` against the mirror world's
    `preset`: the out folder with the bundle and its .pyz. A second build into the same folder
    signs with the first one's key (an upgrade bundle from the same builder)."""
    require_root()
    recipe = recipe or profile.bundle
    secret = folder / "keys" / "kubecrate.key"
    if not secret.exists():
        _key, secret, _public = make_key(folder / "keys")
    done = kubecrate("build", RECIPE.parent / (recipe + ".yaml"), "--mirrors", preset,
                     "--key", secret, "--out", folder / out,
                     "--lock", folder / (recipe + ".lock"),
                     "--cache", seeded_cache(folder / "cache"), timeout=1200)
    assert done.returncode == 0, done.stderr
    return folder / out


@pytest.fixture(scope="session")
def built(mirror_world, tmp_path_factory):
    """The primary bundle and the .pyz, built once from the mirror world."""
    return build(halab.EL7, mirror_world.preset, tmp_path_factory.mktemp("ha-build"))


@pytest.fixture(scope="session")
def built_el9(mirror_world, tmp_path_factory):
    """The k8s-1.30-el9-containerd bundle (Rocky 9.4, containerd 1.6) and its .pyz."""
    return build(halab.EL9, mirror_world.preset_el9, tmp_path_factory.mktemp("ha-build-el9"))


@pytest.fixture(scope="session")
def upgrades_el9(mirror_world, built_el9):
    """The 1.30 -> 1.33 walk: k8s-1.33-el9-containerd built from a recipe whose
    kubernetes.upgrade_path lists the 1.31 and 1.32 recipes, so that it carries both
    (docs/upgrades.md), and the 1.31 and 1.32 bundles the build makes beside it; all signed by
    the key that signed built_el9 (the one its .pyz embeds). Returns (1.31 tar, 1.32 tar,
    the walk's tar): the next minor, a bundle two minors on without the one between, and one
    carrying every minor between."""
    folder = built_el9.parent
    recipes = folder / "walk-recipes"
    recipes.mkdir(exist_ok=True)
    for name, preset in (("k8s-1.31-el9-containerd", mirror_world.preset_el9_131),
                         ("k8s-1.32-el9-containerd", mirror_world.preset_el9_132)):
        recipe_copy(recipes, name, preset)
    walk = recipe_copy(recipes, "k8s-1.33-el9-containerd", mirror_world.preset_el9_133,
                       ["k8s-1.31-el9-containerd.yaml", "k8s-1.32-el9-containerd.yaml"])
    out = folder / "out-walk"
    done = kubecrate("build", walk, "--key", folder / "keys" / "kubecrate.key", "--out", out,
                     "--cache", seeded_cache(folder / "cache"), timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    return tuple(out / (name + ".tar") for name in (
        "k8s-1.31-el9-containerd", "k8s-1.32-el9-containerd", "k8s-1.33-el9-containerd"))


@pytest.fixture(scope="session")
def built_el8(mirror_world, tmp_path_factory):
    """The k8s-1.23.17-el8 bundle (CentOS 8.5, Docker 20.10) and its .pyz."""
    return build(halab.EL8, mirror_world.preset_el8, tmp_path_factory.mktemp("ha-build-el8"))


# The calico leg: a control plane and a worker of the 1.30 EL9 bundle (Rocky 9.4, Alma 9)
EL9_PAIR = halab.Profile(halab.EL9.bundle, halab.EL9.os_releases[:2], halab.EL9.kernel, "3.9")


@pytest.fixture(scope="session")
def core(tmp_path_factory):
    require_root()
    return halab.core_root(tmp_path_factory.mktemp("ha-core"))


@pytest.fixture(scope="session")
def core_el8(tmp_path_factory):
    require_root()
    return halab.core_root(tmp_path_factory.mktemp("ha-core-el8"), halab.EL8)


@pytest.fixture(scope="session")
def core_el9(tmp_path_factory):
    require_root()
    return halab.core_root(tmp_path_factory.mktemp("ha-core-el9"), halab.EL9)
