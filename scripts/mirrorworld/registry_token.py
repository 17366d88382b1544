"""A small bearer-token server for the mirror world's token-auth registry.

It implements the issuing side of the Docker registry token flow (distribution's
docs/spec/auth/token.md): `GET /token?service=S&scope=repository:NAME:pull` answers
`{"token", "access_token", "expires_in", "issued_at"}` with an RS256 JWT whose header carries
the signer certificate in `x5c`; the registry trusts it through `auth.token.rootcertbundle`.
Like Docker Hub for public repositories, anonymous requests get pull access; wrong Basic
credentials get 401; push is never granted (the world is read-only).

Run: `python registry_token.py CONFIG.json`, CONFIG holding port, issuer, service, signer_key,
signer_cert, username, password.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import json
import secrets
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

TOKEN_SECONDS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(obj: dict) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())


def granted_access(scopes: list) -> list:
    """The JWT `access` claim for requested scopes: pull only, repositories only."""
    access = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name and "pull" in actions.split(","):
            access.append({"type": "repository", "name": name, "actions": ["pull"]})
    return access


class Issuer:
    """Signs registry tokens with the configured key and certificate."""

    def __init__(self, config: dict):
        self.config = config
        with open(config["signer_key"], "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(config["signer_cert"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    def check_basic(self, header: str | None) -> str | None:
        """The user name for valid Basic credentials, "" for none; None when they are wrong."""
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        ok_user = hmac.compare_digest(user, self.config["username"])
        ok_password = hmac.compare_digest(password, self.config["password"])
        return user if ok_user and ok_password else None

    def token(self, subject: str, service: str, scopes: list) -> dict:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {
            "iss": self.config["issuer"],
            "sub": subject,
            "aud": service,
            "iat": now,
            "nbf": now - 10,
            "exp": now + TOKEN_SECONDS,
            "jti": secrets.token_hex(16),
            "access": granted_access(scopes),
        }
        signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64url(signature)}"
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        return {"token": token, "access_token": token, "expires_in": TOKEN_SECONDS,
                "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ")}


def make_handler(issuer: Issuer) -> type:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            query = urllib.parse.parse_qs(url.query)
            service = query.get("service", [""])[0]
            if service != issuer.config["service"]:
                self._reply(400, {"errors": [{"code": "UNSUPPORTED",
                                              "message": f"unknown service {service!r}"}]})
                return
            subject = issuer.check_basic(self.headers.get("Authorization"))
            if subject is None:
                self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                              "message": "invalid username or password"}]},
                            {"WWW-Authenticate": 'Basic realm="mirror-world token"'})
                return
            self._reply(200, issuer.token(subject, service, query.get("scope", [])))

    return Handler


def main(argv: list) -> int:
    with open(argv[1], encoding="utf-8") as f:
        config = json.load(f)
    server = ThreadingHTTPServer(("127.0.0.1", int(config["port"])),
                                 make_handler(Issuer(config)))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
