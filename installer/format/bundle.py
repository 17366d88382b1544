"""Verify and extract a signed bundle tar in ONE read; nothing extracted is used before the
signature verified.

First, what needs no byte of the tar: the key id and the global signature over the signature
and its trusted comment (minisig.check_comment), so a kubecrate trusted comment's bundle.json
digest is the key holder's word. Then the file is opened once and read once: every byte goes to
BLAKE2b-512 (the message of the prehashed signature) on a worker thread, while every member is
checked against bundle.json (name, kind, size, SHA-256) as it is written into a private staging
folder (installer/bundlecache.py). When the last byte was read, the Ed25519 signature over that
digest is checked; only then does walk() return, and only then may the caller rename the
staging folder into the cache. Reading once is what makes the bytes checked the bytes installed:
a file swapped or rewritten after the check has no second read to slip into.
"""

import contextlib
import gzip
import hashlib
import logging
import os
import queue
import threading
import zlib
from typing import Any, BinaryIO, Callable, Iterator, List, NamedTuple, Optional, Tuple, cast

from installer.format import minisig
from installer.format.errors import VerificationError
from installer.format.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_SIZE,
    BundleManifest,
    check_member_path,
    parse_manifest,
)
from installer.format.memberfile import create_file  # noqa: F401  (open_member's usual)
from installer.format.parts import PartDamaged
from installer.format.tarstream import Entry, TarReader, kind_phrase

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
    digest: Optional[bytes]  # the signed BLAKE2b-512 of the file (None: FIPS host, unchecked)
    signature: minisig.Signature


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
    """File reader that feeds every byte it returns to BLAKE2b on a worker thread (to nothing
    where Python refuses BLAKE2b: minisig.prehash)."""

    def __init__(self, handle: BinaryIO, progress: Progress = None) -> None:
        self._handle = handle
        self._progress = progress
        self._digest = minisig.prehash()
        self._hasher = _Background(self._digest.update, "blake2b") \
            if self._digest is not None else None

    def read(self, size: int = -1) -> bytes:
        block = self._handle.read(size)
        if block:
            if self._hasher is not None:
                self._hasher.put(block)
            if self._progress:
                self._progress(len(block))
        return block

    def finish(self) -> Optional[bytes]:
        """Hash the rest of the file and return the digest of every byte (None: no BLAKE2b)."""
        while self.read(1 << 20):
            pass
        if self._hasher is None or self._digest is None:
            return None
        self._hasher.join()
        return self._digest.digest()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.stop()


def _write(item: Tuple[BinaryIO, Optional[bytes]]) -> None:
    sink, block = item
    if block is None:
        sink.close()
    else:
        sink.write(block)


def signature_path_for(bundle_path: str) -> str:
    return bundle_path + ".minisig"


def claimed_manifest_sha256(signature: minisig.Signature) -> Optional[str]:
    """The bundle.json SHA-256 a kubecrate trusted comment names (None for a bundle re-signed
    with stock `minisign -S`). Trust it only after minisig.check_comment()."""
    return signature.comment_fields().get(COMMENT_MANIFEST_SHA256)


def walk(
    bundle_path: str,
    public_key: minisig.Trust,
    signature: minisig.Signature,
    open_member: Callable,
    progress: Progress = None,
    opener: Optional[Callable[[str], Any]] = None,  # read(n) and seek(0) are all it needs
) -> Bundle:
    """Read the tar once: hash it for the signature and check every member against bundle.json.
    `open_member(entry)` returns a writable file object for a member's bytes, or None to only
    hash them. `opener(bundle_path)` opens the stream (default: the file; parts.PartsReader
    for a split bundle). Returns only when the signature verified over exactly the bytes
    read; whatever `open_member` got must not be used when this raises."""
    minisig.check_comment(public_key, signature, bundle_path)
    fips = minisig.prehash() is None
    if fips and claimed_manifest_sha256(signature) is None:
        raise VerificationError(
            "{}: Python refuses BLAKE2b on this host (FIPS mode), and the signature's trusted "
            "comment names no bundle.json digest (signed with stock `minisign -S`), so nothing "
            "in the bundle can be checked here".format(bundle_path),
            hint="sign it with `kubecrate pack`/`build`, whose comment names bundle.json's "
                 "SHA-256; " + minisig.FIPS_HINT)
    with _opened(bundle_path, opener) as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        hashing = _HashingReader(raw, progress)
        writer = _Background(_write, "writer")
        try:
            try:
                manifest_raw, problems = _members(hashing, compressed, signature, open_member,
                                                  writer)
            except PartDamaged:
                raise  # the signed parts index already names the bad bytes exactly
            except VerificationError:
                # A bundle the key never signed should say so, not what its tar looks like.
                writer.stop()
                digest = hashing.finish()
                if digest is not None:
                    minisig.verify_digest(public_key, signature, digest, bundle_path)
                raise
            digest = hashing.finish()
            writer.join()  # every member written, flushed and closed, or its error raised here
        finally:
            hashing.close()
            writer.stop()
    if digest is not None:
        minisig.verify_digest(public_key, signature, digest, bundle_path)
        log.info("signature OK (key %s): %s", minisig.key_id_hex(signature.key_id),
                 signature.trusted_comment)
    else:  # FIPS: the global signature (checked first) names bundle.json's SHA-256
        log.warning("%s: BLAKE2b is refused by this Python (FIPS mode): checked the global "
                    "signature of key %s, bundle.json against the SHA-256 its trusted comment "
                    "names, and every member against bundle.json's SHA-256; not the BLAKE2b "
                    "prehash of the whole file", bundle_path,
                    minisig.key_id_hex(signature.key_id))
    if problems:
        raise VerificationError(
            "{} member(s) do not match bundle.json:\n  {}".format(
                len(problems), "\n  ".join(problems)
            )
        )
    return Bundle(
        bundle_path,
        parse_manifest(manifest_raw),
        hashlib.sha256(manifest_raw).hexdigest(),
        manifest_raw,
        digest,
        signature,
    )


