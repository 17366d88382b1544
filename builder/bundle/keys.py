"""Ed25519 signing keys in minisign's file formats
(docs/bundle-format.md, `X.tar.minisig`; installer/format/minisig.py reads them).

`kubecrate keygen` writes an unencrypted key exactly as `minisign -G -W` does; existing minisign
keys, passphrase-protected or not, are read too.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from builder.errors import SigningKeyError
from installer.format.errors import VerificationError
from installer.format.minisig import PublicKey, b64decode_strict

KDF_NONE = b"\0\0"
KDF_SCRYPT = b"Sc"
CHECKSUM_BLAKE2B = b"B2"
SECRET_KEY_SIZE = 158
SECRET_KEY_COMMENT = "minisign encrypted secret key"  # what minisign writes, even with -W
PUBLIC_NAME = "kubecrate.pub"
SECRET_NAME = "kubecrate.key"


class SecretKey(NamedTuple):
    key_id: bytes  # 8 bytes
    seed: bytes  # 32-byte Ed25519 private seed
    public: bytes  # 32-byte Ed25519 public key

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.key_id, self.public)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def generate() -> SecretKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    seed = private.private_bytes_raw()
    return SecretKey(os.urandom(8), seed, public)


def secret_key_text(key: SecretKey) -> str:
    """The unencrypted form `minisign -G -W` writes: no KDF, zero salt and limits, and (as
    minisign 0.11 does) a zero checksum."""
    blob = (b"Ed" + KDF_NONE + CHECKSUM_BLAKE2B + bytes(32) + bytes(8) + bytes(8)
            + key.key_id + key.seed + key.public + bytes(32))
    assert len(blob) == SECRET_KEY_SIZE
    return "untrusted comment: {}\n{}\n".format(
        SECRET_KEY_COMMENT, base64.b64encode(blob).decode("ascii"))


def write_keypair(out_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Create kubecrate.key (0600) and kubecrate.pub in out_dir; refuses to overwrite unless
    `force`, because losing a signing key orphans every installer that embeds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = out_dir / SECRET_NAME, out_dir / PUBLIC_NAME
    if not force:
        for path in (secret_path, public_path):
            if path.exists():
                raise SigningKeyError(f"{path} already exists",
                                      hint="choose another --out folder, or pass --force")
    key = generate()
    _write_atomic(secret_path, secret_key_text(key).encode(), 0o600)
    _write_atomic(public_path, key.public_key.to_file_text().encode(), 0o644)
    return secret_path, public_path


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _scrypt_params(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(N, r, p) for libsodium's crypto_pwhash_scryptsalsa208sha256 ops/mem limits, which
    minisign stores in the key instead of scrypt's own parameters."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        max_n = opslimit // (r * 4)
    else:
        max_n = memlimit // (r * 128)
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    if opslimit >= memlimit // 32:
        max_rp = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF)
        p = max_rp // r
    return 1 << n_log2, r, p


def parse_secret_key(text: str, source: str,
                     passphrase: Optional[Callable[[], str]] = None) -> SecretKey:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 2 or not lines[0].startswith("untrusted comment:"):
        raise SigningKeyError(f"{source}: not a minisign secret key (expected 2 lines)")
    try:
        blob = b64decode_strict(lines[1], source)
    except VerificationError as err:
        raise SigningKeyError(err.message) from None
    if len(blob) != SECRET_KEY_SIZE or blob[:2] != b"Ed":
        raise SigningKeyError(f"{source}: not a minisign Ed25519 secret key")
    kdf, checksum_alg = blob[2:4], blob[4:6]
    salt, ops, mem = blob[6:38], blob[38:46], blob[46:54]
    sealed = blob[54:]
    if checksum_alg != CHECKSUM_BLAKE2B:
        raise SigningKeyError(f"{source}: unsupported checksum algorithm {checksum_alg!r}")
    if kdf == KDF_SCRYPT:
        if passphrase is None:
            raise SigningKeyError(f"{source} is passphrase-protected and no passphrase was given")
        n, r, p = _scrypt_params(int.from_bytes(ops, "little"), int.from_bytes(mem, "little"))
        stream = hashlib.scrypt(passphrase().encode("utf-8"), salt=salt, n=n, r=r, p=p,
                                maxmem=min(129 * r * n + (64 << 20), 2**31 - 1), dklen=len(sealed))
        sealed = bytes(a ^ b for a, b in zip(sealed, stream))
    elif kdf != KDF_NONE:
        raise SigningKeyError(f"{source}: unsupported key derivation {kdf!r}")
    key_id, secret, checksum = sealed[:8], sealed[8:72], sealed[72:104]
    expected = hashlib.blake2b(b"Ed" + key_id + secret, digest_size=32).digest()
    if checksum != expected and not (kdf == KDF_NONE and checksum == bytes(32)):
        if kdf == KDF_SCRYPT:
            raise SigningKeyError(f"{source}: wrong passphrase")
        raise SigningKeyError(f"{source}: checksum mismatch (damaged key file)")
    key = SecretKey(key_id, secret[:32], secret[32:])
    derived = Ed25519PrivateKey.from_private_bytes(key.seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    if derived != key.public:
        raise SigningKeyError(f"{source}: secret and public halves do not match")
    return key


def load_secret_key(path: Path, passphrase: Optional[Callable[[], str]] = None) -> SecretKey:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SigningKeyError(f"cannot read secret key {path}: {err}") from None
    return parse_secret_key(text, str(path), passphrase)
