"""Multi-minor bundles: one bundle that carries every intermediate release of an upgrade of
several minors (1.30 -> 1.33 in three kubeadm steps), walked in order by `upgrade --bundle`.

Format (docs/bundle-format.md#upgrade-path): bundle.json's `upgrade_path` lists, in order,
the releases between the one the bundle upgrades from and its own:

    "upgrade_path": [{"kubernetes_version": "v1.31.14", "name": "k8s-1.31-el9-containerd",
                      "sha256": "<that bundle's bundle.json sha256>"}]

and `steps/<sha256>/` holds that release's complete bundle folder, as the cache holds it
(bundle.json, bundle.minisig signed by the same key, repo/, bin/, images/ ...), every file
listed in the outer bundle.json too. kubeadm takes one minor per `upgrade apply`
(cmd/kubeadm/app/phases/upgrade/policy.go, EnforceVersionPolicies), so each step is the
one-minor upgrade of installer/upgrade.py from that folder, which it puts into the cache as any
cache folder (its own signature checked, every file hashed): state.json then names the step's
bundle, and a re-run after a crash walks on from the last step this node finished.

In a cluster of several nodes a step must be on every node before the first control plane
takes the next one (an apiserver may be one minor apart from another, no more: kubernetes.io's
version skew policy), so the walk on a node stops after a step when the next one's order check
says others are behind, and says where to run it next; run `upgrade` on every node in turn,
once per step.
"""

import json
import os
from typing import Any, List, Optional, Tuple

from installer.format.errors import PreconditionError, VerificationError
from installer.format.manifest import MANIFEST_NAME, SIGNATURE_NAME
from installer.format.upgradepath import STEPS_DIR, PathStep, read_path


