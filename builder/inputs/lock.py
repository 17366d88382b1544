"""`RECIPE.lock`: a recipe resolved against a mirror preset, down to every digest.

    lock = make_lock(recipe, preset, session=session, cache=cache)   # a Lock
    write_lock(lock_path_for(recipe_path), lock)
    changes = compare(load_lock(path), lock)      # [] when nothing changed

The lock file's typed document, and reading and writing it, is builder/inputs/lockfile.py.
It records its inputs (the recipe's and the preset's
SHA-256, the kubeadm image set, the lock format), the assumed base install, and one entry per
yum repo (its `repomd.xml` and vendor keys, by SHA-256), RPM (NEVRA, repo, URL, SHA-256, size),
release binary (URL, SHA-256 from upstream's checksum file) and image (canonical reference,
platform, manifest/config/layer digests, where it was pulled from). `created` becomes the
bundle's SOURCE_DATE_EPOCH, so the same lock gives the same bundle bytes.

Resolving RPMs reads repodata only. Binaries and images are verified by reading their bytes,
so locking them fetches them into the cache, where `build` then finds them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from builder.cache import Cache
from builder.errors import BuildError
from builder.inputs.lockfile import (
    LOCK_VERSION,
    InputFile,
    Lock,
    LockedBinary,
    LockedImage,
    LockedKey,
    LockedLayer,
    LockedRepo,
    LockedRpm,
    LockTarget,
)
from builder.inputs.mirrors import MirrorPreset
from builder.inputs.recipe import PackageSpec, Recipe, check_against_preset, role_images
from builder.registry.kubeadm_images import kubeadm_images
from builder.rpm.vercmp import overlaps, parse_evr
from installer.format.bundleinfo import AssumedBase

if TYPE_CHECKING:
    from builder.rpm.resolve import Resolution

__all__ = ["compare", "go_arch", "input_changes", "inputs_of", "lock_path_for", "make_lock",
           "platform_of", "request_text"]

_OPS = {"=": "EQ", ">=": "GE", "<=": "LE", "<": "LT", ">": "GT"}
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
Progress = Callable[[int, int], None]


def lock_path_for(recipe_path: Path) -> Path:
    """manifests/x.yaml -> manifests/x.lock"""
    return Path(recipe_path).with_suffix(".lock")


def go_arch(arch: str) -> str:
    return _GO_ARCH[arch]


def platform_of(arch: str) -> str:
    return f"linux/{go_arch(arch)}"


def _sha256_file(path: Path, what: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise BuildError(f"cannot read the {what} {path}: {err.strerror}") from None


def inputs_of(recipe: Recipe, preset: MirrorPreset) -> Dict[str, Any]:
    """What a lock was made from; when any of it changes, the lock must be made again."""
    return {
        "lock_version": LOCK_VERSION,
        "recipe": {"name": recipe.name, "path": Path(recipe.source).name,
                   "sha256": _sha256_file(Path(recipe.source), "recipe")},
        "preset": {"name": preset.name, "path": str(preset.source),
                   "sha256": _sha256_file(Path(preset.source), "mirror preset")},
        "kubeadm_images": [k.reference for k in kubeadm_images(recipe.kubernetes.version)],
    }


def request_text(spec: PackageSpec) -> str:
    """The resolver's form of a recipe package spec: an `=` pin becomes name-[e:]v[-r]."""
    return f"{spec.name}-{spec.evr}" if spec.op == "=" else spec.name


def _check_ranges(recipe: Recipe, result: Resolution) -> None:
    """Specs with < <= > >= are resolved by name (newest) and must then satisfy their range."""
    from builder.rpm.resolve import ResolveError
    for spec in recipe.all_packages():
        if spec.op is None or spec.evr is None or spec.op == "=":
            continue
        chosen = result.package(spec.name)
        evr = chosen.evr if chosen else None
        if chosen is None and spec.name in result.in_base:
            continue  # the base has it; yum keeps what is installed
        if evr is None or not overlaps("EQ", evr, _OPS[spec.op], parse_evr(spec.evr)):
            raise ResolveError(f"{spec}: the newest {spec.name} in the repos is "
                               f"{chosen.nevra if chosen else 'none'}, which does not match",
                               hint="pin an exact version with `=`")


