"""`kubecrate split X.tar --size 4000M`: a bundle in parts for removable media.

FAT32, the file system every USB stick and every site's transfer station accepts, holds at most
4 GiB - 1 byte per file; a bundle is often larger. The parts are plain byte ranges of X.tar
(X.tar.part-001, -002, ...), and X.tar.parts is their index (format, the bundle's name and size,
each part's name, size and SHA-256), signed like the bundle (X.tar.parts.minisig). The
installer takes `--bundle X.tar.parts` (or any part's name), checks the index's signature,
checks each part's SHA-256 as it streams through it, names the part that is bad, and never
joins them on disk; the bundle's own signature (X.tar.minisig, which travels with the parts)
is checked over the whole stream as for a tar.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Dict, List

from builder.bundle.keys import SecretKey
from builder.bundle.sign import sign_file
from builder.errors import UsageError
from installer.format import delta, minisig
from installer.format.parts import PARTS_FORMAT, PARTS_SUFFIX, part_name

FAT32_LIMIT = (4 << 30) - 1
_SIZE = re.compile(r"^(\d+)([KMG]?)$", re.IGNORECASE)
CHUNK = 1 << 20


def parse_size(text: str) -> int:
    """`4000M`, `4G`, `512K` or bytes; powers of 1024."""
    match = _SIZE.match(text.strip())
    if not match:
        raise UsageError(f"--size {text!r}: want a number of bytes, or one with K, M or G "
                         "(e.g. 4000M)")
    size = int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]
    if size <= 0:
        raise UsageError(f"--size {text!r} must be more than 0")
    if size > FAT32_LIMIT:
        raise UsageError(f"--size {text!r} is more than FAT32 holds in one file "
                         f"({FAT32_LIMIT} bytes); 4000M fits")
    return size


def split_bundle(bundle: Path, size: int, key: SecretKey) -> List[Path]:
    """Write the parts and the signed index beside `bundle`; returns every file written.
    Parts are written under temporary names and renamed once all are complete."""
    signature = bundle.with_name(bundle.name + ".minisig")
    if not signature.is_file():
        raise UsageError(f"{signature} is missing: split a bundle `kubecrate build` signed")
    bundle_signature = minisig.load_signature(str(signature))
    if bundle_signature.key_id != key.key_id:
        # after a key rotation the default keys/kubecrate.key may be the old one: an index it
        # signed would verify only until the old key's expiry (docs/security.md)
        raise UsageError(
            f"{bundle} is signed by key {minisig.key_id_hex(bundle_signature.key_id)}; --key is "
            f"{minisig.key_id_hex(key.key_id)}: sign the index with the bundle's own key",
            hint="pass the secret key that signed the bundle (after a key rotation, the new "
                 "one)")
    if delta.base_named(bundle_signature.comment_fields()):
        raise UsageError(f"{bundle} is a delta bundle: copy it whole (a host assembles a delta "
                         "from the tar itself; split takes full bundles)")
    total = bundle.stat().st_size
    count = max(1, -(-total // size))
    if count > 999:
        raise UsageError(f"--size {size} would make {count} parts; at most 999")
    written: List[Path] = []
    parts: List[Dict[str, object]] = []
    try:
        with open(bundle, "rb") as source:
            for number in range(1, count + 1):
                final = bundle.with_name(part_name(bundle.name, number))
                temporary = final.with_name(f".{final.name}.tmp")
                written.append(temporary)
                digest, left = hashlib.sha256(), min(size, total - (number - 1) * size)
                with open(temporary, "wb") as out:
                    while left:
                        block = source.read(min(CHUNK, left))
                        if not block:
                            raise UsageError(f"{bundle} shrank while it was split")
                        digest.update(block)
                        out.write(block)
                        left -= len(block)
                    out.flush()
                    os.fsync(out.fileno())
                parts.append({"name": final.name, "size": os.path.getsize(temporary),
                              "sha256": digest.hexdigest()})
        index = bundle.with_name(bundle.name + PARTS_SUFFIX)
        document = {"format": PARTS_FORMAT, "bundle": bundle.name, "size": total,
                    "signature": signature.name, "parts": parts}
        temporary_index = index.with_name(f".{index.name}.tmp")
        temporary_index.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        written.append(temporary_index)
        finals = []
        for path in written:
            final = path.with_name(path.name[1:-len(".tmp")])
            os.replace(path, final)
            finals.append(final)
        written = finals
        finals.append(sign_file(key, index, f"kubecrate-parts:{bundle.name}\tparts:{count}"))
        return finals
    except BaseException:
        for path in written:
            if path.name.startswith(".") and path.exists():
                path.unlink()
        raise
