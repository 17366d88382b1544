"""Verify and unpack a signed bundle: signature first, then every member, nothing trusted early.

Pass 1 hashes the whole file with BLAKE2b-512 and checks the minisign signature before a single
tar header is parsed. Pass 2 streams the tar once: each member is checked against bundle.json
(name, kind, size, SHA-256) while it is written into a private temporary folder, and the raw bytes
are hashed again so that a file swapped between the passes is caught. Only when everything
matched is the folder renamed into the cache, named by bundle.json's SHA-256.
"""

import errno
import gzip
import hashlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import zlib
from typing import Callable, List, NamedTuple, Optional, Tuple

from installer import minisig
from installer.errors import VerificationError
from installer.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_SIZE,
    BundleManifest,
    check_member_path,
    parse_manifest,
)
from installer.tarstream import TarReader, kind_phrase

log = logging.getLogger(__name__)

CACHE_DIR = "var/lib/kubecrate/bundles"
COMMENT_BUNDLE = "bundle"
COMMENT_MANIFEST_SHA256 = "bundle.json-sha256"
GZIP_MAGIC = b"\x1f\x8b"

Progress = Optional[Callable[[int], None]]


class Bundle(NamedTuple):
    path: str
    manifest: BundleManifest
    manifest_sha256: str  # names the cache folder
    manifest_raw: bytes
    digest: bytes  # the signed BLAKE2b-512 of the file
    signature: minisig.Signature


class Unpacked(NamedTuple):
    bundle: Bundle
    directory: str
    reused: bool  # True when the cache already held this bundle


