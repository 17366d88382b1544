"""The slice of OpenPGP (RFC 4880) that RPM signatures need: ASCII-armored RSA public keys,
their v4 fingerprints, signature packets (v3 and v4), and RSA PKCS#1 v1.5 verification.

    keys = read_keys(armored_bytes, "https://vault.centos.org/RPM-GPG-KEY-CentOS-7")
    key = pinned_key(armored_bytes, "24C6A8A7F4A80EB5...", repo="base", url=url)
    keyring = Keyring([key])
    sig = parse_signature(packet_bytes)
    h = sig.hasher(); h.update(signed_data); keyring.verify(sig, h, "x.rpm")

A fingerprint pin is the trust root: a subkey counts only with a valid binding signature by its
primary key, so nobody can append their own subkey to a pinned key file.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from builder.errors import BuildError, VerificationError

__all__ = ["Keyring", "KeyPinError", "OpenPGPError", "PublicKey", "Signature", "SignatureError",
           "dearmor", "hash_name", "parse_signature", "pinned_key", "read_keys",
           "self_signature_hashes"]

# RFC 4880 9.4 hash algorithm ids; MD5 (1) is deliberately absent.
HASHES = {2: ("sha1", hashes.SHA1), 8: ("sha256", hashes.SHA256), 9: ("sha384", hashes.SHA384),
          10: ("sha512", hashes.SHA512), 11: ("sha224", hashes.SHA224)}
# RFC 4880 9.4 names of every hash id, for reporting (and refusing) weak ones.
HASH_NAMES = {1: "MD5", 2: "SHA1", 3: "RIPEMD160", 8: "SHA256", 9: "SHA384", 10: "SHA512",
              11: "SHA224"}
RSA_ALGOS = (1, 3)  # RSA (encrypt or sign), RSA sign-only; 2 is encrypt-only
TAG_SIGNATURE, TAG_PUBLIC_KEY, TAG_USER_ID, TAG_PUBLIC_SUBKEY = 2, 6, 13, 14
SUBKEY_BINDING = 0x18
CERTIFICATIONS = (0x10, 0x11, 0x12, 0x13)  # a user id bound to its key
DIRECT_KEY = 0x1F
_ARMOR = re.compile(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY "
                    rb"BLOCK-----", re.S)


class OpenPGPError(BuildError):
    """A key or signature is not well-formed OpenPGP, or uses what kubecrate does not support."""


class KeyPinError(VerificationError):
    """A fetched vendor key does not have the fingerprint pinned in the preset or recipe."""


class SignatureError(VerificationError):
    """A signature does not verify, or was made by a key that is not trusted."""


class PublicKey(NamedTuple):
    """A v4 RSA key: `fingerprint` is 40 upper-case hex digits; `signing` holds the primary's
    and its bound subkeys' (key id, fingerprint, n, e)."""

    fingerprint: str
    created: int
    user_ids: Tuple[str, ...]
    signing: Tuple[Tuple[str, str, int, int], ...]

    @property
    def key_id(self) -> str:
        return self.fingerprint[-16:]

    @property
    def name(self) -> str:
        """The first user id, or the fingerprint when there is none."""
        return self.user_ids[0] if self.user_ids else self.fingerprint

    def __repr__(self) -> str:
        return f"<PublicKey {self.fingerprint} {self.name!r}>"


class Signature(NamedTuple):
    """A signature packet: `trailer` is what goes into the hash after the signed data."""

    version: int
    sig_type: int
    pubkey_algo: int
    hash_algo: int
    trailer: bytes
    left16: bytes
    value: bytes  # the RSA signature, unpadded as the MPI stores it
    issuer: Optional[str]  # key id, 16 upper-case hex digits
    issuer_fingerprint: Optional[str]
    created: Optional[int]

    def hasher(self) -> Any:
        """A fresh hashlib object for this signature's hash algorithm."""
        if self.hash_algo not in HASHES:
            raise OpenPGPError(f"unsupported signature hash algorithm {self.hash_algo}")
        return hashlib.new(HASHES[self.hash_algo][0])

    @property
    def hash_name(self) -> str:
        return hash_name(self.hash_algo)


