"""join.yaml: what a host needs to join the cluster (endpoint, token, CA cert hash, certificate
key, expiry times), plus the secrets the installer generates itself so that nothing has to
parse kubeadm's output.

The file is secret (mode 0600): the token and the certificate key let a host join as a control
plane. The CA cert hash is kubeadm's "sha256:<hex>" of the CA's SubjectPublicKeyInfo, computed
with openssl through the runner (ca_cert_hash_commands); spki_sha256() is a pure-Python
equivalent that the tests use to cross-check it.
"""

import base64
import datetime
import hashlib
import logging
import os
import re
import secrets
import string
import tempfile
from typing import Any, List, NamedTuple, Optional

from installer.atomic import replace_file
from installer.format import yamldoc
from installer.format.errors import UsageError
from installer.format.redact import remember
from installer.render import render

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
FILE_MODE = 0o600
TOKEN_TTL = datetime.timedelta(hours=24)  # kubeadm's DefaultTokenDuration
CERTIFICATE_KEY_TTL = datetime.timedelta(hours=2)  # kubeadm's DefaultCertTokenDuration
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
KEYS = ("format_version", "endpoint", "token", "token_expires", "ca_cert_hash",
        "certificate_key", "certificate_key_expires", "bundle", "bundle_server")

TOKEN_RE = re.compile(r"\A[a-z0-9]{6}\.[a-z0-9]{16}\Z")
CERTIFICATE_KEY_RE = re.compile(r"\A[0-9a-f]{64}\Z")
CA_HASH_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
BUNDLE_RE = re.compile(r"\A[0-9a-f]{64}\Z")
ENDPOINT_RE = re.compile(r"\A[A-Za-z0-9.-]+:\d{1,5}\Z")
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


class JoinFileError(UsageError):
    """join.yaml is unreadable, malformed, or holds an invalid value."""


class JoinInfo(NamedTuple):
    endpoint: str  # "host:port" of the load balancer
    token: str
    token_expires: str  # UTC, TIME_FORMAT
    ca_cert_hash: str  # "sha256:<64 hex>"
    certificate_key: Optional[str]  # None: workers only
    certificate_key_expires: Optional[str]
    # The bundle.json digest the cluster was installed from (its kubecrate-bundle ConfigMap):
    # a node with another bundle is refused. None in files of older installers.
    bundle: Optional[str] = None
    # "address:port" of the first control-plane node's bundle server (installer/bundleserve.py),
    # where a node without the bundle tar fetches it. None in files of older installers.
    bundle_server: Optional[str] = None

    def token_expired(self, now: datetime.datetime) -> bool:
        return _parse_time(self.token_expires) <= now

    def certificate_key_expired(self, now: datetime.datetime) -> bool:
        """True also when there is no key (the file serves workers only)."""
        if not self.certificate_key or not self.certificate_key_expires:
            return True
        return _parse_time(self.certificate_key_expires) <= now


def new_token() -> str:
    """A fresh bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}, from the secrets module."""
    pick = lambda n: "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    token = pick(6) + "." + pick(16)
    remember(token)
    return token


def new_certificate_key() -> str:
    """A fresh 32-byte AES key for kubeadm's uploaded certificates, as 64 lowercase hex."""
    key = secrets.token_hex(32)
    remember(key)
    return key


def utcnow() -> datetime.datetime:
    """Now in UTC, naive, whole seconds (the form join.yaml's times compare with)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(tzinfo=None, microsecond=0)


def format_time(moment: datetime.datetime) -> str:
    return moment.strftime(TIME_FORMAT)


def _parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, TIME_FORMAT)


def new_join_info(endpoint: str, ca_cert_hash: str, now: datetime.datetime,
                  token: Optional[str] = None, certificate_key: Optional[str] = None) -> JoinInfo:
    """Join material valid from `now` (UTC): the given or a fresh token and certificate key,
    with kubeadm's default lifetimes (24 h, 2 h)."""
    info = JoinInfo(endpoint, token or new_token(), format_time(now + TOKEN_TTL), ca_cert_hash,
                    certificate_key or new_certificate_key(),
                    format_time(now + CERTIFICATE_KEY_TTL))
    validate(info)
    return info


def validate(info: JoinInfo, source: str = "join.yaml") -> None:
    """Raise JoinFileError naming the first invalid key."""
    def bad(key: str, message: str) -> JoinFileError:
        return JoinFileError("{}: {}: {}".format(source, key, message),
                             hint="write a fresh one with `kubecrate-installer.pyz join-info` "
                             "on a control-plane node")
    if not isinstance(info.endpoint, str) or not ENDPOINT_RE.match(info.endpoint):
        raise bad("endpoint", "{!r} is not host:port".format(info.endpoint))
    if not isinstance(info.token, str) or not TOKEN_RE.match(info.token):
        raise bad("token", "not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}")
    if not isinstance(info.ca_cert_hash, str) or not CA_HASH_RE.match(info.ca_cert_hash):
        raise bad("ca_cert_hash", "{!r} is not sha256:<64 hex digits>".format(info.ca_cert_hash))
    if info.certificate_key is not None and (not isinstance(info.certificate_key, str) or
                                             not CERTIFICATE_KEY_RE.match(info.certificate_key)):
        raise bad("certificate_key", "not 64 lowercase hex digits (quote it in YAML)")
    if info.bundle is not None and (not isinstance(info.bundle, str) or
                                    not BUNDLE_RE.match(info.bundle)):
        raise bad("bundle", "not a bundle.json digest (64 lowercase hex digits)")
    if info.bundle_server is not None and (not isinstance(info.bundle_server, str) or
                                           not ENDPOINT_RE.match(info.bundle_server)):
        raise bad("bundle_server", "{!r} is not address:port".format(info.bundle_server))
    if (info.certificate_key is None) != (info.certificate_key_expires is None):
        raise bad("certificate_key_expires", "certificate_key and certificate_key_expires "
                  "come together")
    for key in ("token_expires", "certificate_key_expires"):
        value = getattr(info, key)
        if value is None and key != "token_expires":
            continue
        try:
            _parse_time(str(value))
        except ValueError:
            raise bad(key, "{!r} is not a UTC time like 2024-01-31T12:00:00Z".format(value))


