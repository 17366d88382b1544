"""`RECIPE.lock`: a recipe resolved against a mirror preset, down to every digest.

    lock = make_lock(recipe, preset, session=session, cache=cache)   # a Lock
    write_lock(lock_path_for(recipe_path), lock)
    changes = compare(load_lock(path), lock)      # [] when nothing changed

The lock is JSON with sorted keys and sorted lists, so that it diffs well and the same
resolution always gives the same bytes. It records its inputs (the recipe's and the preset's
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from builder.cache import Cache
from builder.errors import BuildError
from builder.inputs.mirrors import MirrorPreset
from builder.inputs.recipe import PackageSpec, Recipe, check_against_preset, role_images
from builder.registry.kubeadm_images import kubeadm_images
from builder.rpm.vercmp import overlaps, parse_evr
from installer.format.bundleinfo import AssumedBase

if TYPE_CHECKING:
    from builder.rpm.resolve import Resolution

__all__ = ["LOCK_VERSION", "InputFile", "Lock", "LockError", "LockTarget", "LockedBinary",
           "LockedImage", "LockedKey", "LockedLayer", "LockedRepo", "LockedRpm", "StaleLock",
           "compare", "dump_lock", "go_arch", "input_changes", "inputs_of", "load_lock",
           "lock_path_for", "make_lock", "platform_of", "request_text", "write_lock"]

LOCK_VERSION = 1
_OPS = {"=": "EQ", ">=": "GE", "<=": "LE", "<": "LT", ">": "GT"}
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
Progress = Callable[[int, int], None]


class LockError(BuildError):
    """A lock file is unreadable or not a kubecrate lock."""


class StaleLock(BuildError):
    """The lock no longer matches its recipe, preset or what the mirrors serve."""

    def __init__(self, path: Path, changes: Sequence[str]) -> None:
        super().__init__(f"{path} is out of date:\n  " + "\n  ".join(changes),
                         hint="run `kubecrate lock` to update it, and review the change")
        self.changes = tuple(changes)


def lock_path_for(recipe_path: Path) -> Path:
    """manifests/x.yaml -> manifests/x.lock"""
    return Path(recipe_path).with_suffix(".lock")


def go_arch(arch: str) -> str:
    return _GO_ARCH[arch]


def platform_of(arch: str) -> str:
    return f"linux/{go_arch(arch)}"


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class InputFile:
    """A file the lock was made from: the recipe or the mirror preset."""
    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class LockTarget:
    os: str
    release: str
    arch: str
    base: tuple[str, ...]  # the recipe's target.base


@dataclass(frozen=True)
class LockedKey:
    url: str
    fingerprint: str
    sha256: str


@dataclass(frozen=True)
class LockedRepo:
    id: str
    baseurl: str
    priority: int
    repomd_url: str
    repomd_sha256: str
    gpgkeys: tuple[LockedKey, ...]


@dataclass(frozen=True)
class LockedRpm:
    nevra: str
    name: str
    arch: str
    repo: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class LockedBinary:
    name: str
    version: str
    arch: str
    filename: str
    url: str
    checksum_url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class LockedLayer:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class LockedImage:
    reference: str
    platform: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    source: str  # where it was pulled from
    layers: tuple[LockedLayer, ...]


@dataclass(frozen=True)
class Lock:
    """`RECIPE.lock`: the one typed owner of the lock file's content (to_json / from_json)."""
    recipe: InputFile
    preset: InputFile
    kubeadm_images: tuple[str, ...]
    created: int  # the bundle's SOURCE_DATE_EPOCH
    target: LockTarget
    kubernetes_version: str
    base: AssumedBase  # what the host is assumed to have (bundle.json's assumed_base too)
    requests: Dict[str, str]  # recipe spec -> the base package that satisfies it, or ""
    repos: tuple[LockedRepo, ...]
    rpms: tuple[LockedRpm, ...]
    binaries: tuple[LockedBinary, ...]
    images: tuple[LockedImage, ...]
    roles: Dict[str, tuple[str, ...]]  # role -> image references
    lock_version: int = LOCK_VERSION

    def to_json(self) -> Dict[str, Any]:
        return {
            "lock_version": self.lock_version,
            "recipe": asdict(self.recipe),
            "preset": asdict(self.preset),
            "kubeadm_images": list(self.kubeadm_images),
            "created": self.created,
            "target": {"os": self.target.os, "release": self.target.release,
                       "arch": self.target.arch, "base": list(self.target.base)},
            "kubernetes_version": self.kubernetes_version,
            "base": self.base.to_json(),
            "requests": dict(self.requests),
            "repos": [{"id": r.id, "baseurl": r.baseurl, "priority": r.priority,
                       "repomd": {"url": r.repomd_url, "sha256": r.repomd_sha256},
                       "gpgkeys": [asdict(k) for k in r.gpgkeys]} for r in self.repos],
            "rpms": [asdict(r) for r in self.rpms],
            "binaries": [asdict(b) for b in self.binaries],
            "images": [{"reference": i.reference, "platform": i.platform,
                        "manifest_digest": i.manifest_digest,
                        "manifest_media_type": i.manifest_media_type,
                        "config_digest": i.config_digest, "source": i.source,
                        "layers": [asdict(x) for x in i.layers]} for i in self.images],
            "roles": {role: {"images": list(refs)} for role, refs in self.roles.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "the lock") -> Lock:
        """The lock in `data`; LockError names the first key that is missing or malformed."""
        read = _Fields(source)
        base = read.obj(data, "base")
        target = read.obj(data, "target")
        return cls(
            lock_version=read.number(data, "lock_version"),
            recipe=read.record(InputFile, read.obj(data, "recipe"), "recipe"),
            preset=read.record(InputFile, read.obj(data, "preset"), "preset"),
            kubeadm_images=read.texts(data, "kubeadm_images"),
            created=read.number(data, "created"),
            target=LockTarget(read.text(target, "os", "target"),
                              read.text(target, "release", "target"),
                              read.text(target, "arch", "target"),
                              read.texts(target, "base", "target")),
            kubernetes_version=read.text(data, "kubernetes_version"),
            base=AssumedBase(read.text(base, "kind", "base"), read.text(base, "source", "base"),
                             read.texts(base, "packages", "base"),
                             read.texts(base, "missing", "base")),
            requests={str(k): read.text(read.obj(data, "requests"), k, "requests")
                      for k in read.obj(data, "requests")},
            repos=tuple(LockedRepo(
                read.text(r, "id", w), read.text(r, "baseurl", w), read.number(r, "priority", w),
                read.text(read.obj(r, "repomd", w), "url", w + ".repomd"),
                read.text(read.obj(r, "repomd", w), "sha256", w + ".repomd"),
                tuple(read.record(LockedKey, k, f"{w}.gpgkeys[{j}]")
                      for j, k in enumerate(read.objs(r, "gpgkeys", w))))
                for w, r in read.each(data, "repos")),
            rpms=tuple(read.record(LockedRpm, r, w) for w, r in read.each(data, "rpms")),
            binaries=tuple(read.record(LockedBinary, b, w)
                           for w, b in read.each(data, "binaries")),
            images=tuple(LockedImage(
                read.text(i, "reference", w), read.text(i, "platform", w),
                read.text(i, "manifest_digest", w), read.text(i, "manifest_media_type", w),
                read.text(i, "config_digest", w), read.text(i, "source", w),
                tuple(read.record(LockedLayer, x, f"{w}.layers[{j}]")
                      for j, x in enumerate(read.objs(i, "layers", w))))
                for w, i in read.each(data, "images")),
            roles={role: read.texts(read.obj(read.obj(data, "roles"), role, "roles"), "images",
                                   f"roles.{role}")
                   for role in read.obj(data, "roles")},
        )


class _Fields:
    """Typed reads of a lock's JSON, each failure a LockError naming the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _get(self, data: Mapping[str, Any], key: str, where: str, kind: type, what: str) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in data:
            raise LockError(f"{self.source}: not a kubecrate lock (no {name})",
                            hint="run `kubecrate lock` to write it again")
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise LockError(f"{self.source}: {name} is not {what}",
                            hint="run `kubecrate lock` to write it again")
        return value

    def obj(self, data: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
        return self._get(data, key, where, dict, "an object")

    def text(self, data: Mapping[str, Any], key: str, where: str = "") -> str:
        return self._get(data, key, where, str, "a string")

    def number(self, data: Mapping[str, Any], key: str, where: str = "") -> int:
        return self._get(data, key, where, int, "a whole number")

    def texts(self, data: Mapping[str, Any], key: str, where: str = "") -> tuple[str, ...]:
        value = self._get(data, key, where, list, "a list")
        for index in range(len(value)):
            self._get({key: value[index]}, key, where, str, f"a list of strings (item {index})")
        return tuple(value)

    def objs(self, data: Mapping[str, Any], key: str, where: str = "") -> List[Mapping[str, Any]]:
        value = self._get(data, key, where, list, "a list")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                name = f"{where}.{key}" if where else key
                raise LockError(f"{self.source}: {name}[{index}] is not an object",
                                hint="run `kubecrate lock` to write it again")
        return value

    def each(self, data: Mapping[str, Any], key: str) -> List[Tuple[str, Mapping[str, Any]]]:
        return [(f"{key}[{index}]", item) for index, item in enumerate(self.objs(data, key))]

    def record(self, kind: Any, data: Mapping[str, Any], where: str) -> Any:
        """A dataclass of plain fields (str or int, as annotated) read from `data`."""
        values = {}
        for item in fields(kind):
            values[item.name] = (self.number(data, item.name, where) if item.type in ("int", int)
                                 else self.text(data, item.name, where))
        return kind(**values)


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


# --------------------------------------------------------------------------- files


def dump_lock(lock: Lock) -> bytes:
    """The lock file's bytes: sorted keys, two-space indent, so that it diffs well."""
    return (json.dumps(lock.to_json(), indent=2, sort_keys=True, ensure_ascii=False)
            + "\n").encode()


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically (a temporary name beside it, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(dump_lock(lock))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_REQUIRED = ("lock_version", "recipe", "preset", "kubeadm_images", "created", "target",
             "kubernetes_version", "base", "repos", "rpms", "binaries", "images", "roles")


def load_lock(path: Path) -> Lock:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise LockError(f"cannot read the lock {path}: {err.strerror}") from None
    except ValueError as err:
        raise LockError(f"{path}: not valid JSON ({err})",
                        hint="run `kubecrate lock` to write it again") from None
    if not isinstance(document, dict):
        raise LockError(f"{path}: not a kubecrate lock (want a JSON object)")
    if document.get("lock_version") != LOCK_VERSION:
        raise StaleLock(Path(path), [f"lock format {document.get('lock_version')!r}, this "
                                     f"kubecrate writes {LOCK_VERSION}"])
    missing = [key for key in _REQUIRED if key not in document]
    if missing:
        raise LockError(f"{path}: not a kubecrate lock (no {', '.join(missing)})")
    return Lock.from_json(document, str(path))


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
