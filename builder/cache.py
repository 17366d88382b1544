"""The content-addressed download cache shared by every recipe: `<root>/sha256/<ab>/<hex>`.

A blob enters the cache only through `writer()`, which hashes while writing and moves the file
into place only when the digest matches, so a mismatch never enters the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from builder.errors import BuildError
from builder.hashio import HashingWriter

_DIGEST = re.compile(r"\A(?:sha256:)?([0-9a-f]{64})\Z")


class DigestMismatch(BuildError):
    """Downloaded bytes do not match the digest they were promised under."""


def default_root() -> Path:
    """$KUBECRATE_CACHE, else $XDG_CACHE_HOME/kubecrate, else ~/.cache/kubecrate."""
    if os.environ.get("KUBECRATE_CACHE"):
        return Path(os.environ["KUBECRATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kubecrate"


def place(source: Path, target: Path) -> None:
    """Put the bytes of `source` (a cache file) at `target`: a hard link where the file system
    allows it (no bytes read or written), else a copy. Callers never write to `target` nor
    change its mode: a hard link shares both with the cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, links not allowed, link count exhausted
        shutil.copyfile(source, target)


def hex_of(digest: str) -> str:
    match = _DIGEST.match(digest)
    if not match:
        raise BuildError(f"not a sha256 digest: {digest!r}")
    return match.group(1)


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_root()

    def path(self, digest: str) -> Path:
        value = hex_of(digest)
        return self.root / "sha256" / value[:2] / value

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    @contextlib.contextmanager
    def writer(self, digest: str, what: str = "") -> Iterator[HashingWriter]:
        """Yield a writer; on exit the bytes must hash to `digest` or nothing is kept.
        `what` (a URL or reference) names the download in the error."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = HashingWriter(handle)
                yield writer
            actual = writer.hash.hexdigest()
            if actual != hex_of(digest):
                raise DigestMismatch(
                    f"{what or digest}: downloaded bytes have sha256:{actual}, "
                    f"expected sha256:{hex_of(digest)}",
                    hint="the mirror serves different content than the lock/metadata promise")
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes, what: str = "") -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            with self.writer(digest, what) as out:
                out.write(data)
        return digest