def dump(info: JoinInfo) -> str:
    """join.yaml text for `info`."""
    validate(info)
    return render("join.yaml.j2", join=info, format_version=FORMAT_VERSION)


def parse(text: str, source: str = "join.yaml") -> JoinInfo:
    """Validate join.yaml text; raises JoinFileError naming the file and the key."""
    try:
        data = yamldoc.parse(text, source).data
    except yamldoc.DocumentError as err:  # also the size and alias limits
        raise JoinFileError(err.message, err.hint)
    if not isinstance(data, dict):
        raise JoinFileError("{}: not a mapping of keys".format(source))
    for key in data:
        if key not in KEYS:
            raise JoinFileError("{}: {}: unknown key".format(source, key))
    if data.get("format_version") != FORMAT_VERSION:
        raise JoinFileError("{}: format_version: {!r} is not {}".format(
            source, data.get("format_version"), FORMAT_VERSION))
    for key in ("endpoint", "token", "token_expires", "ca_cert_hash"):
        if key not in data:
            raise JoinFileError("{}: required key {!r} is missing".format(source, key))
    remember(data.get("token"), data.get("certificate_key"))
    info = JoinInfo(data["endpoint"], data["token"], data["token_expires"],
                    data["ca_cert_hash"], data.get("certificate_key"),
                    data.get("certificate_key_expires"), data.get("bundle"),
                    data.get("bundle_server"))
    validate(info, source)
    return info


JOIN_SECRETS = "its bootstrap token and certificate key let whoever reads it join the " \
    "cluster as a control-plane node"


def exposure(path: str, why: str = JOIN_SECRETS) -> Optional[str]:
    """A warning when the secret file at `path` (join material unless `why` says what else)
    is open to group or others, else None."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    fresh = ", and `join-info` for fresh material if others could read it" \
        if why == JOIN_SECRETS else ""
    return ("{} is {} by group or others (mode {:04o}): {}; run `chmod 600 {}`{}".format(
        path, "writable" if mode & 0o022 else "readable", mode, why, path, fresh))


def load(path: str) -> JoinInfo:
    """Read and validate join.yaml; warns (logging) when group or others can read it."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read(yamldoc.MAX_BYTES + 1)
    except OSError as err:
        raise JoinFileError("cannot read {}: {}".format(path, err.strerror))
    warning = exposure(path)
    if warning:
        log.warning("%s", warning)
    return parse(text, path)


def write(path: str, info: JoinInfo) -> None:
    """Write join.yaml atomically, mode 0600 from the first byte (for `join-info --out`)."""
    text = dump(info).encode("utf-8")
    replace_file(path, lambda handle: handle.write(text), FILE_MODE)


def ca_cert_hash_commands(ca_cert: str, workdir: str) -> List[List[str]]:
    """argv lists that leave in their last stdout `<hex> *<file>`: the SHA-256 of the CA's
    SubjectPublicKeyInfo in DER (`workdir` holds the intermediate files)."""
    pub = os.path.join(workdir, "ca.pub.pem")
    der = os.path.join(workdir, "ca.pub.der")
    return [
        ["openssl", "x509", "-in", ca_cert, "-noout", "-pubkey", "-out", pub],
        ["openssl", "pkey", "-pubin", "-in", pub, "-outform", "DER", "-out", der],
        ["openssl", "dgst", "-sha256", "-r", der],
    ]


def parse_dgst(stdout: str) -> str:
    """`openssl dgst -sha256 -r` output -> "sha256:<hex>"."""
    match = re.match(r"^([0-9a-f]{64}) ", stdout.strip())
    if not match:
        raise ValueError("unexpected openssl dgst output: {!r}".format(stdout[:200]))
    return "sha256:" + match.group(1)


def ca_cert_hash(runner: Any, ca_cert: str) -> str:
    """kubeadm's discovery hash of the CA certificate at `ca_cert` (a path the runner's
    commands can read), computed with openssl through `runner.run`."""
    with tempfile.TemporaryDirectory(prefix="kubecrate-cahash.") as workdir:
        *first, last = ca_cert_hash_commands(ca_cert, workdir)
        for argv in first:
            runner.run(argv, readonly=True)
        return parse_dgst(runner.run(last, readonly=True).stdout)


def spki_sha256(pem: str) -> str:
    """Pure-Python "sha256:<hex>" of a PEM certificate's SubjectPublicKeyInfo (test oracle)."""
    body = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    if not body:
        raise ValueError("no PEM certificate")
    der = base64.b64decode("".join(body.group(1).split()))
    tbs = _children(_tlv(der, 0)[1])[0]
    fields = _children(tbs[1])
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    return "sha256:" + hashlib.sha256(fields[5][2]).hexdigest()


def _tlv(data: bytes, pos: int):
    """(tag, content bytes, whole TLV bytes, next position) of the DER element at pos."""
    tag, length, start = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    return tag, data[start:end], data[pos:end], end


def _children(content: bytes):
    out, pos = [], 0
    while pos < len(content):
        tag, body, whole, pos = _tlv(content, pos)
        out.append((tag, body, whole))
    return out
