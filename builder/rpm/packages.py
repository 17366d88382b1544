"""Fetch what the bundle's yum repo needs: the vendors' GPG keys (checked against their pinned
fingerprints) and the resolved RPMs (checked against the repodata SHA-256 while streaming into
the cache, and their signatures against those keys before the file is committed).

    keys = fetch_keys([preset.repo(r) for r in repo_ids], session)
    files = [RpmFile.of(pkg, repo) for pkg in resolution.packages]
    paths = fetch_rpms(files, keyrings(keys), cache, session, progress=bar.update)

Every RPM enters the cache only through builder/net/http.py's `fetch_to_cache` (retries, Range
resume, the digest checked while streaming), and the signature check runs before the file is
committed: a wrong digest or a bad signature leaves no file behind. A file already cached is
verified again before it is used, and removed if it no longer verifies (e.g. after a pin
changed).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from builder.cache import Cache, DigestMismatch
from builder.errors import BuildError, KubecrateError, VerificationError
from builder.inputs.mirrors import YumRepo
from builder.net.http import (
    HTTPError,
    Policy,
    StatusError,
    TooLarge,
    Unreachable,
    fetch_to_cache,
    read_url,
)
from builder.rpm.metadata import Package
from builder.rpm.openpgp import Keyring, PublicKey, pinned_key
from builder.rpm.signature import RpmSignatures, RpmVerifier, verify_rpm

__all__ = ["KeyFile", "RpmFetchError", "RpmFile", "fetch_keys", "fetch_rpms", "keyrings"]

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
ATTEMPTS = 4  # failures in a row per file (a resume that made progress starts again)
# Parallel connections (requests' default pool keeps 10 per host). On a WAN link one TCP
# connection is held back by loss (cubic at 50 ms RTT and 0.1% loss: about 20 Mbit/s), so
# several are needed to fill the link: scripts/benchmarks/netfetch.py.
WORKERS = 8


class RpmFetchError(BuildError):
    """One or more RPMs (or keys) could not be fetched or did not verify; `problems` lists
    each as one line naming the file and its URL."""

    def __init__(self, message: str, problems: Sequence[str] = (), hint: Optional[str] = None,
                 verification: bool = False):
        super().__init__(message, hint)
        self.problems = tuple(problems)
        if verification:
            self.exit_code = VerificationError.exit_code


class RpmFile(NamedTuple):
    """One RPM to fetch: where from, and what repodata promises about it. `repo` selects the
    keys allowed to sign it."""

    filename: str
    url: str
    sha256: str
    size: int
    repo: str

    @classmethod
    def of(cls, package: Package, repo: Any) -> RpmFile:
        """From a resolved package and its `repodata.Repo` (anything with `url(package)`)."""
        return cls(package.location.rsplit("/", 1)[-1], repo.url(package), package.sha256,
                   package.size, package.repo)


class KeyFile(NamedTuple):
    """A vendor key as fetched (`data`, armored), with the pinned key found in it."""

    repo: str
    url: str
    data: bytes
    key: PublicKey


def fetch_keys(repos: Iterable[YumRepo], session: Any,
               timeout: Tuple[float, float] = TIMEOUT) -> List[KeyFile]:
    """Fetch every repo's pinned GPG keys and check each against its fingerprint; the same URL
    is fetched once. A mismatch is a KeyPinError naming repo, URL, expected and actual."""
    fetched: Dict[str, bytes] = {}
    found: List[KeyFile] = []
    for repo in repos:
        for pin in repo.gpgkeys:
            if pin.url not in fetched:
                fetched[pin.url] = read_url(
                    session, pin.url, f"{repo.id}: GPG key",
                    policy=Policy(attempts=ATTEMPTS, timeout=timeout),
                    hint="check the mirror preset's gpgkeys URL and that the mirror is up")
            key = pinned_key(fetched[pin.url], pin.fingerprint, repo=repo.id, url=pin.url)
            found.append(KeyFile(repo.id, pin.url, fetched[pin.url], key))
    return found


def keyrings(keys: Iterable[KeyFile]) -> Dict[str, Keyring]:
    """The trusted keys of each repo id: a repo's RPMs must be signed by that repo's keys."""
    rings: Dict[str, Keyring] = {}
    for keyfile in keys:
        rings.setdefault(keyfile.repo, Keyring()).add(keyfile.key)
    return rings


class _Fetcher:
    def __init__(self, cache: Cache, rings: Mapping[str, Keyring], session: Any,
                 timeout: Tuple[float, float], progress: Optional[Callable[[int], Any]]):
        self.cache, self.rings, self.session = cache, rings, session
        self.timeout, self.progress = timeout, progress

    def fetch(self, item: RpmFile) -> Path:
        ring = self.rings.get(item.repo)
        if ring is None or not ring.keys:
            raise VerificationError(f"no pinned GPG key for repo {item.repo!r}")
        path = self.cache.path(item.sha256)
        if path.is_file():
            try:
                self._log(verify_rpm(path, ring, item.filename), item)
                return path
            except VerificationError:
                # A cached file that no longer verifies must not be used, nor kept.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                raise
        verifier = RpmVerifier(ring, item.filename)
        try:
            return fetch_to_cache(
                self.session, self.cache, item.url, item.sha256, size=item.size or None,
                policy=Policy(attempts=ATTEMPTS, timeout=self.timeout), progress=self.progress,
                tee=verifier.update, check=lambda: self._log(verifier.finish(), item),
                hint="the mirror serves a different or damaged file than its metadata "
                     "promises; retry later or use another mirror")
        except TooLarge:
            raise DigestMismatch(f"{item.filename}: the mirror sends more than the "
                                 f"{item.size} bytes repodata gives") from None
        except Unreachable as err:
            raise BuildError(f"{item.filename}: download failed after {err.attempts} attempts "
                             f"({err.detail})") from None
        except HTTPError as err:  # a final answer (404, 403) or an unreadable file:// path
            raise BuildError(err.detail if isinstance(err, StatusError) else err.message) \
                from None

    @staticmethod
    def _log(result: RpmSignatures, item: RpmFile) -> None:
        log.debug("%s: %s signature(s) OK by %s", item.filename, "+".join(result.kinds),
                  ", ".join(result.fingerprints))


def fetch_rpms(files: Iterable[RpmFile], rings: Mapping[str, Keyring], cache: Cache,
               session: Any, *, workers: int = WORKERS,
               progress: Optional[Callable[[int], Any]] = None,
               timeout: Tuple[float, float] = TIMEOUT) -> Dict[str, Path]:
    """Make every file present and verified in the cache; return its cache path by sha256.
    Files run in parallel (`workers` threads sharing `session`); `progress(nbytes)` is called
    from those threads for each chunk downloaded. All failures are collected and raised once
    as an RpmFetchError naming each package and URL; nothing bad stays in the cache."""
    unique: Dict[str, RpmFile] = {}
    for item in files:
        unique.setdefault(item.sha256.lower(), item)
    fetcher = _Fetcher(cache, rings, session, timeout, progress)
    paths: Dict[str, Path] = {}
    problems: List[str] = []
    verification = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # biggest first, so that the longest download does not start last
        order = sorted(unique.values(), key=lambda item: -item.size)
        futures = {pool.submit(fetcher.fetch, item): item for item in order}
        for future in concurrent.futures.as_completed(futures):
            item = futures[future]
            try:
                paths[item.sha256.lower()] = future.result()
            except KubecrateError as err:
                verification |= isinstance(err, (VerificationError, DigestMismatch))
                text = err.message if err.message.startswith(item.filename) else \
                    f"{item.filename}: {err.message}"
                problems.append(f"{text} [{item.url}]")
    if problems:
        problems.sort()
        raise RpmFetchError(
            f"{len(problems)} of {len(unique)} RPMs failed:\n  " + "\n  ".join(problems),
            problems, hint="nothing that failed was kept in the cache",
            verification=verification)
    return paths