@contextlib.contextmanager
def _tar_errors() -> Iterator[None]:
    """What a broken tar or gzip stream means to the user; a real I/O error (disk full,
    permissions) is raised as it is."""
    try:
        yield
    except EOFError:
        raise VerificationError("bundle is truncated (compressed stream ended early)")
    except (OSError, zlib.error) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise VerificationError("bundle is corrupt: {}".format(err))


def _opened(bundle_path: str, opener: Optional[Callable[[str], Any]]) -> Any:
    try:
        if opener:
            return opener(bundle_path)
        handle = open(bundle_path, "rb", buffering=0)
    except OSError as err:
        raise VerificationError("cannot read bundle {}: {}".format(bundle_path, err.strerror))
    # Read from start to end once: twice the read-ahead (measured, 1.09 GiB not in the page
    # cache: 0.57 s instead of 0.84-2.28 s). Only a hint: a file system may refuse it.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return handle


def signed_manifest(
    bundle_path: str,
    public_key: minisig.Trust,
    signature: minisig.Signature,
    opener: Optional[Callable[[str], Any]] = None,
) -> Optional[Bundle]:
    """bundle.json alone, read from the tar's first member and authenticated by the signature's
    trusted comment (checked against the key), which names its SHA-256: a few kilobytes read,
    whatever the bundle's size, so a command can refuse a bundle for what it is before walk()
    hashes every byte of it. None for a bundle signed with stock `minisign -S`, whose
    bundle.json is the key holder's word only once walk() has checked the whole file. Nothing
    but bundle.json is checked here: its files are the key holder's only after walk()."""
    minisig.check_comment(public_key, signature, bundle_path)
    claimed = claimed_manifest_sha256(signature)
    if claimed is None:
        return None
    with _opened(bundle_path, opener) as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        reader = TarReader(stream)
        with _tar_errors():
            manifest_raw = _read_manifest(reader, reader.entries(), signature)
    return Bundle(bundle_path, parse_manifest(manifest_raw), claimed, manifest_raw, None,
                  signature)


def _members(
    hashing: "_HashingReader",
    compressed: bool,
    signature: minisig.Signature,
    open_member: Callable,
    writer: _Background,
) -> Tuple[bytes, List[str]]:
    """Stream the tar's members; returns bundle.json's bytes and the members that did not
    match it (a structural problem raises at once)."""
    problems: List[str] = []
    # GzipFile only reads from it (never seeks): a forward-only reader is all it needs
    stream = (gzip.GzipFile(fileobj=cast(BinaryIO, hashing), mode="rb") if compressed
              else hashing)
    reader = TarReader(stream)
    entries = reader.entries()
    with _tar_errors():
        manifest_raw = _read_manifest(reader, entries, signature)
        expected = parse_manifest(manifest_raw).by_path()
        folders = {path.rsplit("/", 1)[0] for path in expected if "/" in path}
        folders = {
            "/".join(f.split("/")[: i + 1]) for f in folders for i in range(f.count("/") + 1)
        }
        seen = set()
        for entry in entries:
            name = check_member_path(entry.name)
            if entry.kind == "dir":
                if name not in folders:
                    raise VerificationError(
                        "bundle holds folder {!r}, which bundle.json does not list".format(name)
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
                    "{}: sha256 {} but bundle.json says {}".format(name, actual, spec.sha256)
                )
    for path in sorted(set(expected) - seen):
        problems.append("{}: listed in bundle.json but missing from the tar".format(path))
    return manifest_raw, problems


def _read_manifest(
    reader: TarReader,
    entries: Iterator[Entry],
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
    claimed = claimed_manifest_sha256(signature) if signature else None
    if claimed is not None and claimed != manifest_sha256:
        raise VerificationError(
            "bundle.json has sha256 {} but the signed trusted comment says {}".format(
                manifest_sha256, claimed
            )
        )
    return raw


# Measured on the 1.09 GiB benchmark bundle: 256 KiB reads cost ~0.06 CPU seconds less than
# 1 MiB ones (each block is hashed twice and written while it is still in the cores' caches).
MEMBER_CHUNK = 256 << 10


def _copy_member(reader: TarReader, sink: Optional[object], writer: _Background) -> str:
    """SHA-256 of the current member; its bytes go to `sink` through the writer thread."""
    digest = hashlib.sha256()
    try:
        for block in reader.read_data(MEMBER_CHUNK):
            digest.update(block)
            if sink is not None:
                writer.put((sink, block))
    finally:
        if sink is not None:
            writer.put((sink, None))
    return digest.hexdigest()


def verify(
    bundle_path: str,
    public_key: minisig.Trust,
    signature_path: Optional[str] = None,
    progress: Progress = None,
) -> Bundle:
    """Check the signature and every member against bundle.json in one read, writing
    nothing."""
    signature = minisig.load_signature(signature_path or signature_path_for(bundle_path))
    return walk(bundle_path, public_key, signature, lambda spec: None, progress)


def cache_root(root: str) -> str:
    """<root>/var/lib/kubecrate/bundles, the bundle cache (installer/bundlecache.py)."""
    return os.path.join(os.path.abspath(root), CACHE_DIR)