def hash_name(algo: int) -> str:
    """"SHA256", "SHA1", ... for an RFC 4880 hash id."""
    return HASH_NAMES.get(algo, f"HASH#{algo}")


def dearmor(data: bytes, what: str = "key") -> List[bytes]:
    """The binary packets of every armored public key block in `data` (binary input is returned
    as is); a wrong CRC-24 is an error (RFC 4880 6.1)."""
    if not data.lstrip().startswith(b"-----"):
        return [data]
    blocks = []
    for match in _ARMOR.finditer(data):
        lines = match.group(1).replace(b"\r", b"").split(b"\n")
        try:
            body = lines[lines.index(b"") + 1:]  # armor headers end with an empty line
        except ValueError:
            raise OpenPGPError(f"{what}: armor has no blank line after its headers") from None
        checksum = None
        if body and body[-1] == b"":
            body = body[:-1]
        if body and body[-1].startswith(b"="):
            checksum = body.pop()[1:]
        try:
            raw = base64.b64decode(b"".join(body), validate=True)
            if checksum is not None and base64.b64decode(checksum) != _crc24(raw):
                raise OpenPGPError(f"{what}: armor checksum does not match (damaged key file)")
        except ValueError:
            raise OpenPGPError(f"{what}: armor is not valid base64") from None
        blocks.append(raw)
    if not blocks:
        raise OpenPGPError(f"{what}: no PGP PUBLIC KEY BLOCK found")
    return blocks


def _crc24(data: bytes) -> bytes:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return (crc & 0xFFFFFF).to_bytes(3, "big")


def packets(data: bytes, what: str) -> Iterator[Tuple[int, bytes]]:
    """(tag, body) of every packet, old or new format (RFC 4880 4.2); no partial lengths."""
    pos = 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            raise OpenPGPError(f"{what}: not an OpenPGP packet at byte {pos}")
        if first & 0x40:
            tag, pos = first & 0x3F, pos + 1
            if pos >= len(data):
                raise OpenPGPError(f"{what}: truncated packet header")
            octet = data[pos]
            if octet < 192:
                length, pos = octet, pos + 1
            elif octet < 224:
                length, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif octet == 255:
                length, pos = struct.unpack(">I", data[pos + 1:pos + 5])[0], pos + 5
            else:
                raise OpenPGPError(f"{what}: partial body lengths are not supported")
        else:
            tag, kind, pos = (first >> 2) & 0x0F, first & 3, pos + 1
            if kind == 3:
                length = len(data) - pos
            else:
                size = (1, 2, 4)[kind]
                length, pos = int.from_bytes(data[pos:pos + size], "big"), pos + size
        if pos + length > len(data):
            raise OpenPGPError(f"{what}: truncated packet (tag {tag})")
        yield tag, data[pos:pos + length]
        pos += length


def _mpi(body: bytes, pos: int, what: str) -> Tuple[int, int]:
    if pos + 2 > len(body):
        raise OpenPGPError(f"{what}: truncated MPI")
    bits = struct.unpack(">H", body[pos:pos + 2])[0]
    end = pos + 2 + (bits + 7) // 8
    if end > len(body):
        raise OpenPGPError(f"{what}: truncated MPI")
    return int.from_bytes(body[pos + 2:end], "big"), end


