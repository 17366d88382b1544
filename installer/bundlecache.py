"""The bundle cache, <root>/var/lib/kubecrate/bundles/<bundle.json sha256>/: how a folder gets
there (staged, then renamed), how it is proven to be what the builder signed without the tar,
and how the steps read from it with their bytes checked.

A cache folder holds the bundle's files, its bundle.json and its signature (`bundle.minisig`).
minisign's global signature covers the trusted comment, which names bundle.json's SHA-256,
which lists every file's size and SHA-256: so the folder is checked with the builder's key
alone. Anything else in it, a file missing, changed or of another kind, is refused (exit 3)
and named. One file may be missing on purpose: a worker that pulls every image from the control
planes' registry fetches the bundle without its image archive, and its folder's OMITTED_NAME
says so (only the image archive may be named there; a step that needs it is refused first,
installer/session.py).

Staging folders (`.unpack-*`) are flocked by the process filling them; a killed unpack leaves
one unlocked, and the next unpack or install removes it.
"""

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Dict, List, Optional

from installer.format import minisig
from installer.format.bundle import Bundle, cache_root, claimed_manifest_sha256
from installer.format.bundleinfo import IMAGE_ARCHIVE
from installer.format.errors import VerificationError
from installer.format.iotypes import Readable, Writable
from installer.format.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_SIZE,
    OMITTED_NAME,
    SIGNATURE_NAME,
    BundleManifest,
    parse_manifest,
    require_sha256,
)

log = logging.getLogger(__name__)

STAGING_PREFIX = ".unpack-"
CHUNK = 1 << 20


def folder_for(root: str, manifest_sha256: str) -> str:
    return os.path.join(cache_root(root), manifest_sha256)


def _damaged(directory: str, problems: List[str]) -> VerificationError:
    return VerificationError(
        "the bundle cache {} does not match its signed bundle.json ({} problem(s)):\n  {}".format(
            directory, len(problems), "\n  ".join(problems)),
        hint="nothing was used from it; remove it (rm -rf {}) and run `unpack` or `install` "
             "again with the bundle tar".format(directory))


def load_cached(directory: str, public_key: minisig.Trust,
                signature: Optional[minisig.Signature] = None) -> Bundle:
    """bundle.json of a cache folder, authenticated by the folder's signature (or `signature`,
    a tar's, when given): the global signature over its trusted comment, whose bundle.json
    digest must be this bundle.json's and the folder's name. The files are not read here
    (check_files)."""
    try:
        with open(os.path.join(directory, MANIFEST_NAME), "rb") as handle:
            raw = handle.read(MAX_MANIFEST_SIZE + 1)
    except OSError as err:
        raise _damaged(directory, ["{}: {}".format(MANIFEST_NAME, err.strerror)])
    if signature is None:
        sig_path = os.path.join(directory, SIGNATURE_NAME)
        if not os.path.isfile(sig_path):
            raise VerificationError(
                "{} has no {}: the cache cannot be checked without the bundle tar".format(
                    directory, SIGNATURE_NAME),
                hint="run `unpack X.tar` (or install --bundle X.tar) once with this installer; "
                     "it keeps the signature in the cache")
        signature = minisig.load_signature(sig_path)
    actual = authenticate_manifest(raw, public_key, signature, directory)
    if os.path.basename(os.path.normpath(directory)) != actual:
        raise _damaged(directory, ["{}: sha256 {} but the folder is named {}".format(
            MANIFEST_NAME, actual, os.path.basename(os.path.normpath(directory)))])
    return Bundle(directory, parse_manifest(raw), actual, raw, b"", signature)


