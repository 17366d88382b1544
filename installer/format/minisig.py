"""minisign key and signature formats (docs/bundle-format.md, `X.tar.minisig`), verified in
pure Python.

Only verification lives here, because hosts run it on Python 3.6; the builder signs with
`cryptography` in builder/bundle/sign.py and imports the parsing from here.
"""

import base64
import binascii
import datetime
import errno
import hashlib
import json
import logging
from typing import Any, Callable, NamedTuple, Optional, Set, Tuple, Union

from ecdsa import BadSignatureError, Ed25519, VerifyingKey  # pure Python, supports 3.6

from installer.format.errors import VerificationError

ALG_PREHASHED = b"ED"  # Ed25519 over BLAKE2b-512 of the file (minisign >= 0.8 default)
ALG_LEGACY = b"Ed"  # Ed25519 over the raw file bytes (minisign -l)
CHUNK = 1 << 20
log = logging.getLogger(__name__)
_WARNED = set()  # type: set  # (key id, what): warn once per run about a retiring key


def b64decode_strict(text: str, what: str) -> bytes:
    """Decode base64, refusing anything that does not re-encode to the same text: a
    non-canonical encoding would let two different files carry the same key or signature."""
    text = text.strip()
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VerificationError("{}: not valid base64".format(what))
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError("{}: base64 is not canonical".format(what))
    return raw


def key_id_hex(key_id: bytes) -> str:
    """The id as minisign prints it: little-endian integer, upper-case hex."""
    return binascii.hexlify(key_id[::-1]).decode("ascii").upper()


class PublicKey(NamedTuple):
    key_id: bytes
    key: bytes  # 32-byte Ed25519 public key

    @property
    def id_hex(self) -> str:
        return key_id_hex(self.key_id)

    def to_file_text(self) -> str:
        blob = base64.b64encode(b"Ed" + self.key_id + self.key).decode("ascii")
        return "untrusted comment: minisign public key {}\n{}\n".format(self.id_hex, blob)


