"""builder.rpm.openpgp on hand-built packets (RFC 4880): armor checksums, v4 fingerprints, v3
signatures as CentOS 7's own RPMs carry them, and errors that name what is wrong. The real
gpg/rpm agreement is checked in tests/integration/builder/rpm/test_rpmsig_rpm.py."""

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from builder.rpm.openpgp import (
    KeyPinError,
    Keyring,
    OpenPGPError,
    SignatureError,
    _crc24,
    parse_signature,
    pinned_key,
    read_keys,
)


def mpi(value: int) -> bytes:
    return struct.pack(">H", value.bit_length()) + value.to_bytes((value.bit_length() + 7) // 8,
                                                                  "big")


def packet(tag: int, body: bytes) -> bytes:
    assert len(body) < 8384
    if len(body) < 192:
        return bytes([0xC0 | tag, len(body)]) + body
    length = len(body) - 192
    return bytes([0xC0 | tag, (length >> 8) + 192, length & 0xFF]) + body


@pytest.fixture(scope="module")
def rsa_key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    body = b"\x04" + struct.pack(">I", 1577836800) + b"\x01" + mpi(numbers.n) + mpi(numbers.e)
    fpr = hashlib.sha1(b"\x99" + struct.pack(">H", len(body)) + body).hexdigest().upper()
    raw = packet(6, body) + packet(13, b"Vendor <v@example.invalid>")
    return private, raw, fpr


def armor(raw: bytes) -> bytes:
    text = base64.b64encode(raw).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n" + "\n".join(lines)
            + "\n=" + base64.b64encode(_crc24(raw)).decode()
            + "\n-----END PGP PUBLIC KEY BLOCK-----\n").encode()


def test_fingerprint_key_id_and_user_id(rsa_key):
    _private, raw, fpr = rsa_key
    [key] = read_keys(armor(raw))
    assert key.fingerprint == fpr and key.key_id == fpr[-16:]
    assert key.user_ids == ("Vendor <v@example.invalid>",)
    assert read_keys(raw) == [key]  # binary keys read the same


def test_crc24_of_rfc_example():
    assert _crc24(b"") == bytes.fromhex("b704ce")


def test_damaged_armor_is_refused(rsa_key):
    _private, raw, _fpr = rsa_key
    text = armor(raw)
    at = text.index(b"\n\n") + 10
    damaged = text[:at] + (b"A" if text[at:at + 1] != b"A" else b"B") + text[at + 1:]
    with pytest.raises(OpenPGPError, match="armor checksum"):
        read_keys(damaged, "RPM-GPG-KEY-test")


def test_pin_mismatch_names_everything(rsa_key):
    _private, raw, fpr = rsa_key
    with pytest.raises(KeyPinError) as err:
        pinned_key(armor(raw), "0" * 40, repo="base", url="https://vault/RPM-GPG-KEY-CentOS-7")
    assert all(s in err.value.message for s in ("base", "https://vault/RPM-GPG-KEY-CentOS-7",
                                                 "0" * 40, fpr))
    assert pinned_key(armor(raw), " ".join(fpr[i:i + 4] for i in range(0, 40, 4)),
                      repo="base", url="u").fingerprint == fpr


def v3_signature(private, key_id: bytes, data: bytes, algo=hashes.SHA256, hash_id=8) -> bytes:
    hashed = b"\x00" + struct.pack(">I", 1600000000)  # type 0 (binary), creation time
    h = hashlib.new(algo.name)
    h.update(data + hashed)
    value = private.sign(data + hashed, padding.PKCS1v15(), algo())
    body = (b"\x03\x05" + hashed + key_id + b"\x01" + bytes([hash_id]) + h.digest()[:2]
            + mpi(int.from_bytes(value, "big")))
    return bytes([0x80 | (2 << 2) | 1]) + struct.pack(">H", len(body)) + body  # old format


def test_v3_signatures_like_centos7_packages_verify(rsa_key):
    private, raw, fpr = rsa_key
    ring = Keyring(read_keys(raw))
    data = b"the main header bytes"
    sig = parse_signature(v3_signature(private, bytes.fromhex(fpr[-16:]), data))
    assert (sig.version, sig.issuer, sig.hash_name) == (3, fpr[-16:], "SHA256")
    h = sig.hasher()
    h.update(data)
    assert ring.verify(sig, h, "x.rpm").fingerprint == fpr
    h = sig.hasher()
    h.update(data + b"!")
    with pytest.raises(SignatureError, match="x.rpm: BAD signature"):
        ring.verify(sig, h, "x.rpm")


def test_unknown_issuer_is_named(rsa_key):
    private, raw, _fpr = rsa_key
    sig = parse_signature(v3_signature(private, b"\x01" * 8, b"data"))
    with pytest.raises(SignatureError, match="key id 0101010101010101, which is not trusted"):
        Keyring(read_keys(raw)).verify(sig, sig.hasher(), "y.rpm")


def test_non_rsa_and_v3_keys_are_refused_clearly():
    dsa_body = b"\x04" + struct.pack(">I", 0) + b"\x11" + mpi(5) * 4
    with pytest.raises(OpenPGPError, match="algorithm 17 is not RSA"):
        read_keys(packet(6, dsa_body))
    with pytest.raises(OpenPGPError, match="only v4 public keys"):
        read_keys(packet(6, b"\x03" + b"\0" * 10))
