"""Bundle cache housekeeping: `cache list` and `cache prune`.

Every install and unpack keeps a full copy of its bundle under
<root>/var/lib/kubecrate/bundles/<bundle.json sha256>/ (installer/bundlecache.py), so a host
that has been upgraded a few times holds several gigabytes of bundles nobody will use again.
`cache prune` removes them but keeps:

- the bundle in use (state.json "bundle"), which reinstall and reset-then-install read;
- the one before it (state.json "previous_bundle"), the way back after an upgrade;
- the newest folder when it is neither: it was unpacked after the last install, most likely
  for the next one (`unpack NEW.tar`, then `install --bundle` its folder).

A folder is removed by renaming it to a staging name first (`.unpack-pruned-*`), then
deleting it: a prune killed halfway leaves a staging folder that the next unpack, install or
prune removes, never a half-deleted folder under a digest's name. Staging folders that no
living process holds are removed too; one being filled by a running unpack is left alone.
Prune holds the host lock, so it never runs beside an install.
"""

import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, NamedTuple

from installer import bundlecache
from installer.format.bundle import cache_root
from installer.format.bundleinfo import read_sections
from installer.format.errors import KubecrateError, VerificationError
from installer.format.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, parse_manifest
from installer.host import Host
from installer.state import HostLock, State

PRUNED_PREFIX = bundlecache.STAGING_PREFIX + "pruned-"

IN_USE = "in use"
PREVIOUS = "previous"
NEWEST = "newest unpacked, not installed yet"


class CachedBundle(NamedTuple):
    digest: str
    path: str
    name: str  # the recipe name from bundle.json, or why it cannot be read
    kubernetes_version: str
    size: int  # bytes on disk
    unpacked: float  # the folder's mtime: when unpack renamed it into place
    keep: str  # why prune keeps it, or ""
    partial: bool = False  # fetched without the image archive (bundlecache.OMITTED_NAME)


def _describe(path: str, digest: str):
    """(name, kubernetes version) from the folder's bundle.json, read but not verified: the
    listing only names folders, it never trusts their content."""
    try:
        with open(os.path.join(path, MANIFEST_NAME), "rb") as handle:
            raw = handle.read(MAX_MANIFEST_SIZE + 1)
        manifest = parse_manifest(raw)
        sections = read_sections(manifest.data)
    except (OSError, VerificationError) as err:
        return "(unreadable bundle.json: {})".format(getattr(err, "strerror", None) or err), "?"
    return manifest.name, sections.kubernetes_version or "?"


def _disk_usage(path: str) -> int:
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def list_cache(root: str) -> List[CachedBundle]:
    """Every bundle folder of the cache, oldest first, each with why prune keeps it."""
    cache = cache_root(root)
    state = State.load(Host(root, dry_run=True)).data
    try:
        names = sorted(n for n in os.listdir(cache) if _is_digest(n)
                       and os.path.isdir(os.path.join(cache, n))
                       and not os.path.islink(os.path.join(cache, n)))
    except FileNotFoundError:
        names = []
    except OSError as err:
        raise KubecrateError("cannot read the bundle cache {}: {}".format(cache, err.strerror))
    found = []
    for digest in names:
        path = os.path.join(cache, digest)
        name, version = _describe(path, digest)
        found.append(CachedBundle(digest, path, name, version, _disk_usage(path),
                                  os.stat(path).st_mtime, "",
                                  os.path.exists(os.path.join(path, bundlecache.OMITTED_NAME))))
    found.sort(key=lambda b: (b.unpacked, b.digest))
    keep = {}  # type: Dict[str, str]
    if state.get("previous_bundle"):
        keep[state["previous_bundle"]] = PREVIOUS
    if state.get("bundle"):
        keep[state["bundle"]] = IN_USE
    if found and found[-1].digest not in keep:
        keep[found[-1].digest] = NEWEST
    return [b._replace(keep=keep.get(b.digest, "")) for b in found]


class PruneResult(NamedTuple):
    removed: List[CachedBundle]
    kept: List[CachedBundle]
    staging: List[str]  # leftover staging folders removed
    freed: int


def prune(root: str, dry_run: bool = False) -> PruneResult:
    """Remove every cached bundle prune does not keep (see the module doc), under the host
    lock. With dry_run, only say what would go."""
    host = Host(root, dry_run=dry_run)
    cache = cache_root(root)
    if dry_run:
        return _prune(root, cache, dry_run)
    with HostLock(host):
        return _prune(root, cache, dry_run)


def _prune(root: str, cache: str, dry_run: bool) -> PruneResult:
    bundles = list_cache(root)
    staging = [] if dry_run else bundlecache.remove_stale(cache)
    removed, kept, freed = [], [], 0
    for entry in bundles:
        if entry.keep:
            kept.append(entry)
            continue
        if not dry_run:
            _remove(cache, entry.path)
        removed.append(entry)
        freed += entry.size
    return PruneResult(removed, kept, staging, freed)


def _remove(cache: str, path: str) -> None:
    """Rename the folder out of the digest namespace, then delete it."""
    doomed = tempfile.mkdtemp(prefix=PRUNED_PREFIX, dir=cache)
    try:
        os.rename(path, os.path.join(doomed, "bundle"))
    except OSError as err:
        os.rmdir(doomed)
        raise KubecrateError("cannot remove {}: {}".format(path, err.strerror),
                             hint="check the permissions of {}; nothing was removed from "
                                  "that folder".format(cache))
    shutil.rmtree(doomed)


def human_size(size: float) -> str:
    if size < 1024:
        return "{:.0f} B".format(size)
    for unit in ("KiB", "MiB"):
        size /= 1024.0
        if size < 1024:
            return "{:.1f} {}".format(size, unit)
    return "{:.1f} GiB".format(size / 1024.0)


def as_json(entry: CachedBundle) -> Dict[str, Any]:
    return {"digest": entry.digest, "path": entry.path, "name": entry.name,
            "kubernetes_version": entry.kubernetes_version, "size_bytes": entry.size,
            "unpacked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.unpacked)),
            "kept_because": entry.keep or None, "without_image_archive": entry.partial}

