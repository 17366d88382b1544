"""Detached minisign signatures (prehashed, algorithm "ED") that the stock `minisign -V` and the
installer's pure-Python verifier both accept."""

from __future__ import annotations

import os
from pathlib import Path

from builder.bundle.keys import SecretKey
from installer.format import minisig

UNTRUSTED_COMMENT = "signature from kubecrate secret key"


def sign_digest(key: SecretKey, digest: bytes, trusted_comment: str) -> minisig.Signature:
    """Sign a file's BLAKE2b-512 digest; the global signature binds the trusted comment."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise ValueError("a trusted comment is one line")
    signature = key.sign(digest)
    global_signature = key.sign(signature + trusted_comment.encode("utf-8"))
    return minisig.Signature(minisig.ALG_PREHASHED, key.key_id, signature, trusted_comment,
                             global_signature, UNTRUSTED_COMMENT)


def write_signature(path: Path, signature: minisig.Signature) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(signature.to_file_text(), encoding="utf-8")
    os.replace(tmp, path)


def sign_file(key: SecretKey, path: Path, trusted_comment: str | None = None) -> Path:
    """Write `path`.minisig; the default trusted comment is minisign's own style."""
    if trusted_comment is None:
        trusted_comment = f"timestamp:{int(os.stat(path).st_mtime)}\tfile:{path.name}\tprehashed"
    out = path.with_name(path.name + ".minisig")
    write_signature(out, sign_digest(key, minisig.file_digest(str(path)), trusted_comment))
    return out