def parse_public_key(text: str, source: str = "public key") -> PublicKey:
    """Parse a minisign public key: a .pub file's text, or the bare base64 line (`-P`)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("untrusted comment:"):
        lines = lines[1:]
    if len(lines) != 1:
        raise VerificationError("{}: expected one base64 line after the comment".format(source))
    raw = b64decode_strict(lines[0], source)
    if len(raw) != 42 or raw[:2] != b"Ed":
        raise VerificationError("{}: not a minisign Ed25519 public key".format(source))
    return PublicKey(raw[2:10], raw[10:42])


def load_public_key(path: str) -> PublicKey:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read(4096)
    except OSError as err:
        raise VerificationError("cannot read public key {}: {}".format(path, err.strerror))
    except UnicodeDecodeError:
        raise VerificationError("{}: not a minisign public key (not text)".format(path))
    return parse_public_key(text, path)


class Signature(NamedTuple):
    algorithm: bytes
    key_id: bytes
    signature: bytes  # 64 bytes over the file (or its BLAKE2b-512 digest)
    trusted_comment: str
    global_signature: bytes  # 64 bytes over signature + trusted comment
    untrusted_comment: str

    @property
    def prehashed(self) -> bool:
        return self.algorithm == ALG_PREHASHED

    def comment_fields(self) -> dict:
        """The trusted comment's tab-separated `key:value` fields (minisign's own convention)."""
        fields = {}
        for part in self.trusted_comment.split("\t"):
            key, sep, value = part.partition(":")
            if sep:
                fields[key] = value
        return fields

    def to_file_text(self) -> str:
        return "untrusted comment: {}\n{}\ntrusted comment: {}\n{}\n".format(
            self.untrusted_comment,
            base64.b64encode(self.algorithm + self.key_id + self.signature).decode("ascii"),
            self.trusted_comment,
            base64.b64encode(self.global_signature).decode("ascii"),
        )


def parse_signature(text: str, source: str = "signature") -> Signature:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if len(lines) != 4:
        raise VerificationError(
            "{}: a minisign signature has 4 lines, found {}".format(source, len(lines))
        )
    untrusted, sig_line, trusted, global_line = lines
    if not untrusted.startswith("untrusted comment: "):
        raise VerificationError("{}: line 1 must be the untrusted comment".format(source))
    prefix = "trusted comment: "
    if not trusted.startswith(prefix):
        raise VerificationError("{}: line 3 must be the trusted comment".format(source))
    raw = b64decode_strict(sig_line, source + " (line 2)")
    if len(raw) != 74:
        raise VerificationError("{}: line 2 is not a minisign signature".format(source))
    algorithm = raw[:2]
    if algorithm not in (ALG_PREHASHED, ALG_LEGACY):
        raise VerificationError(
            "{}: unsupported signature algorithm {!r}".format(source, algorithm)
        )
    global_sig = b64decode_strict(global_line, source + " (line 4)")
    if len(global_sig) != 64:
        raise VerificationError("{}: line 4 is not a global signature".format(source))
    return Signature(
        algorithm,
        raw[2:10],
        raw[10:74],
        trusted[len(prefix) :],
        global_sig,
        untrusted[len("untrusted comment: ") :],
    )


def load_signature(path: str) -> Signature:
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 16)
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            raise VerificationError(
                "cannot read signature {}: its file name (the bundle's plus .minisig) is longer "
                "than the file system allows".format(path),
                hint="give the bundle a shorter name (and its .minisig the same name plus "
                     ".minisig), or pass --signature",
            )
        raise VerificationError(
            "cannot read signature {}: {}".format(path, err.strerror),
            hint="copy the .minisig file next to the bundle",
        )
    return parse_signature(_decode_lines(data, path), path)


def _decode_lines(data: bytes, path: str) -> str:
    """The signature file as text. Line 1, the untrusted comment, is not covered by any
    signature and stock minisign does not read it: any bytes are accepted there. Every other
    line must be UTF-8, and an error names the line."""
    lines = data.split(b"\n")
    text = [lines[0].decode("utf-8", "replace")]
    names = {1: "the signature", 2: "the trusted comment", 3: "the global signature"}
    for number, line in enumerate(lines[1:], 1):
        try:
            text.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise VerificationError("{}: line {} ({}) is not UTF-8".format(
                path, number + 1, names.get(number, "after the signature")))
    return "\n".join(text)


def prehash() -> Optional[Any]:  # hashlib.blake2b
    """A new BLAKE2b-512, the prehash of minisign's signatures, or None where this Python
    refuses it: on a FIPS host (fips=1) Red Hat's Python raises ValueError for every hash
    outside the FIPS module ("_blake2 is not available in FIPS mode", pypa/twine#706; "[digital
    envelope routines: EVP_DigestInit_ex] disabled for FIPS", pypa/twine#857). Python 3.6 has
    no `usedforsecurity` argument, and this use is for security anyway: the caller then relies
    on SHA-256 alone (docs/security.md, "FIPS hosts")."""
    try:
        return hashlib.blake2b()
    except (ValueError, AttributeError):
        return None


FIPS_HINT = ("on a FIPS host Python refuses BLAKE2b, minisign's prehash: kubecrate then checks "
             "the global signature and the SHA-256 chain it names (docs/security.md, "
             "\"FIPS hosts\")")


def file_digest(path: str, progress: Optional[Callable[[int], None]] = None) -> bytes:
    """BLAKE2b-512 of a whole file, the message of a prehashed minisign signature."""
    digest = hashlib.blake2b()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                break
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.digest()


# (key, signature, message) triples that verified: a command checks the same global signature
# several times on its way (bundle.json, the walk, the cache), and each pure-Python Ed25519
# verification costs ~5 ms of CPU. Only successes are kept; a verification is a pure function.
_VERIFIED: Set[Tuple[bytes, bytes, bytes]] = set()


def _ed25519_ok(key: bytes, signature: bytes, message: bytes) -> bool:
    if (key, signature, message) in _VERIFIED:
        return True
    try:
        ok = bool(VerifyingKey.from_string(key, curve=Ed25519).verify(signature, message))
    except (BadSignatureError, AssertionError, ValueError):
        # ecdsa raises AssertionError/ValueError for malformed points and scalars
        return False
    if ok:
        _VERIFIED.add((key, signature, message))
    return ok


class TrustedKey(NamedTuple):
    """A key an installer trusts; a retiring one (key rotation, docs/security.md) only before
    `expires`, a UTC date: from 00:00 UTC that day on, what it signed is refused."""
    key: PublicKey
    expires: Optional[datetime.date] = None


class Keyring(NamedTuple):
    """The keys an installer trusts: the current one, and after a key rotation the previous
    one until its expiry date. `today` (a UTC date) is asked only when a retiring key signed."""
    keys: Tuple[TrustedKey, ...]
    today: Callable[[], datetime.date] = lambda: datetime.datetime.utcnow().date()

    def describe(self) -> str:
        return ", ".join(
            k.key.id_hex + (" (retiring, expires {})".format(k.expires.isoformat())
                            if k.expires else "")
            for k in self.keys)

    def entry(self, key_id: bytes) -> Optional[TrustedKey]:
        for trusted in self.keys:
            if trusted.key.key_id == key_id:
                return trusted
        return None


Trust = Union[PublicKey, Keyring]  # what a check is given: --key's one key, or the embedded ring

RETIRING_FIELDS = ("key_id", "public_key", "expires")


def parse_retiring(text: str, source: str) -> Tuple[TrustedKey, ...]:
    """The retiring keys a rotated installer embeds (builder/zipapp.py writes them):
    {"retiring": [{"key_id": HEX, "public_key": "RW...", "expires": "YYYY-MM-DD"}]}."""
    try:
        document = json.loads(text)
        entries = document["retiring"]
        if not isinstance(entries, list):
            raise TypeError
        found = []
        for entry in entries:
            if sorted(entry) != sorted(RETIRING_FIELDS):
                raise KeyError("fields")
            key = parse_public_key(entry["public_key"], source)
            if key.id_hex != entry["key_id"]:
                raise VerificationError(
                    "{}: key {} is listed under id {}".format(source, key.id_hex, entry["key_id"]))
            expires = datetime.datetime.strptime(entry["expires"], "%Y-%m-%d").date()
            found.append(TrustedKey(key, expires))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise VerificationError("{}: not a list of retiring keys with their expiry".format(source))
    return tuple(found)


def signing_key(trust: Trust, signature: Signature, what: str) -> PublicKey:
    """The trusted key that made `signature`. Refused: a key that is not trusted (naming both
    ids), and a retiring key on or after its expiry date (naming its id and the date)."""
    if isinstance(trust, PublicKey):
        if signature.key_id != trust.key_id:
            raise VerificationError(
                "{} was signed with key {}, not with the trusted key {}".format(
                    what, key_id_hex(signature.key_id), trust.id_hex
                ),
                hint="use the public key of the builder that made this bundle (--key)",
            )
        return trust
    entry = trust.entry(signature.key_id)
    if entry is None:
        raise VerificationError(
            "{} was signed with key {}, not with a key this installer trusts ({})".format(
                what, key_id_hex(signature.key_id), trust.describe()
            ),
            hint="use the public key of the builder that made this bundle (--key)",
        )
    if entry.expires is not None and trust.today() >= entry.expires:
        raise VerificationError(
            "{} was signed with key {}, which a key rotation retired: this installer trusts it "
            "only before {} (today is {} UTC)".format(
                what, entry.key.id_hex, entry.expires.isoformat(), trust.today().isoformat()),
            hint="re-sign the bundle with the current key ({}), or rebuild it".format(
                trust.keys[0].key.id_hex),
        )
    if entry.expires is not None and (entry.key.key_id, what) not in _WARNED:
        _WARNED.add((entry.key.key_id, what))
        log.warning("%s is signed with key %s, which a key rotation retires: this installer "
                    "trusts it only before %s; re-sign it with the current key %s", what,
                    entry.key.id_hex, entry.expires.isoformat(), trust.keys[0].key.id_hex)
    return entry.key


def retiring_until(trust: Trust, signature: Signature) -> Optional[datetime.date]:
    """The expiry date when `signature` was made by a retiring key, else None."""
    if isinstance(trust, Keyring):
        entry = trust.entry(signature.key_id)
        if entry is not None:
            return entry.expires
    return None


def check_comment(trust: Trust, signature: Signature, what: str) -> PublicKey:
    """Check what needs no byte of the signed file: the key id, the algorithm, and the global
    signature that binds the signature and its trusted comment. After this the trusted comment
    (say, the bundle.json digest it names) is the key holder's word. Returns the key that
    signed."""
    public_key = signing_key(trust, signature, what)
    if not signature.prehashed:
        raise VerificationError(
            "{}: legacy (non-prehashed) minisign signature is not supported".format(what),
            hint="re-sign with `minisign -S` without -l",
        )
    comment = signature.trusted_comment.encode("utf-8")
    if not _ed25519_ok(public_key.key, signature.global_signature, signature.signature + comment):
        raise VerificationError(
            "{}: trusted comment does not match its signature (key {})".format(
                what, public_key.id_hex
            )
        )
    return public_key


def verify_digest(trust: Trust, signature: Signature, digest: bytes, what: str) -> None:
    """Check a prehashed signature against a file's BLAKE2b-512 digest, and the global
    signature that binds the trusted comment. Raises VerificationError naming what failed."""
    public_key = check_comment(trust, signature, what)
    if not _ed25519_ok(public_key.key, signature.signature, digest):
        raise VerificationError(
            "{}: signature does not match key {}".format(what, public_key.id_hex)
        )
