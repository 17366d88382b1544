"""`kubecrate build`: recipe -> lock -> fetch -> stage -> pack + sign -> installer -> lint.

    report = build(Path("manifests/k8s-1.23.17-el7.yaml"), key=secret, out_dir=Path("bundles"))

Locks when the lock is missing or its inputs changed (builder/inputs/lock.py), fetches only what the
cache lacks over one requests.Session (builder/fetch.py), stages the tree in a temporary folder
(builder/bundle/stage.py), packs and signs `<name>.tar` with the lock's `created` time, builds the
signed `kubecrate-installer.pyz` trusting the signing key, and lints the packed bundle. The four
files are written under temporary names inside `out_dir` and renamed into place only when
everything succeeded, so a failure leaves `out_dir` as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from builder.bundle import rebuild
from builder.bundle.keys import SecretKey
from builder.bundle.pack import pack
from builder.bundle.rotation import Rotation, check_rotation
from builder.cache import Cache
from builder.errors import BuildError, UsageError
from builder.inputs.lock import compare, input_changes, lock_path_for, make_lock
from builder.inputs.lockfile import Lock, load_lock, write_lock
from builder.inputs.mirrors import MirrorPreset, MirrorPresetError, load_preset
from builder.inputs.recipe import Recipe
from builder.inputs.recipefile import load_recipe
from builder.zipapp import CENTOS7_FINGERPRINT, INSTALLER_NAME, INSTALLER_SOURCE, build_zipapp

if TYPE_CHECKING:
    import requests

    from builder.bundle.delta import DeltaReport
    from builder.fetch import FetchStats

__all__ = ["BuildReport", "build", "ensure_lock", "format_report"]

log = logging.getLogger(__name__)

# progress(what, total_bytes) -> update(n); the CLI passes tqdm bars
ProgressFactory = Callable[[str, int], Callable[[int], Any]]


class BuildReport(NamedTuple):
    bundle: Path
    signature: Path
    installer: Path
    installer_signature: Path
    manifest_sha256: str
    bundle_size: int
    installer_size: int
    lock: Path
    lock_status: str  # "up to date", "written", "updated"
    sections: Dict[str, int]  # bytes per bundle folder
    counts: Dict[str, int]
    fetch: Optional[FetchStats]  # None when the outputs were kept
    wheels_downloaded: int
    timings: Tuple[Tuple[str, float], ...]  # (stage, seconds)
    reused: bool = False  # the outputs of an earlier build from the same inputs were kept
    delta: Optional[DeltaReport] = None  # with --base/--since: the delta bundle written too


class _Clock:
    def __init__(self) -> None:
        self.timings: List[Tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        log.info("%s ...", name)
        try:
            yield
        finally:
            self.timings.append((name, time.monotonic() - start))


def _byte_progress(progress: Optional[ProgressFactory], what: str):
    if progress is None:
        return None
    state: Dict[str, Any] = {}

    def update(n: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = progress(what, total)
        state["bar"](n)

    return update


def ensure_lock(recipe: Recipe, preset: MirrorPreset, lock_path: Path, *, session: Any,
                cache: Cache, progress: Optional[ProgressFactory] = None
                ) -> Tuple[Lock, str]:
    """The lock at `lock_path` when its inputs still match, else a new one written there;
    returns (lock, "up to date" | "written" | "updated")."""
    old = None
    if lock_path.exists():
        old = load_lock(lock_path)
        changes = input_changes(old, recipe, preset)
        if not changes:
            return old, "up to date"
        log.info("re-locking %s: %s", lock_path, "; ".join(changes))
    document = make_lock(recipe, preset, session=session, cache=cache,
                         progress=_byte_progress(progress, "lock: images"))
    if old is not None and not compare(old, document):
        document = replace(document, created=old.created)  # same resolution: same bytes
    write_lock(lock_path, document)
    return document, "written" if old is None else "updated"


def python3_vendor_fingerprint(lock: Lock, preset: MirrorPreset) -> str:
    """The fingerprint the .pyz's sh preamble pins for the key that signs the bundle's python3
    RPMs (its repo's first key in the preset); CentOS 7's when the bundle has no python3."""
    for rpm in lock.rpms:
        if rpm.name == "python3":
            try:
                return preset.repo(rpm.repo).gpgkeys[0].fingerprint
            except (IndexError, MirrorPresetError):
                break
    return CENTOS7_FINGERPRINT


def build(recipe_path: Path, *, key: SecretKey, out_dir: Path,
          preset_path: Optional[Path] = None, lock_path: Optional[Path] = None,
          cache: Optional[Cache] = None, session: Optional[requests.Session] = None,
          progress: Optional[ProgressFactory] = None,
          installer_source: Optional[Path] = None,
          rotation: Optional[Rotation] = None,
          base: Optional[Path] = None, since: Optional[Path] = None) -> BuildReport:
    """Build `<out_dir>/<name>.tar` (+ .minisig) and `<out_dir>/kubecrate-installer.pyz`
    (+ .minisig) from the recipe; see the module docstring. Raises a BuildError subclass
    naming the culprit; `out_dir` then holds nothing new. With `rotation` (a new `key`), the
    installer also trusts the old key until its expiry and the old key signs it
    (builder/bundle/rotation.py).

    With `base` (an older bundle tar the hosts have) or `since` (the older bundle's lock, from
    which that bundle is built again, byte for byte, beside), also writes the delta bundle
    `<out_dir>/<name>.delta-<base digest>.tar` (builder/bundle/delta.py)."""
    if base is not None and since is not None:
        raise UsageError("give --base or --since, not both")
    base_keys = (rotation.old_key,) if rotation is not None else ()
    if base is not None:  # fail before the build: the key ids and the signed comment
        from builder.bundle.delta import check_base

        check_base(base, key, base_keys)
    since_inputs = _since_inputs(since, preset_path) if since is not None else None
    cache = cache or Cache()
    report = _build(recipe_path, key=key, out_dir=out_dir, preset_path=preset_path,
                    lock_path=lock_path, cache=cache, session=session, progress=progress,
                    installer_source=installer_source, rotation=rotation)
    if base is None and since is None:
        return report
    from builder.bundle.delta import write_delta

    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if since is not None and since_inputs is not None:
            scratch = Path(tempfile.mkdtemp(prefix=".kubecrate-base-", dir=out_dir))
            stack.callback(shutil.rmtree, scratch, True)
            lock_copy = scratch / since.name
            shutil.copyfile(since, lock_copy)
            log.info("building the base bundle again from %s", since)
            rebuilt = _build(since_inputs[0], key=key, out_dir=scratch,
                             preset_path=since_inputs[1], lock_path=lock_copy, cache=cache,
                             session=session, installer_source=installer_source)
            # the scratch folder goes: so does the warm-rebuild record of what was in it
            stack.callback(rebuild.forget, cache, scratch, rebuilt.bundle.name[:-len(".tar")])
            base = rebuilt.bundle
        assert base is not None
        # a base from before a key rotation is signed by the old key
        delta = write_delta(report.bundle, base, key, out_dir, base_keys=base_keys)
    timings = report.timings + (("delta", time.monotonic() - start),)
    return report._replace(delta=delta, timings=timings)


def _since_inputs(since: Path, preset_path: Optional[Path]) -> Tuple[Path, Path]:
    """The recipe and mirror preset from which the bundle of `since` (an older lock, beside
    its recipe) is built again: the same lock, recipe, preset and builder give the same bytes.
    Refused (exit 2) when the recipe is gone or the lock no longer matches its inputs."""
    try:
        old = load_lock(since)
    except OSError as err:
        raise UsageError(f"--since {since}: {err.strerror}") from None
    recipe_path = since.with_name(old.recipe.path)
    hint = "give the bundle the hosts have with --base OLD.tar instead"
    if not recipe_path.is_file():
        raise UsageError(f"--since {since}: its recipe {recipe_path} is not there", hint=hint)
    preset = preset_path or Path(old.preset.path)
    changes = input_changes(old, load_recipe(recipe_path), load_preset(preset))
    if changes:
        raise UsageError(f"--since {since}: the lock no longer matches its inputs, so its "
                         f"bundle cannot be built again: {'; '.join(changes)}", hint=hint)
    return recipe_path, preset


def _build(recipe_path: Path, *, key: SecretKey, out_dir: Path,
           preset_path: Optional[Path] = None, lock_path: Optional[Path] = None,
           cache: Optional[Cache] = None, session: Optional[requests.Session] = None,
           progress: Optional[ProgressFactory] = None,
           installer_source: Optional[Path] = None,
           rotation: Optional[Rotation] = None) -> BuildReport:
    if rotation is not None:
        check_rotation(key.public_key, rotation)
    installer_signer = rotation.old_key if rotation is not None else key
    clock = _Clock()
    cache = cache or Cache()
    with clock.stage("recipe"):
        recipe = load_recipe(recipe_path)
        preset = load_preset(preset_path or recipe.preset_path)
    lock_path = lock_path or lock_path_for(recipe_path)
    own_session = session is None
    try:
        with clock.stage("lock"):
            current = load_lock(lock_path) if lock_path.exists() else None
            if current is not None and not input_changes(current, recipe, preset):
                lock, lock_status = current, "up to date"  # no network: no session yet
            else:
                from builder.net.http import new_session

                session = session or new_session()
                lock, lock_status = ensure_lock(recipe, preset, lock_path, session=session,
                                                cache=cache, progress=progress)
        with clock.stage("verify outputs"):
            vendor = python3_vendor_fingerprint(lock, preset)
            inputs = rebuild.build_inputs(recipe_path, lock, key, vendor,
                                          installer_source or INSTALLER_SOURCE,
                                          rotation.inputs() if rotation else None)
            # a path's recipes are not among the inputs: its steps' own builds are reused
            kept = None if recipe.kubernetes.upgrade_path else rebuild.reusable(
                cache, out_dir, recipe.name, inputs, key, installer_signer.public_key)
        if kept is not None:
            log.info("%s: the outputs in %s match the lock and verify; nothing to build",
                     recipe.name, out_dir)
            return _report_kept(kept, lock_path, lock_status, clock)
        # Imported only now: a warm rebuild that keeps its outputs needs none of them.
        from builder.bundle.lint import LintFailed, lint_bundle
        from builder.bundle.stage import stage_bundle
        from builder.fetch import fetch_locked
        from builder.net.http import new_session
        from builder.rpm.cryptopolicy import check_crypto_policy

        session = session or new_session()
        with clock.stage("fetch"):
            fetched = fetch_locked(lock, preset, session=session, cache=cache,
                                   lock_path=lock_path, progress=progress)
            # EL9 distrusts SHA-1 signatures: refuse here what its rpm would refuse there
            check_crypto_policy(
                int(lock.target.release.split(".")[0]),
                [(p.nevra, p.repo, fetched.rpm_paths[p.sha256]) for p in fetched.packages],
                [(k.repo, k.url, k.data) for k in fetched.keys])
    finally:
        if own_session and session is not None:
            session.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".kubecrate-build-", dir=out_dir))
    try:
        created = lock.created
        with clock.stage("stage"):
            staged = stage_bundle(work / "tree", recipe, lock, fetched, cache)
        metadata = staged.metadata
        if recipe.kubernetes.upgrade_path:
            from builder.bundle.upgradepath import add_steps

            with clock.stage("upgrade path"):
                metadata = dict(metadata, upgrade_path=add_steps(
                    recipe, work / "tree", out_dir, key, _build, cache=cache,
                    installer_source=installer_source))
        with clock.stage("pack"):
            packed = pack(work / "tree", work / f"{recipe.name}.tar", key, name=recipe.name,
                          metadata=metadata, created=created,
                          digests=staged.digests, modes=staged.modes,
                          progress=progress("pack", sum(staged.sections.values()))
                          if progress else None)
        with clock.stage("installer"):
            pyz = build_zipapp(work / INSTALLER_NAME, key.public_key.to_file_text(),
                               installer_signer, cache=cache, source_date_epoch=created,
                               installer_source=installer_source or INSTALLER_SOURCE,
                               vendor_fingerprint=vendor, rotation=rotation)
        with clock.stage("lint"):
            problems = lint_bundle(packed.path, recipe)
            if problems:
                raise LintFailed(packed.path.relative_to(work), problems)
        if pyz.signature_path is None:  # build_zipapp signs whenever it is given a key
            raise BuildError(f"{pyz.path}: the installer was not signed")
        finals = []
        rebuild.forget(cache, out_dir, recipe.name)
        for path in (pyz.path, pyz.signature_path, packed.path, packed.signature_path):
            final = out_dir / path.name
            os.replace(path, final)
            finals.append(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rebuild.record(cache, out_dir, recipe.name, inputs, {
        "bundle": finals[2], "installer": finals[0], "manifest_sha256": packed.manifest_sha256,
        "bundle_size": packed.size, "installer_size": pyz.size, "sections": staged.sections,
        "counts": staged.counts, "digests": {"bundle": packed.blake2b}})
    return BuildReport(finals[2], finals[3], finals[0], finals[1], packed.manifest_sha256,
                       packed.size, pyz.size, lock_path, lock_status, staged.sections,
                       staged.counts, fetched.stats, len(pyz.downloaded),
                       tuple(clock.timings))


def _report_kept(kept: Dict[str, Any], lock_path: Path, lock_status: str,
                 clock: _Clock) -> BuildReport:
    bundle, installer = kept["bundle"], kept["installer"]
    return BuildReport(bundle, bundle.with_name(bundle.name + ".minisig"), installer,
                       installer.with_name(installer.name + ".minisig"), kept["manifest_sha256"],
                       kept["bundle_size"], kept["installer_size"], lock_path, lock_status,
                       kept["sections"], kept["counts"], None, 0,
                       tuple(clock.timings), reused=True)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def format_report(report: BuildReport) -> List[str]:
    """The short summary `kubecrate build` prints on stderr."""
    sections = ", ".join(f"{name}/ {_mib(size)}" for name, size in report.sections.items())
    counts = ", ".join(f"{n} {what}" for what, n in report.counts.items())
    stats = report.fetch
    timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.timings)
    if report.reused:
        return [
            f"bundle    {report.bundle} ({_mib(report.bundle_size)}; bundle.json sha256 "
            f"{report.manifest_sha256[:16]}...): kept, it matches the lock and verifies",
            f"installer {report.installer} ({_mib(report.installer_size)}): kept",
            f"lock      {report.lock} ({report.lock_status})",
            f"time      {timings}",
        ] + _delta_lines(report)
    if stats is None:  # only a kept bundle has no fetch statistics
        raise ValueError("a build report without fetch statistics")
    return [
        f"bundle    {report.bundle} ({_mib(report.bundle_size)}; bundle.json sha256 "
        f"{report.manifest_sha256[:16]}...) and {report.signature.name}",
        f"installer {report.installer} ({_mib(report.installer_size)}) and "
        f"{report.installer_signature.name}",
        f"lock      {report.lock} ({report.lock_status})",
        f"contents  {counts}; {sections}",
        f"fetched   {_mib(stats.downloaded)} downloaded ({stats.files_downloaded} files), "
        f"{_mib(stats.cached)} from the cache ({stats.files_cached} files)"
        + (f"; {report.wheels_downloaded} installer wheels from PyPI"
           if report.wheels_downloaded else ""),
        f"time      {timings}",
    ] + _delta_lines(report)


def _delta_lines(report: BuildReport) -> List[str]:
    delta = report.delta
    if delta is None:
        return []
    share = 100.0 * delta.size / delta.result_size if delta.result_size else 0.0
    return [
        f"delta     {delta.path} ({_mib(delta.size)}, gzip) and {delta.signature.name}: from "
        f"base {delta.base_name} (bundle.json sha256 {delta.base_sha256[:16]}...); "
        f"{delta.carried} files carried, {delta.pieced} assembled from pieces, "
        f"{delta.reused} taken from the base",
        f"saved     {_mib(delta.saved)}: the delta is {share:.1f}% of the full bundle's "
        f"{_mib(delta.result_size)}",
    ]