class _Background:
    """One worker thread applying `work(item)` in order, fed through a bounded queue. hashlib
    and file writes release the GIL, so on two or more cores this overlaps them with the main
    thread's reading and SHA-256. A failure in the worker is raised on the main thread at the
    next put() or at join()."""

    _STOP = object()

    def __init__(self, work: Callable, name: str) -> None:
        self._work = work
        self._error = None  # type: Optional[BaseException]
        self._queue = queue.Queue(maxsize=32)  # type: queue.Queue
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is None:  # after a failure, drain without working
                try:
                    self._work(item)
                except BaseException as err:  # handed to the main thread
                    self._error = err

    def put(self, item: object) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def stop(self) -> None:
        """Finish the queued work and end the thread; never raises."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()

    def join(self) -> None:
        self.stop()
        if self._error is not None:
            raise self._error


class _HashingReader:
    """File reader that feeds every byte it returns to BLAKE2b on a worker thread."""

    def __init__(self, handle: object, progress: Progress = None) -> None:
        self._handle = handle
        self._progress = progress
        self._digest = hashlib.blake2b()
        self._hasher = _Background(self._digest.update, "blake2b")

    def read(self, size: int = -1) -> bytes:
        block = self._handle.read(size)
        if block:
            self._hasher.put(block)
            if self._progress:
                self._progress(len(block))
        return block

    def finish(self) -> bytes:
        """Hash the rest of the file and return the digest of every byte."""
        while self.read(1 << 20):
            pass
        self._hasher.join()
        return self._digest.digest()

    def close(self) -> None:
        self._hasher.stop()


WRITE_SLICE = 128 << 10  # measured: page-cache writes of this size beat 1 MiB ones clearly


def _write(item: Tuple[object, Optional[bytes]]) -> None:
    sink, block = item
    if block is None:
        sink.close()
        return
    view = memoryview(block)
    for start in range(0, len(view), WRITE_SLICE):
        sink.write(view[start : start + WRITE_SLICE])


def signature_path_for(bundle_path: str) -> str:
    return bundle_path + ".minisig"


def check_signature(
    bundle_path: str,
    public_key: minisig.PublicKey,
    signature_path: Optional[str] = None,
    progress: Progress = None,
) -> Tuple[bytes, minisig.Signature]:
    """Pass 1: BLAKE2b the file and verify its minisign signature. Returns (digest, signature)."""
    signature = minisig.load_signature(signature_path or signature_path_for(bundle_path))
    try:
        digest = minisig.verify_file(
            bundle_path, public_key, signature, minisig.file_digest(bundle_path, progress)
        )
    except OSError as err:
        raise VerificationError("cannot read bundle {}: {}".format(bundle_path, err.strerror))
    log.info("signature OK (key %s): %s", public_key.id_hex, signature.trusted_comment)
    return digest, signature


def walk(
    bundle_path: str,
    digest: bytes,
    signature: minisig.Signature,
    open_member: Callable,
    progress: Progress = None,
) -> Bundle:
    """Pass 2: stream the tar, checking every member against bundle.json. `open_member(entry)`
    returns a writable file object for a member's bytes, or None to only hash them."""
    problems: List[str] = []
    with open(bundle_path, "rb", buffering=0) as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        hashing = _HashingReader(raw, progress)
        writer = _Background(_write, "writer")
        try:
            stream = gzip.GzipFile(fileobj=hashing, mode="rb") if compressed else hashing
            reader = TarReader(stream)
            entries = reader.entries()
            manifest_raw = _read_manifest(reader, entries, signature)
            manifest = parse_manifest(manifest_raw)
            expected = manifest.by_path()
            folders = {path.rsplit("/", 1)[0] for path in expected if "/" in path}
            folders = {
                "/".join(f.split("/")[: i + 1]) for f in folders for i in range(f.count("/") + 1)
            }
            seen = set()
            try:
                for entry in entries:
                    name = check_member_path(entry.name)
                    if entry.kind == "dir":
                        if name not in folders:
                            raise VerificationError(
                                "bundle holds folder {!r}, which bundle.json does not list".format(
                                    name
                                )
                            )
                        continue
                    if entry.kind != "file":
                        raise VerificationError(
                            "bundle member {!r} is {}: bundles hold only regular files and "
                            "folders".format(name, kind_phrase(entry.kind))
                        )
                    if name in seen or name == MANIFEST_NAME:
                        raise VerificationError("bundle member {!r} appears twice".format(name))
                    seen.add(name)
                    spec = expected.get(name)
                    if spec is None:
                        raise VerificationError(
                            "bundle member {!r} is not listed in bundle.json".format(name)
                        )
                    if entry.size != spec.size:
                        raise VerificationError(
                            "bundle member {!r}: size {} but bundle.json says {}".format(
                                name, entry.size, spec.size
                            )
                        )
                    actual = _copy_member(reader, open_member(spec), writer)
                    if actual != spec.sha256:
                        problems.append(
                            "{}: sha256 {} but bundle.json says {}".format(
                                name, actual, spec.sha256
                            )
                        )
            except EOFError:
                raise VerificationError("bundle is truncated (compressed stream ended early)")
            except (OSError, zlib.error) as err:
                if isinstance(err, OSError) and err.errno is not None:
                    raise  # a real I/O error (disk full, permissions), not a bad bundle
                raise VerificationError("bundle is corrupt: {}".format(err))
            for path in sorted(set(expected) - seen):
                problems.append("{}: listed in bundle.json but missing from the tar".format(path))
            reread = hashing.finish()
            writer.join()  # every member written and closed, or its error raised here
        finally:
            hashing.close()
            writer.stop()
    if reread != digest:
        raise VerificationError(
            "{} changed while it was read (its bytes no longer match the signed digest)".format(
                bundle_path
            ),
            hint="copy the bundle again and re-run",
        )
    if problems:
        raise VerificationError(
            "{} member(s) do not match bundle.json:\n  {}".format(
                len(problems), "\n  ".join(problems)
            )
        )
    return Bundle(
        bundle_path,
        manifest,
        hashlib.sha256(manifest_raw).hexdigest(),
        manifest_raw,
        digest,
        signature,
    )


def _read_manifest(
    reader: TarReader,
    entries: object,
    signature: Optional[minisig.Signature],
) -> bytes:
    """The raw bytes of bundle.json, which must come first; checked against the signed claim."""
    first = next(entries, None)
    if first is None or first.name != MANIFEST_NAME or first.kind != "file":
        raise VerificationError("bundle.json must be the first member of the bundle")
    if first.size > MAX_MANIFEST_SIZE:
        raise VerificationError("bundle.json is too large ({} bytes)".format(first.size))
    raw = b"".join(reader.read_data())
    manifest_sha256 = hashlib.sha256(raw).hexdigest()
    claimed = signature.comment_fields().get(COMMENT_MANIFEST_SHA256) if signature else None
    if claimed is not None and claimed != manifest_sha256:
        raise VerificationError(
            "bundle.json has sha256 {} but the signed trusted comment says {}".format(
                manifest_sha256, claimed
            )
        )
    return raw