def _key_material(body: bytes, what: str) -> Tuple[str, int, int, int]:
    """(fingerprint, created, n, e) of a v4 public key or subkey packet body."""
    if not body or body[0] != 4:
        raise OpenPGPError(f"{what}: only v4 public keys are supported "
                           f"(found v{body[0] if body else '?'})")
    if len(body) < 6:
        raise OpenPGPError(f"{what}: truncated public key packet")
    created, algo = struct.unpack(">I", body[1:5])[0], body[5]
    if algo not in RSA_ALGOS:
        raise OpenPGPError(f"{what}: public key algorithm {algo} is not RSA; "
                           "kubecrate verifies RSA keys only")
    n, pos = _mpi(body, 6, what)
    e, _ = _mpi(body, pos, what)
    return _fingerprint(body), created, n, e


def _fingerprint(body: bytes) -> str:
    # RFC 4880 12.2: SHA-1 over 0x99, the two-octet length, and the packet body.
    return hashlib.sha1(b"\x99" + struct.pack(">H", len(body)) + body).hexdigest().upper()


def parse_signature(packet: bytes, what: str = "signature") -> Signature:
    """A signature packet (with its packet header), v3 or v4 (RFC 4880 5.2)."""
    found = list(packets(packet, what))
    if len(found) != 1 or found[0][0] != TAG_SIGNATURE:
        raise OpenPGPError(f"{what}: expected exactly one signature packet")
    return _signature(found[0][1], what)


def _signature(body: bytes, what: str) -> Signature:
    if not body:
        raise OpenPGPError(f"{what}: empty signature packet")
    if body[0] == 3:
        # v3: hashed material is the type and creation time (5 octets), no trailer framing.
        if len(body) < 19 or body[1] != 5:
            raise OpenPGPError(f"{what}: malformed v3 signature")
        sig_type, created = body[2], struct.unpack(">I", body[3:7])[0]
        issuer: Optional[str] = body[7:15].hex().upper()
        algo, hash_algo, left16 = body[15], body[16], body[17:19]
        value_at, trailer, issuer_fpr = 19, body[2:7], None
    elif body[0] == 4:
        if len(body) < 6:
            raise OpenPGPError(f"{what}: truncated v4 signature")
        sig_type, algo, hash_algo = body[1], body[2], body[3]
        hashed_len = struct.unpack(">H", body[4:6])[0]
        hashed_end = 6 + hashed_len
        if hashed_end + 2 > len(body):
            raise OpenPGPError(f"{what}: truncated v4 signature")
        unhashed_len = struct.unpack(">H", body[hashed_end:hashed_end + 2])[0]
        unhashed_end = hashed_end + 2 + unhashed_len
        if unhashed_end + 2 > len(body):
            raise OpenPGPError(f"{what}: truncated v4 signature")
        hashed = dict(_subpackets(body[6:hashed_end], what))
        unhashed = dict(_subpackets(body[hashed_end + 2:unhashed_end], what))
        created = int.from_bytes(hashed[2], "big") if len(hashed.get(2, b"")) == 4 else None
        # Issuer (16) and issuer fingerprint (33) may sit in either area: the signature
        # proves which key made it, the subpacket only says where to look.
        issuer_raw = hashed.get(16) or unhashed.get(16)
        fpr_raw = hashed.get(33) or unhashed.get(33)
        issuer_fpr = fpr_raw[1:].hex().upper() if fpr_raw and fpr_raw[0] == 4 else None
        issuer = issuer_raw.hex().upper() if issuer_raw and len(issuer_raw) == 8 else (
            issuer_fpr[-16:] if issuer_fpr else None)
        left16, value_at = body[unhashed_end:unhashed_end + 2], unhashed_end + 2
        # RFC 4880 5.2.4: version..hashed subpackets, then 0x04 0xFF and their length.
        trailer = body[:hashed_end] + b"\x04\xff" + struct.pack(">I", hashed_end)
    else:
        raise OpenPGPError(f"{what}: signature version {body[0]} is not supported")
    if algo not in RSA_ALGOS:
        raise OpenPGPError(f"{what}: signature algorithm {algo} is not RSA; "
                           "kubecrate verifies RSA signatures only")
    value, _ = _mpi(body, value_at, what)
    return Signature(body[0], sig_type, algo, hash_algo, trailer, left16,
                     value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"), issuer,
                     issuer_fpr, created)


