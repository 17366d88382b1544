"""The one place secrets are taken out of text before it is shown or logged (docs/security.md).

Every message the runner logs or raises, every log record of the installer and builder
loggers, every error the CLI edge prints and the per-run log file go through redact(). It
removes, at any verbosity:
- bootstrap tokens `[a-z0-9]{6}.[a-z0-9]{16}`: the public id stays, the secret goes;
- certificate keys (64 hex) where they are named as such (`--certificate-key K`,
  `certificateKey: "K"`, kubeadm's "Using certificate key:\\nK");
- PEM private key blocks;
- credentials in URLs (`https://user:pass@host` -> `https://user:***@host`);
- labelled secrets: kubeconfig `client-key-data`, `token` values (kubeconfig users,
  service-account tokens), keepalived's `auth_pass`;
- every value registered with remember() (join material the installer made or read), wherever
  it appears, since a 64-hex key looks like any SHA-256 digest without its label.
"""

import logging
import re
import threading

MASK = "<redacted>"
_TOKEN = re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b")
_LABELLED_KEY = re.compile(
    r"(certificate[-_ ]?key[\"']?\s*[:=]?\s*(?:\n\s*)?[\"']?)[0-9a-fA-F]{64}\b", re.I)
_PEM_PRIVATE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
# kubeconfig key data (base64 of a PEM key: the PEM pattern cannot see it), kubeconfig and
# service-account tokens, keepalived's VRRP password: masked by their labels.
# A bootstrap token keeps its public id (`token: abcdef.<redacted>`, _TOKEN).
_LABELLED_SECRET = re.compile(
    r"((?:\bclient-key-data|\btoken)[\"']?\s*:\s*[\"']?|\bauth_pass[ \t]+)"
    r"(?![a-z0-9]{6}\.)[^\s\"']{6,}")

_known = set()  # type: set
_lock = threading.Lock()


def remember(*secrets: object) -> None:
    """Redact these exact values from now on (tokens, keys, passwords of this process)."""
    with _lock:
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= 8:
                _known.add(secret)


def redact(text: object) -> str:
    """`text` with every secret replaced by MASK (see the module docstring)."""
    text = str(text)
    text = _PEM_PRIVATE.sub("-----BEGIN \\1PRIVATE KEY----- " + MASK, text)
    text = _TOKEN.sub("\\1." + MASK, text)
    text = _LABELLED_KEY.sub("\\g<1>" + MASK, text)
    text = _URL_PASSWORD.sub("\\g<1>***@", text)
    text = _LABELLED_SECRET.sub("\\g<1>" + MASK, text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """A logging formatter whose whole output (message, arguments, traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
