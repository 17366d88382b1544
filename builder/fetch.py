"""Make everything a lock names present and verified in the cache, downloading only what is
missing, and hand the pieces to the staging step.

    fetched = fetch_locked(lock, preset, session=session, cache=cache)

With a warm cache nothing touches the network: the lock pins `repomd.xml` and the GPG keys by
digest, so they are served from the cache (builder/net/pinned.py), the other repodata files are
cached under the checksums repomd.xml gives, RPMs are re-verified in place, and binaries and
images are taken from the cache by their locked digests. `Fetched.stats` says how many bytes
came from the network and how many from the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from builder.binaries import FetchedFile, fetch_kubernetes, fetch_release
from builder.cache import Cache
from builder.errors import BuildError
from builder.inputs.lock import go_arch
from builder.inputs.lockfile import Lock, LockedImage, StaleLock
from builder.inputs.mirrors import MirrorPreset
from builder.net.pinned import pin_urls
from builder.registry.client import pull_images
from builder.registry.images import PulledImage
from builder.rpm.metadata import Package
from builder.rpm.openpgp import pinned_key
from builder.rpm.packages import KeyFile, RpmFile, fetch_keys, fetch_rpms, keyrings
from builder.rpm.repodata import Repo, load_repos
from builder.rpm.yumrepo import gather_xml

__all__ = ["FetchStats", "Fetched", "fetch_locked"]

Progress = Callable[[int], None]


class FetchStats(NamedTuple):
    downloaded: int  # payload bytes that were not in the cache before
    cached: int  # payload bytes taken from the cache
    files_downloaded: int
    files_cached: int


class Fetched(NamedTuple):
    packages: Tuple[Package, ...]
    rpm_paths: Dict[str, Any]  # sha256 -> cache path
    filelists: Dict[str, bytes]
    other: Dict[str, bytes]
    keys: Tuple[KeyFile, ...]
    binaries: Tuple[FetchedFile, ...]
    images: Tuple[PulledImage, ...]
    stats: FetchStats


class _Tally:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.missing: Dict[str, int] = {}
        self.present: Dict[str, int] = {}

    def note(self, digest: str, size: int) -> None:
        (self.present if self.cache.has(digest) else self.missing)[digest] = size

    def stats(self) -> FetchStats:
        return FetchStats(sum(self.missing.values()), sum(self.present.values()),
                          len(self.missing), len(self.present))


def fetch_locked(lock: Lock, preset: MirrorPreset, *, session: Any, cache: Cache,
                 lock_path: Path = Path("the lock"),
                 progress: Optional[Callable[[str, int], Progress]] = None) -> Fetched:
    """Everything `lock` names, verified, from the cache or through `preset`. `progress(what,
    total_bytes)` returns an update(n) callable for one download stage."""
    tally = _Tally(cache)
    pins = {}
    for repo in lock.repos:
        pins[repo.repomd_url] = repo.repomd_sha256
        tally.note(repo.repomd_sha256, 0)
        for key in repo.gpgkeys:
            pins[key.url] = key.sha256
    pin_urls(session, cache, pins)

    repo_ids = [repo.id for repo in lock.repos]
    repos = load_repos(preset, repo_ids, session, cache=cache)
    packages = _locked_packages(lock, repos, lock_path)
    keys = _keys(lock, preset, repo_ids, session, cache, lock_path)
    files = [RpmFile.of(p, _by_id(repos, p.repo)) for p in packages]
    for item in files:
        tally.note(item.sha256, item.size)
    need = sum(f.size for f in files if not cache.has(f.sha256))
    rpm_paths = fetch_rpms(files, keyrings(keys), cache, session,
                           progress=progress("RPMs", need) if progress and need else None)
    filelists, other = gather_xml(packages, repos)

    binaries = _binaries(lock, preset, session, cache, tally)
    images = _images(lock, preset, session, cache, tally, progress)
    return Fetched(tuple(packages), rpm_paths, filelists, other, tuple(keys), tuple(binaries),
                   tuple(images), tally.stats())


def _by_id(repos: List[Repo], repo_id: str) -> Repo:
    return next(r for r in repos if r.id == repo_id)


def _locked_packages(lock: Lock, repos: List[Repo], lock_path: Path) -> List[Package]:
    """The locked RPMs as the repos' metadata describes them (by repo and SHA-256)."""
    index = {(r.id, p.sha256): p for r in repos for p in r.packages}
    found, gone = [], []
    for entry in lock.rpms:
        package = index.get((entry.repo, entry.sha256))
        if package is None:
            gone.append(f"rpms: {entry.nevra} (sha256 {entry.sha256[:12]}) is no longer "
                        f"in repo {entry.repo}")
        else:
            found.append(package)
    if gone:
        raise StaleLock(lock_path, gone)
    return found


