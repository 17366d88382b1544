"""Release binaries: kubeadm/kubelet/kubectl from a dl.k8s.io-shaped tree, crictl and CNI plugin
tarballs from their release URL templates, all through the mirror preset
(builder/inputs/mirrors.py).

Each file is checked against upstream's checksum file next to it (docs/mirrors.md): dl.k8s.io
`<file>.sha256` holds only the hex digest, GitHub release assets hold `<hex>  <file>`. The bytes
stream into the content-addressed cache through builder/net/http.py, which keeps them only when
they hash to that digest, so a mismatch leaves nothing behind; a cut connection resumes where it
stopped, and 429/5xx answers are retried. A file already cached is not downloaded.
"""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Callable, Iterable, NamedTuple, Optional
from urllib.parse import urlsplit

import requests

from builder.cache import Cache, DigestMismatch
from builder.errors import BuildError
from builder.inputs.mirrors import NETRC_HINT, MirrorPreset
from builder.net.http import (
    HTTPError,
    Policy,
    StatusError,
    TooLarge,
    Unreachable,
    fetch,
    fetch_to_cache,
)

__all__ = [
    "KUBE_BINARIES",
    "BinaryError",
    "FetchedFile",
    "fetch_file",
    "fetch_kubernetes",
    "fetch_release",
    "parse_checksum",
]

log = logging.getLogger(__name__)

KUBE_BINARIES = ("kubeadm", "kubelet", "kubectl")
ATTEMPTS = 3
BACKOFF = 1.0
MAX_CHECKSUM_FILE = 64 << 10
_HEX = re.compile(r"\A[0-9a-fA-F]{64}\Z")


class BinaryError(BuildError):
    """A release file or its checksum file could not be fetched, or they disagree."""


class FetchedFile(NamedTuple):
    name: str  # kubeadm, kubelet, kubectl, crictl, cni
    version: str  # v1.23.17
    arch: str  # amd64, arm64
    filename: str  # kubeadm, crictl-v1.23.0-linux-amd64.tar.gz
    url: str
    checksum_url: str
    sha256: str  # hex; also the file's key in the cache
    size: int


def fetch_kubernetes(session: requests.Session, preset: MirrorPreset, cache: Cache,
                     version: str, arch: str,
                     names: Iterable[str] = KUBE_BINARIES,
                     expected: Optional[dict[str, str]] = None,
                     **options) -> list[FetchedFile]:
    """kubeadm, kubelet and kubectl (or `names`) of `version` for linux/`arch`, verified
    against their `.sha256` files (and `expected[name]`, a locked hex digest, when given)."""
    tree = preset.kubernetes
    out = []
    for name in names:
        url = tree.binary_url(version, arch, name)
        record = fetch_file(session, cache, url, tree.checksum_url(version, arch, name),
                            (expected or {}).get(name), **options)
        out.append(record._replace(name=name, version=_vtag(version), arch=arch))
    return out


def fetch_release(session: requests.Session, preset: MirrorPreset, cache: Cache, name: str,
                  version: str, arch: str, expected: Optional[str] = None,
                  **options) -> FetchedFile:
    """The release tarball `name` ("crictl", "cni") of `version` for `arch`, from the
    preset's URL template, verified against `<url>.sha256` (and `expected` when given)."""
    url = preset.release_url(name, version, arch)
    record = fetch_file(session, cache, url, url + ".sha256", expected, **options)
    return record._replace(name=name, version=_vtag(version), arch=arch)


def fetch_file(session: requests.Session, cache: Cache, url: str, checksum_url: str,
               expected: Optional[str] = None, attempts: int = ATTEMPTS,
               backoff: float = BACKOFF, sleep: Optional[Callable[[float], None]] = None,
               progress: Optional[Callable[[int], None]] = None) -> FetchedFile:
    """Fetch `url` into `cache`, checked against the digest in `checksum_url`, through
    builder/net/http.py: dropped connections, 408, 429 and 5xx are retried (`attempts` in a
    row) and a cut download resumes where it stopped; other answers and mismatches are final."""
    filename = posixpath.basename(urlsplit(url).path)
    policy = Policy(attempts=attempts, backoff=backoff, sleep=sleep)
    try:
        data = fetch(session, checksum_url, policy=policy, limit=MAX_CHECKSUM_FILE).data
    except HTTPError as err:
        raise _failed(err) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BinaryError(f"{checksum_url}: not a text checksum file") from None
    digest = parse_checksum(text, filename, checksum_url)
    if expected is not None and expected.lower().removeprefix("sha256:") != digest:
        raise BinaryError(f"{checksum_url} says sha256:{digest}, the lock says {expected}",
                          hint="upstream re-published the file, or the mirror serves another "
                               "one; re-lock only if you trust the new file")
    if not cache.has(digest):
        try:
            fetch_to_cache(session, cache, url, digest, policy=policy, progress=progress)
        except DigestMismatch as exc:
            raise BinaryError(exc.message + " (checksum from the file next to it)",
                              hint="the mirror serves a different file than its checksum "
                                   "says; nothing was cached") from None
        except HTTPError as err:
            raise _failed(err) from None
    else:
        log.debug("%s: sha256:%s already cached", url, digest)
    size = cache.path(digest).stat().st_size
    return FetchedFile(filename, "", "", filename, url, checksum_url, digest, size)


def parse_checksum(text: str, filename: str, source: str) -> str:
    """The hex SHA-256 for `filename` in a checksum file: either only the digest
    (dl.k8s.io) or `sha256sum` lines `<hex>  <file>` / `<hex> *<file>` (GitHub releases)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = []
    for line in lines:
        hexd, _, name = line.partition(" ")
        name = name.strip().lstrip("*")
        if not _HEX.match(hexd):
            raise BinaryError(f"{source}: not a SHA-256 checksum file (line {line[:80]!r})")
        if not name and len(lines) == 1:
            return hexd.lower()
        if posixpath.basename(name) == filename:
            found.append(hexd.lower())
    if not found:
        raise BinaryError(f"{source}: no SHA-256 for {filename}" if lines else
                          f"{source}: empty checksum file")
    if len(set(found)) > 1:
        raise BinaryError(f"{source}: conflicting SHA-256 lines for {filename}")
    return found[0]


# --------------------------------------------------------------------------- errors


def _failed(err: HTTPError) -> BinaryError:
    """A transport failure as the binaries' error, with a hint for what the user can do."""
    if isinstance(err, StatusError):
        hints = {404: "the mirror may not carry this version/arch", 401: NETRC_HINT,
                 403: NETRC_HINT}
        return BinaryError(err.message, hint=hints.get(err.status))
    if isinstance(err, TooLarge):
        return BinaryError(f"{err.url}: too large for a checksum file")
    if isinstance(err, Unreachable) and err.status is not None:
        return BinaryError(f"{err.url}: HTTP {err.status} {err.reason} (after {err.attempts} "
                           "attempts)", hint="the mirror is overloaded or down; retry later")
    if isinstance(err, Unreachable) and err.in_body:
        return BinaryError(f"{err.url}: download failed: {err.detail}", hint=err.hint)
    return BinaryError(f"{err.url}: unreachable: {err.detail}",
                       hint="check the mirror preset's URL and the network")


def _vtag(version: str) -> str:
    return version if version.startswith("v") else "v" + version
