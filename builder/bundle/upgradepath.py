"""A bundle that carries the releases between the one a cluster runs and its own (the recipe's
`kubernetes.upgrade_path`): each listed recipe is built as a bundle of its own (beside the
outer one in the output folder, so a warm rebuild reuses it), checked as a host checks a bundle,
and laid out in the outer bundle's tree at `steps/<its bundle.json SHA-256>/` exactly as a
host's cache holds it; bundle.json's `upgrade_path` names them in order
(docs/bundle-format.md#upgrade-path-several-minors-in-one-bundle, installer/upgradepath.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List

from builder.inputs.recipe import Recipe
from builder.inputs.recipefile import load_recipe
from installer.format import bundle as bundlemod
from installer.format import minisig
from installer.format.errors import UsageError
from installer.format.manifest import MANIFEST_NAME, SIGNATURE_NAME
from installer.format.upgradepath import STEPS_DIR

Build = Callable[..., Any]  # builder.build._build, given the step's recipe path


def step_recipes(recipe: Recipe) -> List[Recipe]:
    """The recipes the path names, checked: the same target and runtime as `recipe`, and one
    minor each from the one before it up to the minor below `recipe`'s (kubeadm's one minor
    per `upgrade apply`, cmd/kubeadm/app/phases/upgrade/policy.go). UsageError (exit 2) names
    the recipe at fault."""
    folder = Path(recipe.source).parent
    steps = [load_recipe(folder / name) for name in recipe.kubernetes.upgrade_path]
    want = recipe.kubernetes.minor - len(steps)
    for name, step in zip(recipe.kubernetes.upgrade_path, steps):
        where = f"{recipe.source}: kubernetes.upgrade_path: {name}"
        if (step.target.os, step.target.release, step.target.arch, step.runtime.name) != (
                recipe.target.os, recipe.target.release, recipe.target.arch,
                recipe.runtime.name):
            raise UsageError(f"{where} is for {step.target.os} {step.target.release} "
                             f"{step.target.arch} with {step.runtime.name}, not this recipe's "
                             f"{recipe.target.os} {recipe.target.release} {recipe.target.arch} "
                             f"with {recipe.runtime.name}",
                             hint="the releases on the path must be of the same profile")
        if step.kubernetes.minor != want or step.kubernetes.upgrade_path:
            raise UsageError(f"{where} is Kubernetes {step.kubernetes.version}, but the path "
                             f"needs 1.{want} there: one minor each, in order, up to 1."
                             f"{recipe.kubernetes.minor - 1}, and no path of its own",
                             hint="list the recipes of every minor in between, oldest first")
        want += 1
    return steps


def add_steps(recipe: Recipe, tree: Path, out_dir: Path, key: Any, build: Build,
              **build_args: Any) -> List[Dict[str, str]]:
    """Build each step's bundle with `build` into `out_dir`, unpack it, checked, into
    `tree/steps/<digest>/`; returns bundle.json's `upgrade_path` entries."""
    folder = Path(recipe.source).parent
    trust = minisig.Keyring((minisig.TrustedKey(key.public_key),))
    entries = []
    for name, step in zip(recipe.kubernetes.upgrade_path, step_recipes(recipe)):
        report = build(folder / name, key=key, out_dir=out_dir, **build_args)
        signature = minisig.load_signature(str(report.signature))
        target = tree / STEPS_DIR / report.manifest_sha256
        target.mkdir(parents=True)
        try:  # what a host's cache holds of it: every file checked as it is written
            checked = bundlemod.walk(
                str(report.bundle), trust, signature,
                lambda spec, into=str(target): bundlemod.create_file(into, spec.path, spec.mode))
            (target / MANIFEST_NAME).write_bytes(checked.manifest_raw)
            (target / SIGNATURE_NAME).write_text(signature.to_file_text())
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        entries.append({"kubernetes_version": step.kubernetes.version, "name": step.name,
                        "sha256": checked.manifest_sha256})
    return entries
