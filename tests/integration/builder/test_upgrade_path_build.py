"""`kubernetes.upgrade_path` (builder/bundle/upgradepath.py): the v1.31 recipe listing the v1.30
recipe is built in the mirror world into one bundle that carries the v1.30 bundle, built too,
at steps/<its bundle.json SHA-256>/ as a host's cache holds it; the result lints, and the
installer unpacks it and finds the step's folder a bundle of its own, signed by the same key,
that upgradepath's walk can take (docs/bundle-format.md). A one-step path keeps this test
short; the 1.33 recipe carrying 1.31 and 1.32 is built and walked (from 1.31) on a
cluster in tests/e2e/test_ha_static_pods.py, and tests/unit/installer/test_upgrade_path.py walks
lab bundles."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile

import pytest
from lab.bundles import REPO, make_key

from installer import bundlecache
from installer.format.minisig import load_public_key
from installer.upgradepath import read_path_of
from tests.integration.builder.test_build import kubecrate, seeded_cache

pytestmark = pytest.mark.integration


def recipe_copy(folder, name, preset, path=()):
    """manifests/NAME.yaml beside the others in `folder`, naming the world's `preset`."""
    text = (REPO / "manifests" / f"{name}.yaml").read_text()
    lines = [f"mirrors: {preset}" if line.startswith("mirrors:") else line
             for line in text.splitlines()]
    text = "\n".join(lines) + "\n"
    if path:
        listed = "".join(f"\n    - {p}" for p in path)
        text = text.replace("  image_repository: registry.k8s.io\n",
                            f"  image_repository: registry.k8s.io\n  upgrade_path:{listed}\n", 1)
    (folder / f"{name}.yaml").write_text(text)
    return folder / f"{name}.yaml"


def test_a_recipe_path_builds_one_bundle_carrying_the_release_before(mirror_world, tmp_path):
    _key, secret, public = make_key(tmp_path / "keys")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    recipe_copy(recipes, "k8s-1.30-el9-containerd", mirror_world.preset_el9)
    outer = recipe_copy(recipes, "k8s-1.31-el9-containerd", mirror_world.preset_el9_131,
                        ["k8s-1.30-el9-containerd.yaml"])
    out = tmp_path / "out"
    done = kubecrate("build", outer, "--key", secret, "--out", out, "--cache",
                     seeded_cache(tmp_path / "cache"))
    assert done.returncode == 0, done.stdout + done.stderr
    bundle = out / "k8s-1.31-el9-containerd.tar"
    step_tar = out / "k8s-1.30-el9-containerd.tar"  # the step's own bundle, beside it
    assert step_tar.is_file()
    lint = kubecrate("lint", bundle, "--recipe", outer, "--key", public)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    shown = kubecrate("inspect", bundle)
    assert shown.returncode == 0, shown.stderr
    with tarfile.open(bundle) as tar:
        manifest = json.load(tar.extractfile("bundle.json"))
    with tarfile.open(step_tar) as tar:
        step_manifest = tar.extractfile("bundle.json").read()
    digest = hashlib.sha256(step_manifest).hexdigest()
    assert manifest["upgrade_path"] == [{"kubernetes_version": "v1.30.14",
                                         "name": "k8s-1.30-el9-containerd", "sha256": digest}]
    assert "  carries the releases before it, which `upgrade --bundle` walks in order: " \
        f"v1.30.14 (k8s-1.30-el9-containerd, steps/{digest[:12]}...) -> v1.31.14" \
        in shown.stdout, shown.stdout
    listed = {f["path"] for f in manifest["files"]}
    assert {f"steps/{digest}/bundle.json", f"steps/{digest}/bundle.minisig"} <= listed
    assert any(p.startswith(f"steps/{digest}/repo/Packages/kubeadm-1.30.14") for p in listed)

    root = tmp_path / "host"
    unpack = subprocess_installer("unpack", bundle, "--key", public, "--root", root)
    assert unpack.returncode == 0, unpack.stderr
    folder = bundlecache.folder_for(str(root), manifest_digest(bundle))
    path = read_path_of(folder)
    assert [(s.kubernetes_version, s.sha256) for s in path] == [("v1.30.14", digest)]
    step = bundlecache.verified_cache(f"{folder}/{path[0].dir}",
                                      load_public_key(str(public)))
    assert step.manifest_sha256 == digest  # its own signature, every file hashed


def manifest_digest(bundle):
    with tarfile.open(bundle) as tar:
        return hashlib.sha256(tar.extractfile("bundle.json").read()).hexdigest()


def subprocess_installer(*args):
    return subprocess.run([sys.executable, "-m", "installer", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
