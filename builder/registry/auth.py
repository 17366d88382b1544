"""Registry authentication: `WWW-Authenticate` challenges, anonymous and credentialed bearer
tokens (distribution docs/spec/auth/token.md), basic auth, and credentials from a docker
`config.json` (`auths`, `credHelpers`, `credsStore`) or the environment.

Credentials are looked up lazily, on the first challenge, so that an anonymous registry never
runs a credential helper. The secret never appears in a message; `Credential.source` says
where it came from so that an auth error can tell the user what to fix.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from builder.inputs.mirrors import Credentials
from builder.registry.errors import RegistryAuthError

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 30.0
TOKEN_DEFAULT_SECONDS = 60  # the token spec's default when `expires_in` is absent
TOKEN_MARGIN = 10.0  # renew this long before expiry: a blob may start just before it
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # where `docker login` stores Docker Hub
_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class Challenge(NamedTuple):
    scheme: str  # lower-case: "bearer", "basic"
    params: Dict[str, str]


class Credential(NamedTuple):
    username: str
    secret: str
    source: str  # "auths['host'] in /home/u/.docker/config.json", never the secret
    identity_token: bool = False  # secret is an OAuth refresh token (docker login via SSO)


_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(,|$)')
_SCHEME = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_.-]*)(?:\s+|$)")


def parse_challenges(header: str) -> List[Challenge]:
    """Parse a `WWW-Authenticate` value (RFC 7235), possibly holding several challenges:
    `Bearer realm="https://a/token",service="reg",scope="repository:x:pull"`."""
    out: List[Challenge] = []
    pos, text = 0, header or ""
    while pos < len(text):
        match = _SCHEME.match(text, pos)
        if not match:
            break
        scheme, pos = match.group(1).lower(), match.end()
        params: Dict[str, str] = {}
        while pos < len(text):
            param = _PARAM.match(text, pos)
            if not param:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        out.append(Challenge(scheme, params))
    return out


def _host_key(key: str) -> str:
    """`https://host:5000/v1/` -> `host:5000`: how docker matches `auths` keys to hosts."""
    key = key.strip()
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0].lower()


def _docker_config_path(explicit: Optional[str]) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("DOCKER_CONFIG")
    folder = Path(base).expanduser() if base else Path.home() / ".docker"
    return folder / "config.json"


class CredentialFinder:
    """Finds the credentials for one registry host, as the preset's `credentials` entry says,
    else from the default docker config.json when it names the host, else none."""

    def __init__(self, host: str, config: Optional[Credentials] = None,
                 run: Optional[Runner] = None, environ: Optional[Mapping[str, str]] = None):
        self.host = host.lower()
        self.config = config
        self.run = run or subprocess.run
        self.environ = os.environ if environ is None else environ

    def where(self) -> str:
        """Where credentials are (or would be) looked for, for messages."""
        if self.config and self.config.username_env:
            return f"environment variables {self.config.username_env}/{self.config.password_env}"
        explicit = self.config.docker_config if self.config else None
        return str(_docker_config_path(explicit))

    def find(self) -> Optional[Credential]:
        cfg = self.config
        if cfg and cfg.username_env and cfg.password_env:
            user, password = self.environ.get(cfg.username_env), self.environ.get(cfg.password_env)
            if not user or not password:
                raise RegistryAuthError(
                    f"{self.host}: the preset names credentials in ${cfg.username_env} and "
                    f"${cfg.password_env}, but they are not both set",
                    hint=f"export {cfg.username_env} and {cfg.password_env}")
            return Credential(user, password, f"environment variables {cfg.username_env}/"
                                              f"{cfg.password_env}")
        path = _docker_config_path(cfg.docker_config if cfg else None)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if cfg and cfg.docker_config:
                raise RegistryAuthError(f"{self.host}: the preset's docker_config {path} does "
                                        "not exist", hint="fix the path in the preset") from None
            return None
        except (OSError, ValueError) as exc:
            raise RegistryAuthError(f"cannot read docker config {path}: {exc}") from exc
        return self._from_config(data if isinstance(data, dict) else {}, path)

    def _keys(self) -> Tuple[str, ...]:
        return _HUB_HOSTS if self.host in _HUB_HOSTS else (self.host,)

    def _from_config(self, data: Dict[str, Any], path: Path) -> Optional[Credential]:
        helpers = data.get("credHelpers") or {}
        for key, helper in helpers.items():
            if _host_key(key) in self._keys():
                return self._helper(helper, f"credHelpers[{key!r}] in {path}")
        if data.get("credsStore"):
            found = self._helper(data["credsStore"], f"credsStore in {path}")
            if found:
                return found
        for key, entry in (data.get("auths") or {}).items():
            if _host_key(key) in self._keys() and isinstance(entry, dict):
                found = self._inline(entry, f"auths[{key!r}] in {path}")
                if found:
                    return found
        return None

    def _inline(self, entry: Dict[str, Any], source: str) -> Optional[Credential]:
        if entry.get("identitytoken"):
            return Credential("<token>", entry["identitytoken"], source, identity_token=True)
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                sep = ""
            if not sep:
                raise RegistryAuthError(f"{source}: 'auth' is not base64 of user:password",
                                        hint=f"run docker login {self.host} again")
            return Credential(user, password, source)
        if entry.get("username") and entry.get("password"):
            return Credential(entry["username"], entry["password"], source)
        return None

    def _helper(self, name: str, source: str) -> Optional[Credential]:
        program = f"docker-credential-{name}"
        server = DOCKER_HUB_KEY if self.host in _HUB_HOSTS else self.host
        try:
            done = self.run([program, "get"], input=server, capture_output=True, text=True,
                            timeout=HELPER_TIMEOUT)
        except FileNotFoundError:
            raise RegistryAuthError(f"{self.host}: credential helper {program} ({source}) is "
                                    "not installed",
                                    hint=f"install {program}, or remove it from the config"
                                    ) from None
        except subprocess.TimeoutExpired:
            raise RegistryAuthError(f"{self.host}: credential helper {program} did not answer "
                                    f"within {HELPER_TIMEOUT:.0f} s ({source})") from None
        if done.returncode != 0:
            if "not found" in (done.stdout + done.stderr).lower():
                return None
            raise RegistryAuthError(f"{self.host}: credential helper {program} failed "
                                    f"({source}): {(done.stderr or done.stdout).strip()[-300:]}")
        try:
            answer = json.loads(done.stdout)
            user, secret = answer["Username"], answer["Secret"]
        except (ValueError, KeyError, TypeError):
            raise RegistryAuthError(f"{self.host}: credential helper {program} gave no "
                                    f"Username/Secret ({source})") from None
        via = f"credential helper {program} ({source})"
        return Credential(user, secret, via, identity_token=user == "<token>")


def basic_header(cred: Credential) -> str:
    raw = f"{cred.username}:{cred.secret}".encode()
    return "Basic " + base64.b64encode(raw).decode()


Fetch = Callable[..., Any]  # (method, url, **requests kwargs) -> requests.Response


class Authenticator:
    """The Authorization header for one registry endpoint and repository scope, renewed from
    the endpoint's challenges. Thread-safe; tokens are shared by all pulls of a scope."""

    def __init__(self, registry_url: str, finder: CredentialFinder, fetch: Fetch):
        self.registry_url = registry_url
        self.finder = finder
        self.fetch = fetch
        self._lock = threading.Lock()
        self._looked = False
        self._cred: Optional[Credential] = None
        self._scheme: Optional[str] = None  # the scheme the registry asked for last
        self._tokens: Dict[str, Tuple[str, float]] = {}  # scope -> (header, expires at)

    def credential(self) -> Optional[Credential]:
        with self._lock:
            if not self._looked:
                self._cred = self.finder.find()
                self._looked = True
            return self._cred

    def header(self, scope: str) -> Optional[str]:
        """The header to send now, or None (anonymous, or not yet challenged)."""
        with self._lock:
            if self._scheme == "basic" and self._cred:
                return basic_header(self._cred)
            token = self._tokens.get(scope)
            if token and token[1] > time.monotonic():
                return token[0]
            return None

    def answer(self, response: Any, scope: str, refused: Optional[str]) -> str:
        """A header that answers the 401 `response`; `refused` is the header that was just
        refused, if any (then the registry rejected it: fail rather than loop)."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme and "realm" in by_scheme["bearer"].params:
            if refused and refused.startswith("Bearer "):
                raise self._refused("the registry refused the bearer token it was issued")
            return self._token(by_scheme["bearer"].params, scope)
        if "basic" in by_scheme:
            cred = self.credential()
            if cred is None:
                raise self._missing()
            if refused and refused.startswith("Basic "):
                raise self._refused(f"the registry refused the credentials from {cred.source}")
            with self._lock:
                self._scheme = "basic"
            return basic_header(cred)
        raise RegistryAuthError(
            f"{self.registry_url}: 401 with an unsupported challenge "
            f"{response.headers.get('WWW-Authenticate')!r}")

    def _token(self, params: Dict[str, str], scope: str) -> str:
        # Anonymous tokens serve public repositories, but configured credentials go with the
        # token request, as docker does, so that private repositories work too.
        cred = self.credential()
        realm = params["realm"]
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if cred and cred.identity_token:
            response = self.fetch("POST", realm, data={
                "grant_type": "refresh_token", "refresh_token": cred.secret,
                "service": params.get("service", ""), "scope": scope, "client_id": "kubecrate"})
        else:
            if cred:
                headers["Authorization"] = basic_header(cred)
            response = self.fetch("GET", realm, params=query, headers=headers)
        if response.status_code in (401, 403):
            if cred:
                raise self._refused(f"the token server {realm} refused the credentials from "
                                    f"{cred.source} (HTTP {response.status_code})")
            raise self._missing(f"the token server {realm} refused anonymous access "
                                f"(HTTP {response.status_code})")
        if response.status_code != 200:
            raise RegistryAuthError(f"token server {realm} answered HTTP "
                                    f"{response.status_code} for scope {scope}")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            seconds = float(body.get("expires_in") or TOKEN_DEFAULT_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token, seconds = None, 0.0
        if not token:
            raise RegistryAuthError(f"token server {realm} gave no token for scope {scope}")
        header = f"Bearer {token}"
        with self._lock:
            self._scheme = "bearer"
            expires = time.monotonic() + max(seconds - TOKEN_MARGIN, 1.0)
            self._tokens[scope] = (header, expires)
        return header

    def _refused(self, what: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"{self.registry_url}: authentication failed: {what}",
            hint=f"check the user name and password in {self.finder.where()} "
                 f"(docker login {self.finder.host}, or the preset's credentials)")

    def _missing(self, what: str = "") -> RegistryAuthError:
        return RegistryAuthError(
            f"{self.registry_url}: the registry needs credentials and none were found "
            f"in {self.finder.where()}" + (f"; {what}" if what else ""),
            hint=f"run docker login {self.finder.host}, or name credentials in the preset's "
                 "registries entry (docs/mirrors.md)")