def read_path_of(folder: str) -> List[PathStep]:
    """The upgrade path of the bundle folder `folder` (a view, a staging or a cache folder)."""
    try:
        with open(os.path.join(folder, MANIFEST_NAME), "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as err:
        raise VerificationError("cannot read {}: {}".format(
            os.path.join(folder, MANIFEST_NAME), err))
    return read_path(data if isinstance(data, dict) else {})


def wanted(path: str) -> bool:
    """What `plan` reads of a bundle it does not unpack: preflight's files, and of each step
    folder its bundle.json, signature, repo metadata and keys."""
    from installer.format.bundleinfo import wanted_for_preflight

    if wanted_for_preflight(path):
        return True
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != STEPS_DIR:
        return False
    rest = "/".join(parts[2:])
    return rest in (MANIFEST_NAME, SIGNATURE_NAME) or wanted_for_preflight(rest)


def remaining(path: List[PathStep], have: str, target: str, bundle: str
              ) -> List[PathStep]:
    """The steps still to walk from release `have` to the bundle's `target`: one per minor in
    between, in order. A minor the path lacks is refused (exit 4) naming every minor to walk,
    as is a path out of order."""
    from installer.upgrade import version_tuple

    low, high = version_tuple(have), version_tuple(target)
    todo = [step for step in path if version_tuple(step.kubernetes_version)[:2] > low[:2]]
    minors = [version_tuple(step.kubernetes_version)[1] for step in todo]
    wanted_minors = list(range(low[1] + 1, high[1]))
    if low[0] != high[0] or minors != wanted_minors:
        walk = " -> ".join("1.{}".format(m) for m in range(low[1], high[1] + 1))
        carried = ", ".join(s.kubernetes_version for s in path) or "none"
        missing = [m for m in wanted_minors if m not in minors]
        raise PreconditionError(
            "bundle {} carries Kubernetes {}; this node runs {}: kubeadm upgrades one minor "
            "version at a time ({}), and the intermediate releases the bundle carries ({}) "
            "{}".format(bundle, target, have, walk, carried,
                        "lack 1." + ", 1.".join(str(m) for m in missing) if missing
                        else "are not one per minor in order"),
            hint="upgrade with the bundle of 1.{} first, or build one whose recipe lists "
                 "every minor in between (kubernetes.upgrade_path, docs/recipe.md)".format(
                     low[1] + 1))
    return todo


def step_folder(outer_dir: str, step: PathStep) -> str:
    """The step's folder inside the outer bundle's folder, its bundle.json checked against the
    digest the (signed) outer bundle.json names."""
    import hashlib

    folder = os.path.join(outer_dir, step.dir)
    try:
        with open(os.path.join(folder, MANIFEST_NAME), "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
    except OSError as err:
        raise VerificationError("{}: step {} has no bundle.json ({})".format(
            outer_dir, step.dir, err.strerror))
    if digest != step.sha256:
        raise VerificationError("{}/{}: bundle.json has sha256 {} but the bundle's "
                                "upgrade_path names {}".format(outer_dir, step.dir, digest,
                                                               step.sha256))
    return folder


def walk(options: Any, drain: bool, kubeconfig: Optional[str], plan_only: bool) -> Any:
    """`upgrade` (and `plan`) with a bundle: its intermediate releases first, each a one-minor
    upgrade from its step folder, then the bundle's own. Returns one session.Outcome for the
    whole walk (each step's findings headed by a `step` line)."""
    from installer import session, upgrade

    dry = options.dry_run or plan_only
    with session.open_context(options._replace(dry_run=dry), stage=not dry,
                              refuse=upgrade.refuse_early, wanted=wanted) as ctx:
        return walk_in(ctx, options, drain, kubeconfig, plan_only)


def walk_in(ctx: Any, options: Any, drain: bool, kubeconfig: Optional[str],
            plan_only: bool) -> Any:
    """walk() on an open context (also `plan`'s)."""
    from installer import session, upgrade

    dry = options.dry_run or plan_only
    path = read_path_of(ctx.source_dir)
    if not path:
        return upgrade.run_in(ctx, options, drain, kubeconfig, plan_only)
    old = upgrade.load_old(ctx)
    todo = remaining(path, old.kubernetes_version, ctx.info.kubernetes_version,
                     ctx.info.name)
    outcomes = []  # type: List[Tuple[str, Any]]
    walked = 0  # steps this run finished: a later one whose turn has not come pauses the walk
    for number, step in enumerate(todo, 1):
        label = "step {} of {}: {} from {}".format(number, len(todo) + 1,
                                                   step.kubernetes_version, step.dir)
        if dry and number > 1:  # the cluster is not at the release before it yet
            outcomes.append((label, _later(step.kubernetes_version, step.name)))
            continue
        folder = step_folder(ctx.source_dir, step)
        stepped = options._replace(bundle_path=folder)
        if dry:  # the step's view: its bundle.json is the one the signed outer one names
            outcome = upgrade.run_in(_viewed(ctx, folder, step), stepped, drain, kubeconfig,
                                     plan_only)
        else:
            with session.open_context(stepped, stage=True) as sctx:
                outcome = upgrade.run_in(sctx, stepped, drain, kubeconfig, False,
                                         pause_when_behind=walked > 0)
        outcomes.append((label, outcome))
        if outcome.paused:
            return _joined(ctx, outcomes)
        walked += 1
        if ctx.staged is not None and ctx.staged.pending():  # a step passed its preflight:
            ctx.source_dir = ctx.staged.commit()  # from now on a re-run reads the cache
    label = "step {0} of {0}: {1}".format(len(todo) + 1, ctx.info.kubernetes_version)
    if dry and todo:
        outcomes.append((label, _later(ctx.info.kubernetes_version, ctx.info.name)))
    else:
        outcomes.append((label, upgrade.run_in(ctx, options, drain, kubeconfig, plan_only,
                                               pause_when_behind=walked > 0)))
    return _joined(ctx, outcomes)


def _viewed(ctx: Any, folder: str, step: PathStep) -> Any:
    """The outer context with the step's bundle in its place (plan, --dry-run)."""
    import copy

    from installer.format.bundleinfo import read_info
    from installer.format.manifest import parse_manifest
    from installer.steps import kubeadm as kubeadm_step

    with open(os.path.join(folder, MANIFEST_NAME), "rb") as handle:
        raw = handle.read()
    viewed = copy.copy(ctx)
    viewed.info = read_info(parse_manifest(raw), step.sha256)
    viewed.source_dir, viewed.bundle_path, viewed.staged = folder, folder, None
    kubeadm_step.settings(viewed)
    return viewed


def _later(version: str, bundle: str) -> Any:
    from installer.steps.preflight import PASS, Finding

    return [Finding(PASS, "step", "then {} from bundle {}: the same steps, once every node "
                    "runs the release before it".format(version, bundle), "")]


def _joined(ctx: Any, outcomes: List[Tuple[str, Any]]) -> Any:
    from installer import session
    from installer.steps.preflight import PASS, Finding

    findings, reports, bundle, paused = [], [], ctx.info.name, False
    for label, outcome in outcomes:
        findings.append(Finding(PASS, "step", label, ""))
        if isinstance(outcome, list):
            findings += outcome
            continue
        findings += outcome.findings
        reports += outcome.steps
        bundle, paused = outcome.bundle, outcome.paused
    return session.Outcome(ctx.node.name, ctx.node.role, bundle, findings, False, reports,
                           paused=paused)