def _subpackets(data: bytes, what: str) -> Iterator[Tuple[int, bytes]]:
    pos = 0
    while pos < len(data):
        octet = data[pos]
        if octet < 192:
            length, pos = octet, pos + 1
        elif octet < 255:
            length, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
        else:
            length, pos = struct.unpack(">I", data[pos + 1:pos + 5])[0], pos + 5
        if length == 0 or pos + length > len(data):
            raise OpenPGPError(f"{what}: malformed signature subpacket")
        yield data[pos] & 0x7F, data[pos + 1:pos + length]
        pos += length


def _rsa_verify(n: int, e: int, sig: Signature, digest: bytes) -> bool:
    if sig.hash_algo not in HASHES:
        return False
    key = rsa.RSAPublicNumbers(e, n).public_key()
    # The MPI drops leading zero octets; PKCS#1 wants the signature as long as the modulus.
    value = sig.value.rjust((n.bit_length() + 7) // 8, b"\0")
    try:
        key.verify(value, digest, padding.PKCS1v15(), utils.Prehashed(HASHES[sig.hash_algo][1]()))
    except (InvalidSignature, ValueError):
        return False
    return True


def read_keys(data: bytes, what: str = "key") -> List[PublicKey]:
    """Every primary key in an armored (or binary) key file, with its user ids and its
    subkeys whose binding signatures verify."""
    keys: List[PublicKey] = []
    for block in dearmor(data, what):
        current: Optional[Dict[str, Any]] = None
        pending_sub: Optional[Tuple[bytes, Tuple[str, int, int, int]]] = None
        for tag, body in packets(block, what):
            if tag == TAG_PUBLIC_KEY:
                if current:
                    keys.append(_finish(current))
                fpr, created, n, e = _key_material(body, what)
                current = {"body": body, "fpr": fpr, "created": created, "uids": [],
                           "signing": [(fpr[-16:], fpr, n, e)]}
                pending_sub = None
            elif current is None:
                raise OpenPGPError(f"{what}: a packet (tag {tag}) before any public key")
            elif tag == TAG_USER_ID:
                current["uids"].append(body.decode("utf-8", "replace"))
            elif tag == TAG_PUBLIC_SUBKEY:
                try:
                    pending_sub = (body, _key_material(body, what))
                except OpenPGPError:
                    pending_sub = None  # e.g. an ECDH encryption subkey: not for RPMs
            elif tag == TAG_SIGNATURE and pending_sub is not None:
                if _binds(current, pending_sub, body, what):
                    fpr, _created, n, e = pending_sub[1]
                    current["signing"].append((fpr[-16:], fpr, n, e))
                    pending_sub = None
        if current:
            keys.append(_finish(current))
    if not keys:
        raise OpenPGPError(f"{what}: no public key in the file")
    return keys


def self_signature_hashes(data: bytes, what: str = "key") -> List[Tuple[str, str, str]]:
    """(primary fingerprint, what is bound, hash name) for every self-signature of every key in
    a key file: user id certifications, direct-key signatures and subkey bindings made by the
    primary key. A host's crypto policy judges a key by these (RFC 4880 5.2.1)."""
    found: List[Tuple[str, str, str]] = []
    for block in dearmor(data, what):
        fpr, bound = "", ""
        for tag, body in packets(block, what):
            if tag == TAG_PUBLIC_KEY:
                fpr, bound = _fingerprint(body), "the key itself"
            elif tag == TAG_USER_ID:
                bound = "user id " + repr(body.decode("utf-8", "replace"))
            elif tag == TAG_PUBLIC_SUBKEY:
                bound = "subkey " + _fingerprint(body)
            elif tag == TAG_SIGNATURE and fpr:
                try:
                    sig = _signature(body, what)
                except OpenPGPError:
                    continue  # not RSA: nothing RPM verification relies on
                if sig.issuer != fpr[-16:]:
                    continue  # a third party's certification
                if sig.sig_type in CERTIFICATIONS + (SUBKEY_BINDING, DIRECT_KEY):
                    found.append((fpr, bound, sig.hash_name))
    return found


def _binds(primary: Dict[str, Any], sub: Tuple[bytes, Any], body: bytes, what: str) -> bool:
    try:
        sig = _signature(body, what)
    except OpenPGPError:
        return False
    if sig.sig_type != SUBKEY_BINDING or sig.issuer != primary["fpr"][-16:]:
        return False
    h = sig.hasher()
    for key_body in (primary["body"], sub[0]):
        h.update(b"\x99" + struct.pack(">H", len(key_body)) + key_body)
    h.update(sig.trailer)
    digest = h.digest()
    _, _, n, e = primary["signing"][0]
    return digest[:2] == sig.left16 and _rsa_verify(n, e, sig, digest)


def _finish(current: Dict[str, Any]) -> PublicKey:
    return PublicKey(current["fpr"], current["created"], tuple(current["uids"]),
                     tuple(current["signing"]))


def pinned_key(data: bytes, fingerprint: str, *, repo: str, url: str) -> PublicKey:
    """The key in `data` whose fingerprint is the pinned one; anything else is a KeyPinError
    naming the repo, the URL, the expected and the actual fingerprint(s)."""
    expected = re.sub(r"\s+", "", fingerprint).upper()
    keys = read_keys(data, f"{repo}: {url}")
    for key in keys:
        if key.fingerprint == expected:
            return key
    actual = ", ".join(k.fingerprint for k in keys)
    raise KeyPinError(
        f"{repo}: the GPG key at {url} has fingerprint {actual}, "
        f"but {expected} is pinned",
        hint="the mirror serves another key than the vendor's; if the vendor rotated its key, "
             "check the new fingerprint out of band and update the pin")


class Keyring:
    """Trusted signing keys by key id: the pinned primaries and their bound subkeys."""

    def __init__(self, keys: Iterable[PublicKey] = ()):
        self.keys: Tuple[PublicKey, ...] = ()
        self._by_id: Dict[str, Tuple[PublicKey, str, int, int]] = {}
        for key in keys:
            self.add(key)

    def add(self, key: PublicKey) -> None:
        if key.fingerprint in {k.fingerprint for k in self.keys}:
            return
        self.keys += (key,)
        for key_id, fpr, n, e in key.signing:
            self._by_id[key_id] = (key, fpr, n, e)

    def __contains__(self, key_id: str) -> bool:
        return key_id.upper() in self._by_id

    def describe(self) -> str:
        return ", ".join(f"{k.key_id} ({k.name})" for k in self.keys) or "none"

    def verify(self, sig: Signature, hasher: Any, what: str) -> PublicKey:
        """Finish `hasher` (already fed the signed data) with the signature's trailer and check
        it; return the trusted primary key that made it, or raise SignatureError."""
        entry = self._by_id.get(sig.issuer or "")
        if entry is None:
            raise SignatureError(
                f"{what}: signed with key id {sig.issuer or 'unknown'}, which is not trusted "
                f"(trusted: {self.describe()})",
                hint="the package is not from the vendor whose key is pinned for its repo")
        key, fpr, n, e = entry
        if sig.issuer_fingerprint and sig.issuer_fingerprint != fpr:
            raise SignatureError(f"{what}: issuer fingerprint {sig.issuer_fingerprint} does not "
                                 f"match trusted key {fpr}")
        hasher.update(sig.trailer)
        digest = hasher.digest()
        if digest[:2] != sig.left16 or not _rsa_verify(n, e, sig, digest):
            raise SignatureError(
                f"{what}: BAD signature (V{sig.version} RSA/{sig.hash_name}, key id {sig.issuer})",
                hint="the file was altered after signing, or was signed by another key "
                     "claiming the same key id")
        return key
