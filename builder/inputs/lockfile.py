"""The lock file, `RECIPE.lock`: its one typed owner.

    lock = load_lock(path)        # a Lock, every part a frozen dataclass; LockError names the key
    write_lock(path, lock)        # atomically; dump_lock(lock) is the file's bytes

JSON with sorted keys and sorted lists, so that it diffs well and the same resolution always
gives the same bytes; reading a lock and writing it again gives the same bytes. What goes in it,
and how a recipe is resolved into one, is builder/inputs/lock.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from builder.errors import BuildError
from installer.format.bundleinfo import AssumedBase

__all__ = ["LOCK_VERSION", "InputFile", "Lock", "LockError", "LockTarget", "LockedBinary",
           "LockedImage", "LockedKey", "LockedLayer", "LockedRepo", "LockedRpm", "StaleLock",
           "dump_lock", "load_lock", "write_lock"]

LOCK_VERSION = 1


class LockError(BuildError):
    """A lock file is unreadable or not a kubecrate lock."""


class StaleLock(BuildError):
    """The lock no longer matches its recipe, preset or what the mirrors serve."""

    def __init__(self, path: Path, changes: Sequence[str]) -> None:
        super().__init__(f"{path} is out of date:\n  " + "\n  ".join(changes),
                         hint="run `kubecrate lock` to update it, and review the change")
        self.changes = tuple(changes)


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