def _keys(lock: Lock, preset: MirrorPreset, repo_ids: List[str], session: Any,
          cache: Cache, lock_path: Path) -> List[KeyFile]:
    """The vendor keys the lock pins; checked against the preset's fingerprints either way."""
    keys = fetch_keys([preset.repo(r) for r in repo_ids], session)
    locked = {(repo.id, k.url): k.sha256 for repo in lock.repos for k in repo.gpgkeys}
    for keyfile in keys:
        digest = cache.put_bytes(keyfile.data, keyfile.url)
        if locked.get((keyfile.repo, keyfile.url)) not in (None, digest):
            raise StaleLock(lock_path,
                            [f"repos: {keyfile.repo}: the GPG key at {keyfile.url} changed"])
        # re-read from the bytes just cached, so a swapped file cannot slip in unchecked
        pinned_key(cache.path(digest).read_bytes(), keyfile.key.fingerprint, repo=keyfile.repo,
                   url=keyfile.url)
    return keys


def _binaries(lock: Lock, preset: MirrorPreset, session: Any, cache: Cache,
              tally: _Tally) -> List[FetchedFile]:
    out = []
    for entry in lock.binaries:
        tally.note(entry.sha256, entry.size)
        if cache.has(entry.sha256):
            out.append(FetchedFile(entry.name, entry.version, entry.arch, entry.filename,
                                   entry.url, entry.checksum_url, entry.sha256, entry.size))
        elif entry.name in ("kubeadm", "kubelet", "kubectl"):
            out += fetch_kubernetes(session, preset, cache, entry.version, entry.arch,
                                    names=[entry.name], expected={entry.name: entry.sha256})
        else:
            out.append(fetch_release(session, preset, cache, entry.name, entry.version,
                                     entry.arch, expected=entry.sha256))
    arch = {entry.arch for entry in lock.binaries}
    if arch and arch != {go_arch(lock.target.arch)}:
        raise BuildError(f"the lock's binaries are for {', '.join(sorted(arch))}, its target is "
                         f"{lock.target.arch}")
    return out


def _images(lock: Lock, preset: MirrorPreset, session: Any, cache: Cache,
            tally: _Tally, progress: Optional[Callable[[str, int], Progress]]
            ) -> List[PulledImage]:
    """Images whose blobs are all cached come from the lock alone; the others are pulled by
    their locked manifest digest (so a moved tag cannot change the bundle)."""
    ready, pull = [], []
    for entry in lock.images:
        blobs = [(entry.manifest_digest, 0), (entry.config_digest, 0)] + [
            (layer.digest, layer.size) for layer in entry.layers]
        for digest, size in blobs:
            tally.note(digest, size)
        if all(cache.has(digest) for digest, _ in blobs):
            ready.append(_pulled(entry))
        else:
            pull.append(entry)
    if pull:
        bar: Dict[str, Progress] = {}

        def report(n: int, total: int) -> None:
            if progress and "bar" not in bar:
                bar["bar"] = progress("images", total)
            if "bar" in bar:
                bar["bar"](n)

        pulled = pull_images([f"{e.reference}@{e.manifest_digest}" for e in pull],
                             pull[0].platform, preset, cache, session, progress=report)
        by_ref = {p.reference: p for p in pulled}
        ready += [by_ref[e.reference]._replace(source=e.source) for e in pull]
    return sorted(ready, key=lambda p: p.reference)


def _pulled(entry: LockedImage) -> PulledImage:
    layers = entry.layers
    return PulledImage(entry.reference, entry.platform, entry.manifest_digest,
                       entry.manifest_media_type, entry.config_digest,
                       tuple(x.digest for x in layers), tuple(x.media_type for x in layers),
                       tuple(x.size for x in layers), entry.source)
