"""Warm rebuilds: outputs of an earlier build that still match every input are kept as they are.

    inputs = build_inputs(recipe_path, lock, key, vendor_fingerprint, installer_source)
    kept = reusable(cache, out_dir, name, inputs, key)     # None: build as usual
    ...
    record(cache, out_dir, name, inputs, outputs)          # after the outputs are in place

A build's bytes are a function of the lock, the recipe file, the builder and installer code
(their source files), the signing key and the vendor key fingerprint the .pyz pins; `inputs`
is the SHA-256 of all of them. After a build, a record in the cache (`<cache>/builds/`, keyed
by output folder and bundle name, so the output folder holds only the four files) keeps that
digest with the BLAKE2b-512 of the bundle and of the installer and what the report prints.

Outputs are reused only when the record's inputs equal today's, the four files exist, each
file's BLAKE2b-512 equals the record's and its minisign signature verifies with the signing
key, and the bundle's signed trusted comment names the recorded bundle.json digest. Anything
else (a missing or edited file, a re-signed bundle, a record from other inputs) builds again.

The BLAKE2b of a file is taken from the record, not read again, only while the file's stat
identity (device, inode, size, mtime and ctime in ns) is the one recorded and its ctime is
older than the record by RACY_NS (as git trusts its index): any write, rename over, chmod or
utime of the file sets its ctime to the current time, which no user can set back. A file
changed within RACY_NS before the record was written is read in full, and the record is then
refreshed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from builder import __version__
from builder.bundle.keys import SecretKey
from builder.cache import Cache
from builder.inputs.lockfile import Lock, dump_lock
from installer.format import minisig
from installer.format.bundle import COMMENT_MANIFEST_SHA256
from installer.format.errors import VerificationError

__all__ = ["build_inputs", "forget", "record", "reusable"]

log = logging.getLogger(__name__)

FORMAT = 2
RACY_NS = 100_000_000  # file-system timestamps lag the clock by up to a jiffy
KINDS = ("bundle", "installer")
BUILDER_SOURCE = Path(__file__).resolve().parents[1]


def _tree_digest(root: Path) -> str:
    """SHA-256 over the relative paths and bytes of every file under `root` (no caches)."""
    digest = hashlib.sha256()
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(folder, name)
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_inputs(recipe_path: Path, lock: Lock, key: SecretKey,
                 vendor_fingerprint: str, installer_source: Path,
                 rotation: Optional[Dict[str, str]] = None) -> str:
    """The digest of everything that decides a build's output bytes."""
    document = {
        "format": FORMAT, "version": __version__,
        "lock": hashlib.sha256(dump_lock(lock)).hexdigest(),
        "recipe": hashlib.sha256(Path(recipe_path).read_bytes()).hexdigest(),
        "builder": _tree_digest(BUILDER_SOURCE),
        "installer": _tree_digest(Path(installer_source)),
        "key": (key.key_id + key.public).hex(),
        "vendor_fingerprint": vendor_fingerprint,
    }
    if rotation is not None:  # absent otherwise: earlier records stay valid
        document["rotation"] = rotation
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _record_path(cache: Cache, out_dir: Path, name: str) -> Path:
    where = f"{Path(out_dir).resolve()}\0{name}".encode()
    return cache.root / "builds" / f"{hashlib.sha256(where).hexdigest()}.json"


def record(cache: Cache, out_dir: Path, name: str, inputs: str, outputs: Dict[str, Any]) -> None:
    """Remember that the outputs now in `out_dir` were built from `inputs`. `outputs` holds
    "bundle" and "installer" paths, what the report prints (JSON-ready) and optionally
    "digests" (kind -> BLAKE2b-512 hex) already computed while writing."""
    known = outputs.get("digests") or {}
    document = dict(outputs, format=FORMAT, inputs=inputs,
                    digests={kind: known.get(kind) or minisig.file_digest(str(outputs[kind])).hex()
                             for kind in KINDS},
                    stat={kind: _identity(Path(outputs[kind])) for kind in KINDS},
                    written_ns=time.time_ns())
    for kind in KINDS:
        document[kind] = Path(outputs[kind]).name
    _write(_record_path(cache, out_dir, name), document)


def _identity(path: Path) -> list:
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _write(path: Path, document: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(tmp, path)


def forget(cache: Cache, out_dir: Path, name: str) -> None:
    """Drop the record before outputs are replaced: a build that stops half-way leaves none."""
    _record_path(cache, out_dir, name).unlink(missing_ok=True)


def reusable(cache: Cache, out_dir: Path, name: str, inputs: str, key: SecretKey,
             installer_key: Optional[minisig.PublicKey] = None) -> Optional[Dict[str, Any]]:
    """The record of outputs in `out_dir` that were built from `inputs` and still verify
    (the installer with `installer_key`, the old key in a key rotation), or None (with the
    reason logged) when the build must run."""
    path = _record_path(cache, out_dir, name)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if document.get("format") != FORMAT or document.get("inputs") != inputs:
        log.info("building %s: its inputs changed since the last build in %s", name, out_dir)
        return None
    reread = False
    try:
        for kind in KINDS:
            target = Path(out_dir) / document[kind]
            identity = _identity(target)
            if (identity == document["stat"][kind]
                    and identity[4] < document["written_ns"] - RACY_NS):
                digest = bytes.fromhex(document["digests"][kind])
            else:
                digest = minisig.file_digest(str(target))
                reread = True
            if digest.hex() != document["digests"][kind]:
                raise VerificationError(f"{target} changed since it was built")
            signature = minisig.load_signature(str(target) + ".minisig")
            signer = installer_key if kind == "installer" and installer_key else key.public_key
            minisig.verify_digest(signer, signature, digest, str(target))
            if kind == "bundle" and (f"{COMMENT_MANIFEST_SHA256}:{document['manifest_sha256']}"
                                     not in signature.trusted_comment.split("\t")):
                raise VerificationError(f"{target}.minisig names another bundle.json")
    except (OSError, KeyError, TypeError, ValueError, VerificationError) as err:
        log.warning("building %s again: the outputs in %s do not verify (%s)", name, out_dir,
                    getattr(err, "message", err))
        return None
    if reread:  # verified in full: later rebuilds may trust the stat identity
        document.update(stat={kind: _identity(Path(out_dir) / document[kind]) for kind in KINDS},
                        written_ns=time.time_ns())
        _write(path, document)
    document["bundle"] = Path(out_dir) / document["bundle"]
    document["installer"] = Path(out_dir) / document["installer"]
    return document
