"""Release binaries: kubeadm/kubelet/kubectl from a dl.k8s.io-shaped tree, crictl and CNI plugin
tarballs from their release URL templates, all through the mirror preset
(builder/inputs/mirrors.py).

Each file is checked against upstream's checksum file next to it (docs/mirrors.md): dl.k8s.io
`<file>.sha256` holds only the hex digest, GitHub release assets hold `<hex>  <file>`. The bytes
stream into the content-addressed cache, which keeps them only when they hash to that digest, so
a mismatch or a cut connection leaves nothing behind. A file already cached is not downloaded.
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from typing import Callable, Iterable, NamedTuple, Optional
from urllib.parse import urlsplit

import requests

from builder.cache import Cache, DigestMismatch
from builder.errors import BuildError
from builder.inputs.mirrors import NETRC_HINT, MirrorPreset

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
CHUNK = 1 << 20
TIMEOUT = (10.0, 60.0)  # connect, read (between bytes)
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
               backoff: float = BACKOFF, sleep: Callable[[float], None] = time.sleep,
               progress: Optional[Callable[[int], None]] = None) -> FetchedFile:
    """Fetch `url` into `cache`, checked against the digest in `checksum_url`. Connection
    failures and 5xx answers are retried `attempts` times; 4xx and mismatches are not."""
    filename = posixpath.basename(urlsplit(url).path)
    text = _retrying(lambda: _get_checksum(session, checksum_url), attempts, backoff, sleep)
    digest = parse_checksum(text, filename, checksum_url)
    if expected is not None and expected.lower().removeprefix("sha256:") != digest:
        raise BinaryError(f"{checksum_url} says sha256:{digest}, the lock says {expected}",
                          hint="upstream re-published the file, or the mirror serves another "
                               "one; re-lock only if you trust the new file")
    if not cache.has(digest):
        _retrying(lambda: _download(session, cache, url, digest, progress), attempts, backoff,
                  sleep)
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


# --------------------------------------------------------------------------- transport


class _Transient(Exception):
    """A failure worth another attempt: the connection, or a 5xx answer."""

    def __init__(self, error: BinaryError):
        super().__init__(error.message)
        self.error = error


def _retrying(call, attempts: int, backoff: float, sleep):
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return call()
        except _Transient as exc:
            if attempt >= attempts:
                raise exc.error from None
            log.info("%s (attempt %d of %d, retrying)", exc.error.message, attempt, attempts)
            sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _response(session: requests.Session, url: str) -> requests.Response:
    try:
        response = session.get(url, stream=True, timeout=TIMEOUT)
    except requests.RequestException as exc:
        error = BinaryError(f"{url}: unreachable: {exc}",
                            hint="check the mirror preset's URL and the network")
        raise _Transient(error) from None
    if response.status_code != 200:
        response.close()
        hints = {404: "the mirror may not carry this version/arch", 401: NETRC_HINT,
                 403: NETRC_HINT}
        error = BinaryError(f"{url}: HTTP {response.status_code} {response.reason}",
                            hint=hints.get(response.status_code))
        if response.status_code >= 500:
            raise _Transient(error)
        raise error
    return response


def _get_checksum(session: requests.Session, url: str) -> str:
    with _response(session, url) as response:
        data = b""
        try:
            for block in response.iter_content(CHUNK):
                data += block
                if len(data) > MAX_CHECKSUM_FILE:
                    raise BinaryError(f"{url}: too large for a checksum file")
        except requests.RequestException as exc:
            raise _Transient(BinaryError(f"{url}: download failed: {exc}")) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BinaryError(f"{url}: not a text checksum file") from None


def _download(session: requests.Session, cache: Cache, url: str, digest: str,
              progress) -> None:
    with _response(session, url) as response:
        try:
            with cache.writer(digest, url) as out:
                for block in response.iter_content(CHUNK):
                    out.write(block)
                    if progress:
                        progress(len(block))
        except DigestMismatch as exc:
            raise BinaryError(exc.message + " (checksum from the file next to it)",
                              hint="the mirror serves a different file than its checksum "
                                   "says; nothing was cached") from None
        except requests.RequestException as exc:
            raise _Transient(BinaryError(f"{url}: download failed: {exc}")) from None


def _vtag(version: str) -> str:
    return version if version.startswith("v") else "v" + version
