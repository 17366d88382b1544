"""One registry endpoint (a mirror's base URL) over the shared `requests.Session`: the `/v2/`
ping, authentication and redirects. Retries, backoff and blob downloads resumed with `Range` are
builder/net/http.py's, which this module hands its authenticated request to.
builder/registry/client.py decides what to fetch; this module only moves bytes.

Redirects are followed here, not by requests, so that the Authorization header goes only to
the registry's own scheme, host and port (distribution-spec: clients MUST NOT forward it
across host boundaries); blob GETs are often redirected to a CDN or object store.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Dict, Optional, Tuple, Union
from urllib.parse import urljoin, urlsplit

import requests

from builder.inputs.mirrors import RegistryMirror
from builder.net.http import (
    TIMEOUT,
    Policy,
    StatusError,
    TLSFailed,
    TooLarge,
    Unreachable,
    download,
    fetch,
    request,
)
from builder.registry.auth import Authenticator, CredentialFinder, Runner
from builder.registry.errors import BlobCorrupt, ImageNotFound, RegistryError, RegistryUnreachable

log = logging.getLogger(__name__)

RETRIES = 4  # consecutive failures without progress before giving up on a request
BACKOFF = 0.5  # seconds, doubled per consecutive failure, with jitter, capped at 8 s
MAX_REDIRECTS = 5
MAX_MANIFEST = 4 << 20  # containerd's limit for a manifest or index
_REDIRECTS = (301, 302, 303, 307, 308)
_CA_HINT = "name the registry's CA bundle in the preset (`ca:`), docs/mirrors.md"


class _NoAuth(requests.auth.AuthBase):
    """Keeps requests from adding ~/.netrc credentials over the headers set here."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