def _copy_member(reader: TarReader, sink: Optional[object], writer: _Background) -> str:
    """SHA-256 of the current member; its bytes go to `sink` through the writer thread."""
    digest = hashlib.sha256()
    try:
        for block in reader.read_data():
            digest.update(block)
            if sink is not None:
                writer.put((sink, block))
    finally:
        if sink is not None:
            writer.put((sink, None))
    return digest.hexdigest()


def verify(
    bundle_path: str,
    public_key: minisig.PublicKey,
    signature_path: Optional[str] = None,
    progress: Progress = None,
) -> Bundle:
    """Check the signature, then every member against bundle.json, writing nothing.
    `progress(n)` is told about every byte read: twice the file size in all."""
    digest, signature = check_signature(bundle_path, public_key, signature_path, progress)
    return walk(bundle_path, digest, signature, lambda spec: None, progress)


def cache_root(root: str) -> str:
    return os.path.join(os.path.abspath(root), CACHE_DIR)


def unpack(
    bundle_path: str,
    public_key: minisig.PublicKey,
    root: str = "/",
    signature_path: Optional[str] = None,
    progress: Progress = None,
    verified: Optional[Tuple[bytes, minisig.Signature]] = None,
) -> Unpacked:
    """Verify and extract into <root>/var/lib/kubecrate/bundles/<bundle.json sha256>/.

    A bundle already in the cache is a no-op once its signature checked out. On any failure
    nothing is left behind but what existed before. `verified` is what check_signature()
    already returned for this file and key in this process (install's preflight): pass 1 is
    then skipped, and pass 2 still requires every byte read to reproduce that signed digest.
    """
    digest, signature = verified or check_signature(
        bundle_path, public_key, signature_path, progress
    )
    cache = cache_root(root)
    cached = find_cached(
        cache,
        signature.comment_fields().get(COMMENT_MANIFEST_SHA256)
        or _peek_manifest_sha256(bundle_path),
    )
    if cached is not None:
        directory, raw = cached
        bundle = Bundle(
            bundle_path, parse_manifest(raw), os.path.basename(directory), raw, digest, signature
        )
        log.info("bundle already unpacked in %s", directory)
        return Unpacked(bundle, directory, True)
    created = _makedirs(cache)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=cache)
    try:
        bundle = walk(
            bundle_path,
            digest,
            signature,
            lambda spec: create_file(staging, spec.path, spec.mode),
            progress,
        )
        with create_file(staging, MANIFEST_NAME, 0o644) as out:
            out.write(bundle.manifest_raw)
        final = os.path.join(cache, bundle.manifest_sha256)
        os.chmod(staging, 0o755)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise
    log.info("unpacked %s into %s", bundle_path, final)
    return Unpacked(bundle, final, False)


def _makedirs(path: str) -> List[str]:
    """Create `path` and its missing parents; returns the ones created, outermost first, so a
    failed unpack can leave the root exactly as it found it."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        os.mkdir(folder, 0o755)
    return list(reversed(missing))


def _peek_manifest_sha256(bundle_path: str) -> Optional[str]:
    """SHA-256 of the bundle.json at the head of an already signature-checked bundle."""
    try:
        with open(bundle_path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            reader = TarReader(stream)
            return hashlib.sha256(_read_manifest(reader, reader.entries(), None)).hexdigest()
    except (VerificationError, OSError, EOFError, zlib.error):
        return None  # pass 2 reports the problem properly


def find_cached(cache: str, manifest_sha256: Optional[str]) -> Optional[tuple]:
    """(folder, bundle.json bytes) when the cache folder `cache` (see cache_root) holds a
    complete copy of the bundle whose bundle.json has this SHA-256."""
    if not manifest_sha256:
        return None
    directory = os.path.join(cache, manifest_sha256)
    try:
        with open(os.path.join(directory, MANIFEST_NAME), "rb") as handle:
            raw = handle.read(MAX_MANIFEST_SIZE + 1)
    except OSError:
        return None
    return (directory, raw) if hashlib.sha256(raw).hexdigest() == manifest_sha256 else None


def create_file(staging: str, relpath: str, mode: int) -> object:
    """Create a new file under `staging` (parents as needed) for a member's bytes; never
    follows a link, never overwrites. An `open_member` for walk() usually calls this."""
    target = os.path.join(staging, relpath)
    parent = os.path.dirname(target)
    if parent != staging:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, mode)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ELOOP):
            raise VerificationError(
                "bundle member {!r} would overwrite or follow a link".format(relpath)
            )
        raise
    os.fchmod(fd, mode)
    return os.fdopen(fd, "wb")
