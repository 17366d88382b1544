"""RPM signature verification in pure Python, streaming, against pinned vendor keys.

An RPM file is a 96-byte lead, the signature header (padded to 8 bytes), the main header, and
the compressed payload. Both headers share one layout: magic 8E AD E8 01, four reserved bytes,
the index entry count and the data size (big-endian), 16-byte index entries (tag, type, offset,
count), then the data store. The signature header holds OpenPGP signature packets over the main
header (RPMSIGTAG_RSA 268) and over main header + payload (RPMSIGTAG_PGP 1002), plus digests.

    verifier = RpmVerifier(keyring, "docker-ce-20.10.24-3.el7.x86_64.rpm")
    for chunk in stream: verifier.update(chunk)
    verifier.finish()          # -> RpmSignatures, or raises RpmSignatureError

Every signature present must verify with a trusted key, and the payload must be covered: by the
header+payload signature, or by the header signature plus the payload digest the signed header
carries (rpm >= 4.14 writes RPMTAG_PAYLOADDIGEST). So a CentOS 7 package, a Docker package, and
a modern header-only-signed package all verify, and nothing unsigned gets through.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

from builder.errors import VerificationError
from builder.rpm.openpgp import (
    HASHES,
    Keyring,
    OpenPGPError,
    Signature,
    SignatureError,
    parse_signature,
)

__all__ = ["RpmSignatureError", "RpmSignatures", "RpmVerifier", "signature_hashes",
           "verify_rpm"]

LEAD_SIZE = 96
LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
SIGTYPE_HEADERSIG = 5
# Signature header tags (rpm's lib/rpmtag.h).
SIG_SIZE, SIG_PGP, SIG_GPG, SIG_PAYLOADSIZE = 1000, 1002, 1005, 1007
SIG_DSA, SIG_RSA, SIG_SHA1, SIG_SHA256 = 267, 268, 269, 273
LONGSIGSIZE = 270
# Main header tags.
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_ARCH = 1000, 1001, 1002, 1022
TAG_PAYLOADDIGEST, TAG_PAYLOADDIGESTALGO = 5092, 5093
TYPE_INT32, TYPE_STRING, TYPE_BIN, TYPE_STRING_ARRAY, TYPE_I18N = 4, 6, 7, 8, 9
MAX_SIG_ENTRIES, MAX_SIG_DATA = 0xFFFF, 64 << 20
MAX_ENTRIES, MAX_DATA = 0xFFFFFF, 256 << 20  # rpm's own header limits (hdrchkTags/hdrchkData)


class RpmSignatureError(VerificationError):
    """An RPM is malformed, unsigned, signed by an unknown key, or its signature is bad."""


class RpmSignatures(NamedTuple):
    """What verified: `nevra` from the signed header, the trusted keys' fingerprints, and which
    kinds of signature were checked ("header", "header+payload")."""

    nevra: str
    fingerprints: Tuple[str, ...]
    kinds: Tuple[str, ...]


class _Header(NamedTuple):
    entries: Dict[int, Tuple[int, int, int]]  # tag -> (type, offset, count)
    data: bytes
    raw: bytes  # the whole header as stored: magic .. data store

    def bin(self, tag: int) -> Optional[bytes]:
        entry = self.entries.get(tag)
        if entry is None or entry[0] != TYPE_BIN:
            return None
        _, offset, count = entry
        return self.data[offset:offset + count]

    def strings(self, tag: int) -> List[str]:
        entry = self.entries.get(tag)
        if entry is None or entry[0] not in (TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18N):
            return []
        kind, offset, count = entry
        out = []
        for _ in range(1 if kind == TYPE_STRING else count):
            end = self.data.find(b"\0", offset)
            if end < 0:
                raise ValueError(f"unterminated string in tag {tag}")
            out.append(self.data[offset:end].decode("utf-8", "replace"))
            offset = end + 1
        return out

    def int32(self, tag: int) -> Optional[int]:
        entry = self.entries.get(tag)
        if entry is None or entry[0] != TYPE_INT32 or entry[2] < 1:
            return None
        return struct.unpack(">I", self.data[entry[1]:entry[1] + 4])[0]


def _header_size(preamble: bytes, what: str, which: str, limits: Tuple[int, int]) -> int:
    if preamble[:4] != HEADER_MAGIC:
        raise RpmSignatureError(f"{what}: not an RPM ({which} header magic is wrong)")
    count, size = struct.unpack(">II", preamble[8:16])
    if count > limits[0] or size > limits[1]:
        raise RpmSignatureError(f"{what}: {which} header is implausibly large "
                                f"({count} entries, {size} bytes)")
    return 16 + 16 * count + size


def _parse_header(raw: bytes, what: str, which: str) -> _Header:
    count = struct.unpack(">I", raw[8:12])[0]
    data = raw[16 + 16 * count:]
    entries: Dict[int, Tuple[int, int, int]] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack(">IIiI", raw[16 + 16 * i:32 + 16 * i])
        if offset < 0 or offset > len(data) or kind > 9:
            raise RpmSignatureError(f"{what}: {which} header entry for tag {tag} is out of range")
        entries.setdefault(tag, (kind, offset, n))
    return _Header(entries, data, raw)


class _Check(NamedTuple):
    kind: str  # "header" or "header+payload"
    sig: Signature
    hasher: Any


class RpmVerifier:
    """Feed an RPM's bytes in order with `update`, then `finish`: verifies every signature
    against `keyring`. `what` (the file name) is in every error message."""

    def __init__(self, keyring: Keyring, what: str):
        self.keyring = keyring
        self.what = what
        self._buf = bytearray()
        self._stage = "lead"  # lead -> sig -> header -> payload
        self._need = LEAD_SIZE
        self._sig: Optional[_Header] = None
        self._header: Optional[_Header] = None
        self._checks: List[_Check] = []
        self._payload_hash: Any = None
        self._signed_size = 0  # main header + payload bytes seen

    def update(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._stage == "payload":
            self._payload(data)
            return
        self._buf += data
        while self._stage != "payload" and len(self._buf) >= self._need:
            self._advance()
        if self._stage == "payload" and self._buf:
            rest, self._buf = bytes(self._buf), bytearray()
            self._payload(rest)

    def _payload(self, data: Any) -> None:
        self._signed_size += len(data)
        for check in self._checks:
            if check.kind == "header+payload":
                check.hasher.update(data)
        if self._payload_hash is not None:
            self._payload_hash.update(data)

    def _take(self, size: int) -> bytes:
        chunk = bytes(self._buf[:size])
        del self._buf[:size]
        return chunk

    def _advance(self) -> None:
        what = self.what
        if self._stage == "lead":
            lead = self._take(LEAD_SIZE)
            if lead[:4] != LEAD_MAGIC:
                raise RpmSignatureError(f"{what}: not an RPM file (bad lead magic)")
            if struct.unpack(">H", lead[78:80])[0] != SIGTYPE_HEADERSIG:
                raise RpmSignatureError(f"{what}: unsupported RPM signature type in the lead")
            self._stage, self._need = "sig-preamble", 16
        elif self._stage == "sig-preamble":
            size = _header_size(bytes(self._buf[:16]), what, "signature",
                                (MAX_SIG_ENTRIES, MAX_SIG_DATA))
            self._stage, self._need = "sig", size + (-size % 8)  # padded to 8 bytes
        elif self._stage == "sig":
            raw = self._take(self._need)
            count = struct.unpack(">I", raw[8:12])[0]
            size = 16 + 16 * count + struct.unpack(">I", raw[12:16])[0]
            self._sig = _parse_header(raw[:size], what, "signature")
            self._stage, self._need = "header-preamble", 16
        elif self._stage == "header-preamble":
            self._need = _header_size(bytes(self._buf[:16]), what, "main", (MAX_ENTRIES, MAX_DATA))
            self._stage = "header"
        elif self._stage == "header":
            raw = self._take(self._need)
            self._header = _parse_header(raw, what, "main")
            self._start_checks(raw)
            self._signed_size = len(raw)
            self._stage = "payload"

    def _start_checks(self, header: bytes) -> None:
        assert self._sig is not None and self._header is not None
        for tag, kind in ((SIG_RSA, "header"), (SIG_PGP, "header+payload")):
            packet = self._sig.bin(tag)
            if packet is None:
                continue
            try:
                sig = parse_signature(packet, f"{self.what}: {kind} signature")
                hasher = sig.hasher()
            except OpenPGPError as err:
                raise RpmSignatureError(err.message) from None
            hasher.update(header)
            self._checks.append(_Check(kind, sig, hasher))
        digest = self._header.strings(TAG_PAYLOADDIGEST)
        algo = self._header.int32(TAG_PAYLOADDIGESTALGO)
        # The header+payload signature already vouches for every payload byte; the payload
        # digest is needed (and hashed) only when the header signature stands alone.
        covered = any(c.kind == "header+payload" for c in self._checks)
        if digest and algo in HASHES and not covered:
            self._payload_hash = hashlib.new(HASHES[algo][0])

    def finish(self) -> RpmSignatures:
        """Check everything once the whole file has been fed; raise RpmSignatureError."""
        what = self.what
        if self._stage != "payload" or self._sig is None or self._header is None:
            raise RpmSignatureError(f"{what}: truncated RPM (ends inside its headers)")
        sig, header = self._sig, self._header
        self._check_digests(sig, header)
        if not self._checks:
            dsa = SIG_DSA in sig.entries or SIG_GPG in sig.entries
            state = "only DSA-signed, which kubecrate does not verify" if dsa else "unsigned"
            raise RpmSignatureError(
                f"{what}: {state} (no RSA header or header+payload signature)",
                hint="every RPM in a bundle must carry its vendor's signature; gpgcheck stays on")
        try:
            keys = [self.keyring.verify(c.sig, c.hasher, f"{what}: {c.kind} signature")
                    for c in self._checks]
        except SignatureError as err:
            raise RpmSignatureError(err.message, err.hint) from None
        kinds = tuple(c.kind for c in self._checks)
        if "header+payload" not in kinds and self._payload_hash is None:
            raise RpmSignatureError(
                f"{what}: only the header is signed and the header carries no payload digest, "
                "so nothing vouches for the payload")
        try:
            name, version, release = (header.strings(t)[:1] or ["?"] for t in
                                      (TAG_NAME, TAG_VERSION, TAG_RELEASE))
            arch = header.strings(TAG_ARCH)[:1] or ["?"]
        except ValueError as err:
            raise RpmSignatureError(f"{what}: malformed main header ({err})") from None
        nevra = f"{name[0]}-{version[0]}-{release[0]}.{arch[0]}"
        return RpmSignatures(nevra, tuple(dict.fromkeys(k.fingerprint for k in keys)), kinds)

    def _check_digests(self, sig: _Header, header: _Header) -> None:
        """The unsigned sanity checks rpm -K also makes: the size and digests in the signature
        header, and the payload digest that the signed header promises."""
        what = self.what
        size = sig.int32(SIG_SIZE)
        if size is not None and size != self._signed_size:
            raise RpmSignatureError(f"{what}: header+payload is {self._signed_size} bytes, the "
                                    f"signature header says {size} (truncated or padded file)")
        try:
            sha256 = sig.strings(SIG_SHA256)
            payload = header.strings(TAG_PAYLOADDIGEST)
        except ValueError as err:
            raise RpmSignatureError(f"{what}: malformed header ({err})") from None
        if sha256 and hashlib.sha256(header.raw).hexdigest() != sha256[0].lower():
            raise RpmSignatureError(f"{what}: header SHA256 digest mismatch (damaged file)")
        if self._payload_hash is not None and self._payload_hash.hexdigest() != payload[0].lower():
            raise RpmSignatureError(f"{what}: payload digest mismatch (damaged file)")


def verify_rpm(path: Union[str, Path], keyring: Keyring, what: Optional[str] = None,
               chunk: int = 1 << 20) -> RpmSignatures:
    """Verify an RPM file on disk; `what` defaults to its file name."""
    path = Path(path)
    verifier = RpmVerifier(keyring, what or path.name)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            verifier.update(block)
    return verifier.finish()


def signature_hashes(path: Union[str, Path], what: Optional[str] = None
                     ) -> List[Tuple[str, str, str]]:
    """(kind, hash name, issuer key id) of every OpenPGP signature in an RPM's signature
    header ("header", "header+payload"), read from the lead and that header alone: what a
    host's crypto policy judges. Verification is verify_rpm's job, not this one's."""
    path = Path(path)
    what = what or path.name
    with open(path, "rb") as handle:
        lead = handle.read(LEAD_SIZE)
        if len(lead) < LEAD_SIZE or lead[:4] != LEAD_MAGIC:
            raise RpmSignatureError(f"{what}: not an RPM file (bad lead magic)")
        preamble = handle.read(16)
        size = _header_size(preamble, what, "signature", (MAX_SIG_ENTRIES, MAX_SIG_DATA))
        raw = preamble + handle.read(size - 16)
    if len(raw) < size:
        raise RpmSignatureError(f"{what}: truncated RPM (ends inside its signature header)")
    sig = _parse_header(raw, what, "signature")
    found = []
    for tag, kind in ((SIG_RSA, "header"), (SIG_PGP, "header+payload")):
        packet = sig.bin(tag)
        if packet is None:
            continue
        try:
            parsed = parse_signature(packet, f"{what}: {kind} signature")
        except OpenPGPError as err:
            raise RpmSignatureError(err.message) from None
        found.append((kind, parsed.hash_name, parsed.issuer or "unknown"))
    return found