def make_lock(recipe: Recipe, preset: MirrorPreset, *, session: Any, cache: Cache,
              progress: Optional[Progress] = None,
              created: Optional[int] = None) -> Lock:
    """Resolve `recipe` through `preset` into a lock (not yet written). RecipeError,
    ResolveError, RegistryError or BinaryError name whatever does not exist or answer."""
    # Imported here, not at the top: checking a lock (a warm rebuild) needs none of them.
    from builder.binaries import fetch_kubernetes, fetch_release
    from builder.registry.client import pull_images
    from builder.rpm.elrelease import el_release_problems
    from builder.rpm.modules import module_view
    from builder.rpm.packages import fetch_keys
    from builder.rpm.repodata import load_repos
    from builder.rpm.resolve import resolve

    check_against_preset(recipe, preset)
    inputs = inputs_of(recipe, preset)
    kubeadm = inputs["kubeadm_images"]
    roles = role_images(recipe, kubeadm)

    repos = load_repos(preset, recipe.repos, session, cache=cache)
    wrong_release = el_release_problems(repos, recipe.target.major)
    if wrong_release:
        raise recipe.error(("target", "release"), f"the recipe targets EL{recipe.target.major}, "
                           f"but preset {preset.name!r} ({preset.source}) does not serve it: "
                           + "; ".join(wrong_release))
    requests = [request_text(s) for s in recipe.all_packages()]
    # EL8+: what dnf on the host would offer (its platform stream is el<major>)
    visible = module_view(repos, f"el{recipe.target.major}")
    visible.check_requests(requests)
    base = _base(recipe, visible.repos)
    result = resolve(requests, visible.repos, arch=recipe.target.arch, base=base)
    _check_ranges(recipe, result)
    by_id = {r.id: r for r in repos}
    keys = fetch_keys([preset.repo(r) for r in recipe.repos], session)
    repo_entries = []
    for repo in repos:
        repo_entries.append(LockedRepo(
            repo.id, repo.baseurl, repo.priority, repo.config.url("repodata/repomd.xml"),
            cache.put_bytes(repo.repomd.raw, f"{repo.id}: repomd.xml"),
            tuple(sorted((LockedKey(k.url, k.key.fingerprint, cache.put_bytes(k.data, k.url))
                          for k in keys if k.repo == repo.id),
                         key=lambda k: (k.url, k.fingerprint)))))
    rpms = [LockedRpm(p.nevra, p.name, p.arch, p.repo, by_id[p.repo].url(p), p.sha256, p.size)
            for p in result.packages]

    arch = go_arch(recipe.target.arch)
    fetched = fetch_kubernetes(session, preset, cache, recipe.kubernetes.version, arch)
    fetched += [fetch_release(session, preset, cache, name, version, arch)
                for name, version in recipe.binaries.items()]
    binaries = [LockedBinary(f.name, f.version, f.arch, f.filename, f.url, f.checksum_url,
                             f.sha256, f.size) for f in fetched]

    wanted = sorted({ref for refs in roles.values() for ref in refs})
    pulled = pull_images(wanted, platform_of(recipe.target.arch), preset, cache, session,
                         progress=progress)
    images = [LockedImage(p.reference, p.platform, p.manifest_digest, p.manifest_media_type,
                          p.config_digest, p.source,
                          tuple(LockedLayer(d, t, s) for d, t, s in
                                zip(p.layer_digests, p.layer_media_types, p.layer_sizes)))
              for p in pulled]
    resolved = base.to_json()
    return Lock(
        recipe=InputFile(**inputs["recipe"]),
        preset=InputFile(**inputs["preset"]),
        kubeadm_images=tuple(kubeadm),
        created=created if created is not None else _now(),
        target=LockTarget(recipe.target.os, recipe.target.release, recipe.target.arch,
                          tuple(recipe.target.base)),
        kubernetes_version=recipe.kubernetes.version,
        base=AssumedBase(resolved["kind"], resolved["source"], tuple(resolved["packages"]),
                         tuple(resolved["missing"])),
        requests={str(s): result.in_base.get(request_text(s), "") for s in
                  recipe.all_packages()},
        repos=tuple(repo_entries),
        rpms=tuple(sorted(rpms, key=lambda r: (r.name, r.nevra))),
        binaries=tuple(sorted(binaries, key=lambda b: (b.name, b.filename))),
        images=tuple(sorted(images, key=lambda i: i.reference)),
        roles={role: tuple(refs) for role, refs in sorted(roles.items())},
    )


