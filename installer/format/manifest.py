"""`bundle.json`: the bundle's table of contents, the first member of every bundle tar.

The builder writes it (builder/bundle/pack.py) and everything on the host trusts a file only
after it
matched the size and SHA-256 recorded here.
"""

import hashlib
import json
import os
import re
from typing import Any, Dict, NamedTuple, Tuple

from installer.format.errors import VerificationError
from installer.format.iotypes import Readable

MANIFEST_NAME = "bundle.json"
SIGNATURE_NAME = "bundle.minisig"  # the signature a cache folder keeps beside bundle.json
OMITTED_NAME = "omitted.json"  # what a cache folder lacks on purpose (installer/bundlecache.py)
RESERVED_NAMES = (MANIFEST_NAME, SIGNATURE_NAME, OMITTED_NAME)
FORMAT_VERSION = 1
MAX_MANIFEST_SIZE = 64 << 20
CHUNK = 1 << 20
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")


class FileEntry(NamedTuple):
    path: str
    size: int
    mode: int
    sha256: str


class BundleManifest(NamedTuple):
    format_version: int
    name: str
    created: int
    files: Tuple[FileEntry, ...]
    data: Dict[str, Any]  # the whole document, for the sections later steps read

    def by_path(self) -> Dict[str, FileEntry]:
        return {entry.path: entry for entry in self.files}


def clamp_mode(mode: int) -> int:
    """Only two file modes exist in a bundle: executable or not, never setuid or world-writable."""
    return 0o755 if mode & 0o111 else 0o644


def check_member_path(path: str) -> str:
    """Return `path` if it is a safe relative POSIX path inside the bundle, else raise."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise VerificationError("bundle member has an empty or over-long name")
    if "\x00" in path or "\\" in path:
        raise VerificationError("bundle member {!r}: forbidden character".format(path))
    if path.startswith("/"):
        raise VerificationError("bundle member {!r}: absolute path".format(path))
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise VerificationError("bundle member {!r}: '..', '.' or empty component".format(path))
    return path


def dump_manifest(document: Dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, fixed indentation, UTF-8, trailing newline."""
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def _require(document: Dict[str, Any], key: str, kind: type, source: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise VerificationError(
            "{}: key {!r} missing or not a {}".format(source, key, kind.__name__)
        )
    return value


def parse_manifest(raw: bytes, source: str = MANIFEST_NAME) -> BundleManifest:
    """Parse and validate bundle.json; every problem is a VerificationError naming the key."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise VerificationError("{}: not valid JSON ({})".format(source, err))
    if not isinstance(document, dict):
        raise VerificationError("{}: top level must be an object".format(source))
    version = _require(document, "format_version", int, source)
    if version != FORMAT_VERSION:
        raise VerificationError(
            "{}: format_version {} is not supported (this installer reads {})".format(
                source, version, FORMAT_VERSION
            ),
            hint="use the kubecrate-installer.pyz built together with this bundle",
        )
    name = _require(document, "name", str, source)
    created = _require(document, "created", int, source)
    entries = []
    seen = set()
    for index, item in enumerate(_require(document, "files", list, source)):
        where = "{}: files[{}]".format(source, index)
        if not isinstance(item, dict):
            raise VerificationError(where + " is not an object")
        path = check_member_path(_require(item, "path", str, where))
        if path in RESERVED_NAMES or path in seen:
            raise VerificationError("{}: duplicate or reserved path {!r}".format(where, path))
        seen.add(path)
        size = _require(item, "size", int, where)
        mode = _require(item, "mode", int, where)
        digest = _require(item, "sha256", str, where)
        if size < 0 or not _SHA256.match(digest):
            raise VerificationError(where + ": bad size or sha256")
        entries.append(FileEntry(path, size, clamp_mode(mode), digest))
    # A file may not also be a directory of another file ("a" and "a/b").
    for path in seen:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in seen:
                raise VerificationError(
                    "{}: {!r} is both a file and a folder".format(source, "/".join(parts[:depth]))
                )
    return BundleManifest(version, name, created, tuple(entries), document)


# ------------------------------------------------- a bundle file, checked while it is read


class VerifiedReader:
    """A file reader that hashes what it returns; check() at the end of the stream."""

    def __init__(self, handle: Readable, sha256: str, what: str, path: str) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self._expected = sha256
        self._what = what
        self._path = path

    def read(self, size: int = -1) -> bytes:
        block = self._handle.read(size)
        self._digest.update(block)
        return block

    def check(self) -> None:
        for block in iter(lambda: self._handle.read(CHUNK), b""):
            self._digest.update(block)
        require_sha256(self._what, self._digest.hexdigest(), self._expected, self._path)


def require_sha256(what: str, actual: str, expected: str, path: str) -> None:
    """Refuse (exit 3, named) a file of an unpacked bundle whose bytes are not the signed ones:
    `path` is where it lies in the bundle cache, `what` its bundle path."""
    if actual != expected:
        directory = path[:-len(what) - 1] if path.endswith("/" + what) else os.path.dirname(path)
        raise VerificationError(
            "{} in the bundle cache has sha256 {} but the signed bundle.json says {} "
            "(changed): not used".format(what, actual, expected),
            hint="nothing was installed from it; remove the cache folder (rm -rf {}) and run "
                 "`unpack` or `install` again with the bundle tar".format(directory))