def _origin(url: str) -> Tuple[str, str, Optional[int]]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class Endpoint:
    """A registry base URL with its TLS settings, credentials and authenticator."""

    def __init__(self, mirror: RegistryMirror, session: requests.Session, *,
                 timeout: Tuple[float, float] = TIMEOUT, retries: int = RETRIES,
                 backoff: float = BACKOFF, sleep: Optional[Callable[[float], None]] = None,
                 run: Optional[Runner] = None) -> None:
        self.mirror = mirror
        self.url = mirror.url
        self.session = session
        self.timeout = timeout
        self.policy = Policy(attempts=retries + 1, backoff=backoff, timeout=timeout, sleep=sleep)
        self._origin = _origin(self.url)
        finder = CredentialFinder(mirror.host, mirror.credentials, run=run)
        self.auth = Authenticator(self.url, finder, self._plain)
        self._ping_lock = threading.Lock()
        self._pinged = False

    # ------------------------------------------------------------------ transport

    def _verify(self, url: str) -> Union[bool, str]:
        # The preset's CA bundle is for the registry's own origin; a CDN it redirects to, or
        # a token server elsewhere, is checked against the default trust store.
        if _origin(url) != self._origin:
            return True
        if self.mirror.ca:
            return self.mirror.ca
        return not (self.mirror.insecure and self.url.startswith("https:"))

    def _plain(self, method: str, url: str, headers: Optional[Dict[str, str]] = None,
               **kwargs: Any) -> requests.Response:
        """A token-server request: its own origin gets the Authorization header; transient
        errors retried."""
        origin = _origin(url)
        return _reachable(lambda: request(None, url, policy=self.policy, send=lambda extra: (
            self._follow(method, url, {**(headers or {}), **extra}, False, origin, **kwargs)[0])))

    def _follow(self, method: str, url: str, headers: Dict[str, str], stream: bool,
                origin: Optional[Tuple[str, str, Optional[int]]] = None,
                **kwargs: Any) -> Tuple[requests.Response, str]:
        """Send, following redirects ourselves; Authorization only to `origin` (scheme, host
        and port; the registry's by default)."""
        origin = origin or self._origin
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if _origin(url) != origin:
                sent.pop("Authorization", None)
            response = self.session.request(
                method, url, headers=sent, stream=stream, timeout=self.timeout,
                verify=self._verify(url), allow_redirects=False, auth=_NoAuth(), **kwargs)
            if response.status_code in _REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                response.close()
                if method == "POST" and response.status_code == 303:
                    method = "GET"
                continue
            return response, url
        raise RegistryUnreachable(f"{url}: more than {MAX_REDIRECTS} redirects")

    def ping(self) -> None:
        """`GET /v2/` once: is this a registry at all, reachable, and how does it authenticate
        (a 401 is fine here; the challenge is answered per repository scope later)."""
        with self._ping_lock:
            if self._pinged:
                return
            url = f"{self.url}/v2/"
            response = _reachable(lambda: request(None, url, policy=self.policy, send=lambda h: (
                self._follow("GET", url, h, False)[0])))
            if response.status_code not in (200, 401):
                raise RegistryUnreachable(
                    f"{url}: HTTP {response.status_code}; this is not an OCI registry API root",
                    hint="a registry mirror URL is scheme://host[:port] with no path "
                         "(docs/mirrors.md)")
            self._pinged = True

    def request(self, method: str, url: str, scope: str, headers: Optional[Dict[str, str]] = None,
                stream: bool = False) -> requests.Response:
        """One authenticated request (a 401 answered, at most twice); no retries here."""
        self.ping()
        headers = dict(headers or {})
        header = self.auth.header(scope)
        refused: Optional[str] = None
        for _ in range(3):
            if header:
                headers["Authorization"] = header
            response, final = self._follow(method, url, headers, stream)
            if response.status_code != 401 or _origin(final) != self._origin:
                return response
            response.close()
            refused = header
            header = self.auth.answer(response, scope, refused)
        raise RegistryError(f"{url}: still 401 after authenticating")

    # ------------------------------------------------------------------ manifests and blobs

    def manifest(self, repository: str, reference: str, accept: str,
                 image: str) -> Tuple[bytes, str, str, str]:
        """GET a manifest: (bytes, content type, Docker-Content-Digest or "", url)."""
        url = f"{self.url}/v2/{repository}/manifests/{reference}"
        scope = f"repository:{repository}:pull"
        try:
            reply = _reachable(lambda: fetch(None, url, policy=self.policy, limit=MAX_MANIFEST,
                                             send=self._sender(url, scope, {"Accept": accept})))
        except TooLarge:
            raise RegistryError(f"{image}: manifest at {url} is larger than "
                                f"{MAX_MANIFEST >> 20} MiB") from None
        except StatusError as err:
            if err.status == 404:
                raise ImageNotFound(f"{image}: not found at {url} ({_error_code(err)})",
                                    hint="check the tag, and that the mirror carries this image "
                                         "(for a namespace mirror: its repository path)") from None
            raise RegistryError(f"{image}: {url} answered HTTP {err.status} "
                                f"({_error_code(err)})") from None
        ctype = reply.headers.get("Content-Type", "").split(";")[0].strip()
        return reply.data, ctype, reply.headers.get("Docker-Content-Digest", ""), url

    def blob(self, repository: str, digest: str, size: int, sink: Any, image: str,
             progress: Optional[Callable[[int], None]] = None,
             stop: Optional[int] = None) -> None:
        """Stream a blob into `sink` (`.size`, `.write()`), resuming with `Range` after a cut;
        the sink hashes what it is given, so bytes already written are never fetched again.
        With `stop`, only bytes `sink.size` to `stop` (a part; see client._download_layers)."""
        url = f"{self.url}/v2/{repository}/blobs/{digest}"
        scope = f"repository:{repository}:pull"
        try:
            _reachable(lambda: download(None, url, sink, size=size, policy=self.policy,
                                        progress=progress, send=self._sender(url, scope),
                                        stop=stop),
                       f"{image}: blob {digest} from {url}", size)
        except TooLarge:
            raise BlobCorrupt(f"{image}: blob {digest} from {url} is longer than the {size} "
                              "bytes its descriptor says; nothing was kept") from None
        except StatusError as err:
            if err.status == 404:
                raise ImageNotFound(f"{image}: blob {digest} not found at {url}",
                                    hint="the mirror's copy of this image is incomplete") from None
            raise RegistryError(f"{image}: blob {digest} at {url}: HTTP {err.status}") from None

    def _sender(self, url: str, scope: str, headers: Optional[Dict[str, str]] = None
                ) -> Callable[[Dict[str, str]], requests.Response]:
        """The transport's `send`: one authenticated, streamed GET of `url`."""
        return lambda extra: self.request("GET", url, scope, {**(headers or {}), **extra},
                                          stream=True)


def _reachable(call: Callable[[], Any], what: str = "", size: int = 0) -> Any:
    """`call()`, the transport's giving up raised as RegistryUnreachable (`what`: a blob)."""
    try:
        return call()
    except TLSFailed as err:
        raise RegistryUnreachable(f"{err.url}: {err.detail}", hint=_CA_HINT) from err
    except Unreachable as err:
        if not what:
            raise RegistryUnreachable(err.message, hint=err.hint) from err
        raise RegistryUnreachable(f"{what} failed after {err.attempts} attempts "
                                  f"({err.received} of {size} bytes): {err.detail}",
                                  hint="check the mirror; a re-run starts the blob again") from err


def _error_code(err: StatusError) -> str:
    """The registry's error code (MANIFEST_UNKNOWN, NAME_UNKNOWN, ...) or the HTTP status."""
    try:
        errors = json.loads(err.body).get("errors") or []
        codes = [str(e["code"]) for e in errors if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError):
        codes = []
    return ", ".join(codes) or f"HTTP {err.status}"