def _base(recipe: Recipe, repos: Sequence[Any]) -> Any:
    """The recipe's target.base: one comps group, or `none`; package lists come later."""
    specs = recipe.target.base
    if len(specs) != 1 or not (specs[0].startswith("@") or specs[0] == "none"):
        raise recipe.error(("target", "base"), "only one comps group (\"@core\") is supported "
                           "as the base for now")
    from builder.rpm.base import base_from_spec

    return base_from_spec(specs[0], repos, recipe.target.arch)


def _now() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else int(time.time())


# --------------------------------------------------------------------------- comparing


def input_changes(lock: Lock, recipe: Recipe, preset: MirrorPreset) -> List[str]:
    """What changed in the lock's inputs (no network): recipe, preset, kubeadm images."""
    now = inputs_of(recipe, preset)
    changes = []
    for old, key, what in ((lock.recipe, "recipe", "recipe"),
                           (lock.preset, "preset", "mirror preset")):
        new = now[key]
        if old.sha256 != new["sha256"]:
            changes.append(f"{what} {new['path']}: sha256 {old.sha256[:12]} -> "
                           f"{new['sha256'][:12]}"
                           + (f" (was {old.path})" if old.path != new["path"] else ""))
    if list(lock.kubeadm_images) != now["kubeadm_images"]:
        changes.append("kubeadm image set: " + _list_change(lock.kubeadm_images,
                                                            now["kubeadm_images"]))
    return changes


def _list_change(old: Sequence[str], new: Sequence[str]) -> str:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    return ", ".join([f"+{x}" for x in added] + [f"-{x}" for x in removed]) or "reordered"


def _keyed(entries: Sequence[Mapping[str, Any]], key: str) -> Dict[str, Mapping[str, Any]]:
    return {str(e.get(key)): e for e in entries}


def compare(old_lock: Lock, new_lock: Lock) -> List[str]:
    """Every difference between two locks that matters, one line each, naming the RPM,
    binary or image (`created` is not compared), read off their file form."""
    old, new = old_lock.to_json(), new_lock.to_json()
    changes: List[str] = []
    for key in ("recipe", "preset"):
        if (old.get(key) or {}).get("sha256") != new[key]["sha256"]:
            changes.append(f"{key} {new[key]['path']} changed (sha256 "
                           f"{str((old.get(key) or {}).get('sha256'))[:12]} -> "
                           f"{new[key]['sha256'][:12]})")
    for key in ("kubeadm_images", "target", "kubernetes_version", "base", "requests", "roles"):
        if old.get(key) != new.get(key):
            changes.append(f"{key} changed")
    sections: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
        ("repos", "id", ("repomd", "gpgkeys", "baseurl")),
        ("rpms", "name", ("nevra", "sha256", "url")),
        ("binaries", "filename", ("sha256", "url")),
        ("images", "reference", ("manifest_digest", "config_digest", "source")))
    for section, key, compared in sections:
        before = _keyed(old.get(section) or [], key)
        after = _keyed(new.get(section) or [], key)
        for name in sorted(set(before) | set(after)):
            if name not in before:
                changes.append(f"{section}: + {after[name].get('nevra', name)}")
            elif name not in after:
                changes.append(f"{section}: - {before[name].get('nevra', name)}")
            else:
                for field in compared:
                    if before[name].get(field) != after[name].get(field):
                        changes.append(f"{section}: {name}: {field} "
                                       f"{_short(before[name].get(field))} -> "
                                       f"{_short(after[name].get(field))}")
    return changes


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
