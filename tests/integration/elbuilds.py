"""The EL8/EL9 bundles the integration tests build from the repository's recipes against the
mirror world (test_el8_recipe.py, test_el_host_prep.py), and the minimal roots real dnf
judges them on."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab.bundles import REPO, make_key
from lab.dnfroot import dnf, write_config

from builder.inputs.mirrors import load_preset
from tests.integration.builder.test_build import kubecrate, seeded_cache

RECIPE = REPO / "manifests" / "k8s-1.23.17-el8.yaml"
NAME = "k8s-1.23.17-el8"
RECIPE_ROCKY8 = REPO / "manifests" / "k8s-1.30-el8-containerd.yaml"
RECIPE_EL9 = REPO / "manifests" / "k8s-1.30-el9-containerd.yaml"
RECIPE_EL9_131 = REPO / "manifests" / "k8s-1.31-el9-containerd.yaml"
RECIPE_EL9_132 = REPO / "manifests" / "k8s-1.32-el9-containerd.yaml"
RECIPE_EL9_133 = REPO / "manifests" / "k8s-1.33-el9-containerd.yaml"
RECIPE_EL9_ARM = REPO / "manifests" / "k8s-1.30-el9-containerd-aarch64.yaml"
# Every build of the module at one time: the installer .pyz is then byte-comparable across arches
EPOCH = "1764806400"
NAME_EL9 = "k8s-1.30-el9-containerd"
EL8 = ("--releasever=8", "--setopt=module_platform_id=platform:el8")
EL9_DNF = ("--releasever=9", "--setopt=module_platform_id=platform:el9")


def minimal_el9_root(preset_path, root, *dnf_args):
    """`root` with filesystem and bash from the preset's BaseOS (real dnf, EL9 platform)."""
    baseos = load_preset(preset_path).yum["baseos"]
    conf, repos_d = write_config(root.parent / (root.name + "-world"),
                                 {"baseos": (baseos.baseurl, [k.url for k in baseos.gpgkeys])})
    root.mkdir()
    dnf(root, conf, repos_d, *EL9_DNF, *dnf_args, "install", "filesystem", "bash")
    return root


def build_all(mirror_world, root: Path) -> dict:
    """Every EL8/EL9 recipe built with both presets at EPOCH, each linted; variant -> bundle,
    and "public_key". The `el_builds` fixture (tests/integration/conftest.py) builds them once
    for test_el8_recipe.py and test_el_host_prep.py."""
    _key, secret, public = make_key(root / "keys")
    cache = seeded_cache(root / "cache")
    out = {}
    for variant, recipe, preset in (
            ("upstream", RECIPE, mirror_world.preset_el8),
            ("china", RECIPE, mirror_world.preset_aliyun_el8),
            ("rocky8-upstream", RECIPE_ROCKY8, mirror_world.preset_rocky8),
            ("rocky8-china", RECIPE_ROCKY8, mirror_world.preset_aliyun_rocky8),
            ("el9-upstream", RECIPE_EL9, mirror_world.preset_el9),
            ("el9-china", RECIPE_EL9, mirror_world.preset_aliyun_el9),
            ("el9-1.31-upstream", RECIPE_EL9_131, mirror_world.preset_el9_131),
            ("el9-1.31-china", RECIPE_EL9_131, mirror_world.preset_aliyun_el9_131),
            ("el9-1.32-upstream", RECIPE_EL9_132, mirror_world.preset_el9_132),
            ("el9-1.32-china", RECIPE_EL9_132, mirror_world.preset_aliyun_el9_132),
            ("el9-1.33-upstream", RECIPE_EL9_133, mirror_world.preset_el9_133),
            ("el9-1.33-china", RECIPE_EL9_133, mirror_world.preset_aliyun_el9_133),
            ("el9-aarch64-upstream", RECIPE_EL9_ARM, mirror_world.preset_el9_aarch64),
            ("el9-aarch64-china", RECIPE_EL9_ARM, mirror_world.preset_aliyun_el9_aarch64)):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SOURCE_DATE_EPOCH", EPOCH)
            done = kubecrate("build", recipe, "--mirrors", preset, "--key", secret,
                             "--out", root / variant, "--lock", root / f"{variant}.lock",
                             "--cache", cache)
        assert done.returncode == 0, done.stderr
        bundle = root / variant / f"{recipe.stem}.tar"
        lint = kubecrate("lint", bundle, "--recipe", recipe, "--key", public)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        out[variant] = bundle
    out["public_key"] = public
    return out