def authenticate_manifest(raw: bytes, public_key: minisig.Trust,
                          signature: minisig.Signature, where: str) -> str:
    """bundle.json's SHA-256, once the signature's trusted comment (checked against the key)
    names exactly these bytes: all the files it lists are then checked against it. `where`
    names the cache folder or the URL in the errors."""
    minisig.check_comment(public_key, signature, where)
    actual = hashlib.sha256(raw).hexdigest()
    claimed = claimed_manifest_sha256(signature)
    if claimed is None:
        raise VerificationError(
            "{}: the signature's trusted comment names no bundle.json digest (the bundle was "
            "signed with stock `minisign -S`), so the cache cannot be checked without the "
            "tar".format(where),
            hint="pass the bundle tar with --bundle, or re-sign it with `kubecrate pack`")
    if actual != claimed:
        raise _damaged(where, ["{}: sha256 {} but the signed trusted comment says {}".format(
            MANIFEST_NAME, actual, claimed)])
    return actual


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def omitted(directory: str, manifest: BundleManifest) -> List[str]:
    """The files bundle.json lists that the cache folder leaves out on purpose (OMITTED_NAME):
    at most the image archive; anything else there is refused (exit 3)."""
    path = os.path.join(directory, OMITTED_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(1 << 16)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise _damaged(directory, ["{}: {}".format(OMITTED_NAME, err.strerror)])
    archive = str(manifest.data.get("image_archive") or IMAGE_ARCHIVE)
    try:
        names = json.loads(raw.decode("utf-8"))["omitted"]
        valid = isinstance(names, list) and all(name == archive for name in names)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise _damaged(directory, ["{}: not a list of files left out, or names another file "
                                   "than the image archive {}".format(OMITTED_NAME, archive)])
    return list(names)


def omitted_text(names: List[str]) -> bytes:
    """OMITTED_NAME's content for a folder filled without `names`."""
    return json.dumps({"omitted": sorted(names)}).encode("utf-8") + b"\n"


def check_files(directory: str, manifest: BundleManifest) -> None:
    """Every file bundle.json lists (but the ones omitted() names) is a regular file there with
    its size and SHA-256, and nothing else is there; all problems are collected, then raised
    once."""
    expected = manifest.by_path()
    left_out = set(omitted(directory, manifest))
    problems: List[str] = []
    found: Dict[str, os.stat_result] = {}
    for folder, dirs, names in os.walk(directory):
        for name in dirs + names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, directory)
            st = os.lstat(path)
            if os.path.isdir(path) and not os.path.islink(path):
                if not any(p.startswith(rel + "/") for p in expected):
                    problems.append("{}/: a folder bundle.json does not list".format(rel))
                continue
            if rel in (MANIFEST_NAME, SIGNATURE_NAME, OMITTED_NAME):
                continue
            if rel not in expected:
                problems.append("{}: not in bundle.json (added)".format(rel))
            elif not os.path.isfile(path) or os.path.islink(path):
                problems.append("{}: not a regular file".format(rel))
            else:
                found[rel] = st
    for rel, spec in sorted(expected.items()):
        seen = found.get(rel)
        if seen is None:
            if rel in left_out:
                continue
            if not any(p.startswith(rel + ":") for p in problems):
                problems.append("{}: missing (deleted)".format(rel))
        elif seen.st_size != spec.size:
            problems.append("{}: size {} but bundle.json says {} (changed)".format(
                rel, seen.st_size, spec.size))
        else:
            actual = file_sha256(os.path.join(directory, rel))
            if actual != spec.sha256:
                problems.append("{}: sha256 {} but bundle.json says {} (changed)".format(
                    rel, actual, spec.sha256))
    if problems:
        raise _damaged(directory, sorted(problems))


