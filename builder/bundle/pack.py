"""Write a bundle: bundle.json plus a deterministic tar, then its minisign signature.

Same inputs, same bytes: members sorted with bundle.json first, PAX format, every mtime the
bundle's `created` time (SOURCE_DATE_EPOCH), uid/gid 0 and no user names, modes reduced to
0644/0755, and for gzip a header with no name and mtime 0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, NamedTuple, Optional, cast

from builder.bundle.keys import SecretKey
from builder.bundle.sign import sign_digest, write_signature
from builder.errors import BuildError, UsageError
from builder.hashio import HashingReader, HashingWriter
from installer.format.bundle import COMMENT_BUNDLE, COMMENT_MANIFEST_SHA256
from installer.format.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    RESERVED_NAMES,
    check_member_path,
    clamp_mode,
    dump_manifest,
)

CHUNK = 1 << 20
RESERVED_KEYS = ("format_version", "name", "created", "files")


class Packed(NamedTuple):
    path: Path
    signature_path: Path
    manifest_sha256: str
    trusted_comment: str
    files: int
    size: int
    blake2b: str = ""  # of the whole file, hex: what the signature signs


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return int(time.time())
    try:
        epoch = int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None
    if epoch < 0:
        raise UsageError("SOURCE_DATE_EPOCH must not be negative")
    return epoch


def scan(source: Path, digests: Optional[Mapping[str, str]] = None,
         modes: Optional[Mapping[str, int]] = None) -> list[dict[str, Any]]:
    """Every regular file under `source`, sorted, with size, clamped mode and SHA-256.
    `digests` (relpath -> SHA-256 hex) spares reading files whose digest the caller knows (pack
    checks it while it copies them), `modes` gives modes of hard-linked files."""
    digests, modes = digests or {}, modes or {}
    if not source.is_dir():
        raise BuildError(f"{source} is not a folder")
    entries: List[Dict[str, Any]] = []
    for folder, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in dirnames + filenames:
            path = Path(folder, name)
            info = path.lstat()
            relpath = path.relative_to(source).as_posix()
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                kind = "symlink" if stat.S_ISLNK(info.st_mode) else "special file"
                raise BuildError(f"{path} is a {kind}: bundles hold only regular files",
                                 hint="copy the target in place of the link")
            if relpath in RESERVED_NAMES:
                raise BuildError(f"{path}: {relpath} is written by pack (or the host's cache) "
                                 "itself",
                                 hint="pass extra bundle.json sections with --metadata")
            check_member_path(relpath)
            entries.append({"path": relpath, "size": info.st_size,
                            "mode": clamp_mode(modes.get(relpath, info.st_mode)),
                            "sha256": digests.get(relpath) or _sha256(path)})
    entries.sort(key=lambda entry: entry["path"])
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _tarinfo(name: str, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack(
    source: Path,
    out: Path,
    key: SecretKey,
    name: Optional[str] = None,
    compress: Optional[str] = None,
    comment: Optional[str] = None,
    metadata: Optional[dict[str, Any]] = None,
    progress: Optional[Callable[[int], object]] = None,
    created: Optional[int] = None,
    digests: Optional[Mapping[str, str]] = None,
    modes: Optional[Mapping[str, int]] = None,
    comment_fields: Optional[Mapping[str, str]] = None,
) -> Packed:
    """Pack `source` into `out` and sign it as `out`.minisig; both appear only when complete.
    `created` (every mtime) defaults to SOURCE_DATE_EPOCH, else now; `digests` and `modes` as
    `scan` takes them; `comment_fields` are more `key:value` fields of the trusted comment
    (a delta's `delta-base`)."""
    if compress not in (None, "gzip"):
        raise UsageError(f"unknown compression {compress!r} (use gzip or none)")
    if comment and ("\n" in comment or "\t" in comment):
        raise UsageError("--comment must be one line without tabs")
    clash = sorted(set(metadata or {}) & set(RESERVED_KEYS))
    if clash:
        raise UsageError(f"metadata may not set {', '.join(clash)}: pack writes them")
    created = source_date_epoch() if created is None else int(created)
    name = name or out.name.split(".tar")[0]
    files = scan(source, digests, modes)
    document = dict(metadata or {})
    document.update(format_version=FORMAT_VERSION, name=name, created=created, files=files)
    manifest = dump_manifest(document)
    manifest_sha256 = hashlib.sha256(manifest).hexdigest()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            writer = HashingWriter(raw, hashlib.blake2b())
            gz = (gzip.GzipFile(filename="", mode="wb", fileobj=writer, mtime=0, compresslevel=6)
                  if compress else None)
            # a stream (mode "w"): tarfile only calls write() and tell(), which both have
            stream = cast(BinaryIO, writer if gz is None else gz)
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
                # CPython's TarFile has it (addfile's copy buffer); typeshed lacks it
                tar.copybufsize = CHUNK  # type: ignore[attr-defined]
                tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest), 0o644, created),
                            io.BytesIO(manifest))
                for entry in files:
                    _add_file(tar, source, entry, created, progress)
            if gz is not None:
                gz.close()
        trusted = "\t".join([f"timestamp:{created}", f"file:{out.name}", "prehashed",
                             f"{COMMENT_BUNDLE}:{name}",
                             f"{COMMENT_MANIFEST_SHA256}:{manifest_sha256}"]
                            + [f"{k}:{v}" for k, v in sorted((comment_fields or {}).items())]
                            + ([f"comment:{comment}"] if comment else []))
        signature = sign_digest(key, writer.hash.digest(), trusted)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    signature_path = out.with_name(out.name + ".minisig")
    write_signature(signature_path, signature)
    return Packed(out, signature_path, manifest_sha256, trusted, len(files), writer.size,
                  writer.hash.hexdigest())


def _add_file(tar, source: Path, entry: dict, created: int, progress) -> None:
    path = source / entry["path"]
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size != entry["size"]:
            raise BuildError(f"{path} changed size while the bundle was being packed")
        # re-hashed while tar copies it: a file changed since the scan must not enter the bundle
        reader = HashingReader(handle, progress)
        tar.addfile(_tarinfo(entry["path"], entry["size"], entry["mode"], created), reader)
    if reader.hash.hexdigest() != entry["sha256"]:
        raise BuildError(f"{path} changed while the bundle was being packed")