def verified_cache(directory: str, public_key: minisig.Trust,
                   signature: Optional[minisig.Signature] = None,
                   trusted: Optional[Bundle] = None) -> Bundle:
    """load_cached() and check_files(): the folder is exactly what the key signed. With
    `trusted` (a tar just verified in full) its bundle.json stands in for the folder's
    signature: the cached bundle.json must be byte for byte the same."""
    if trusted is not None:
        try:
            with open(os.path.join(directory, MANIFEST_NAME), "rb") as handle:
                same = hashlib.sha256(handle.read(MAX_MANIFEST_SIZE + 1)).hexdigest() \
                    == trusted.manifest_sha256
        except OSError as err:
            raise _damaged(directory, ["{}: {}".format(MANIFEST_NAME, err.strerror)])
        if not same:
            raise _damaged(directory, [MANIFEST_NAME + ": not the bundle's (changed)"])
        bundle = trusted
    else:
        bundle = load_cached(directory, public_key, signature)
    check_files(directory, bundle.manifest)
    log.info("bundle cache %s verified: %d files", directory, len(bundle.manifest.files))
    return bundle


# ---------------------------------------------------------------- staging


class Staging:
    """A private `.unpack-*` folder beside the cache, flocked while this process fills it;
    commit() fsyncs and renames it to the cache folder, discard() removes it and the cache
    folders this run created."""

    def __init__(self, root: str) -> None:
        self.cache = cache_root(root)
        self.created = _makedirs(self.cache)
        self.path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.cache)
        self._fd: Optional[int] = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.path, name), "xb") as out:
            out.write(data)

    def commit(self, manifest_sha256: str) -> str:
        final = os.path.join(self.cache, manifest_sha256)
        os.chmod(self.path, 0o755)
        _fsync_tree(self.path)
        try:
            os.rename(self.path, final)
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise _damaged(final, ["appeared while this run unpacked the bundle"])
            raise
        self.path = final
        _fsync_tree(self.cache, recursive=False)
        self._unlock()
        return final

    def discard(self) -> None:
        if os.path.basename(self.path).startswith(STAGING_PREFIX):
            shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()
        for folder in reversed(self.created):
            try:
                os.rmdir(folder)
            except OSError:
                break
        self.created = []

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_stale(cache: str) -> List[str]:
    """Remove the `.unpack-*` folders no living process holds (killed unpacks); returns them."""
    removed: List[str] = []
    try:
        names = os.listdir(cache)
    except OSError:
        return removed
    for name in sorted(names):
        path = os.path.join(cache, name)
        if not name.startswith(STAGING_PREFIX) or os.path.islink(path) \
                or not os.path.isdir(path):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # another run is filling it
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        log.warning("removed %s, left by an unpack that was killed", path)
        removed.append(path)
    return removed


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


def _fsync_tree(top: str, recursive: bool = True) -> None:
    """fsync every file and folder under `top` (only `top` itself unless `recursive`), so that
    what the rename publishes survives a crash. Done once, before the rename, not per file
    while extracting: the kernel has been writing back meanwhile, and the extraction never
    waits on the disk."""
    paths = [top]
    if recursive:
        for folder, dirs, names in os.walk(top):
            paths += [os.path.join(folder, name) for name in dirs + names]
    for path in reversed(paths):  # files before the folders that name them
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- reading what the steps use


def read_verified(path: str, sha256: str, what: str) -> bytes:
    """The bytes of a cached file, refused (exit 3, named) unless they hash to `sha256`."""
    with open(path, "rb") as handle:
        data = handle.read()
    require_sha256(what, hashlib.sha256(data).hexdigest(), sha256, path)
    return data


def copy_verified(source: str, sha256: str, out: Writable, what: str) -> None:
    """Copy a cached file into `out`, hashing while copying; raises before the caller can
    rename `out` into place when the bytes are not the signed ones."""
    with open(source, "rb") as handle:
        copy_stream_verified(handle, sha256, out, what, source)


def copy_stream_verified(stream: Readable, sha256: str, out: Writable, what: str,
                         source: str) -> None:
    """copy_verified() from an open stream (a file, an HTTPS response) named `source`."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(CHUNK), b""):
        digest.update(block)
        out.write(block)
    require_sha256(what, digest.hexdigest(), sha256, source)
