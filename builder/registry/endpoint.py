"""One registry endpoint (a mirror's base URL) over the shared `requests.Session`: the `/v2/`
ping, authentication, redirects, bounded retries with backoff, and blob downloads resumed with
`Range`. builder/registry/client.py decides what to fetch; this module only moves bytes.

Redirects are followed here, not by requests, so that the Authorization header goes only to
the registry's own scheme, host and port (distribution-spec: clients MUST NOT forward it
across host boundaries); blob GETs are often redirected to a CDN or object store.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from builder.inputs.mirrors import RegistryMirror
from builder.registry.auth import Authenticator, CredentialFinder, Runner
from builder.registry.errors import BlobCorrupt, ImageNotFound, RegistryError, RegistryUnreachable

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 60.0)  # connect, read (between bytes): a stalled mirror fails, a slow one not
RETRIES = 4  # consecutive failures without progress before giving up on a request
MAX_ATTEMPTS = 30  # hard cap per blob, however much each attempt progressed
BACKOFF = 0.5  # seconds, doubled per consecutive failure, with jitter, capped at 8 s
MAX_REDIRECTS = 5
MAX_MANIFEST = 4 << 20  # containerd's limit for a manifest or index
CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
_TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout,
                     requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
                     ConnectionError, TimeoutError)


class _Transient(Exception):
    """A failure worth retrying (a 5xx, a cut connection, a short body)."""


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
                 backoff: float = BACKOFF, sleep: Callable[[float], None] = time.sleep,
                 run: Optional[Runner] = None) -> None:
        self.mirror = mirror
        self.url = mirror.url
        self.session = session
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
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
        return self._retry(
            lambda: self._follow(method, url, headers or {}, False, origin, **kwargs)[0], url)

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

    def _retry(self, attempt: Callable[[], Any], url: str) -> Any:
        failures = 0
        while True:
            try:
                return attempt()
            except requests.exceptions.SSLError as exc:
                raise RegistryUnreachable(
                    f"{url}: TLS failed: {exc}",
                    hint="name the registry's CA bundle in the preset (`ca:`), docs/mirrors.md"
                ) from exc
            except (_Transient, *_TRANSIENT_ERRORS) as exc:
                failures += 1
                if failures > self.retries:
                    raise RegistryUnreachable(
                        f"{url}: no usable answer after {failures} attempts: {exc}",
                        hint="check that the mirror is up and reachable (proxy settings: "
                             "HTTPS_PROXY/NO_PROXY)") from exc
                log.info("retrying %s after: %s", url, exc)
                self.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        return min(self.backoff * 2 ** (failures - 1), 8.0) * (0.75 + random.random() / 2)

    def ping(self) -> None:
        """`GET /v2/` once: is this a registry at all, reachable, and how does it authenticate
        (a 401 is fine here; the challenge is answered per repository scope later)."""
        with self._ping_lock:
            if self._pinged:
                return
            url = f"{self.url}/v2/"

            def attempt() -> requests.Response:
                response = self._follow("GET", url, {}, False)[0]
                if response.status_code in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {response.status_code}")
                return response

            response = self._retry(attempt, url)
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

        def attempt() -> Tuple[bytes, str, str, str]:
            with self.request("GET", url, scope, {"Accept": accept}, stream=True) as response:
                status = response.status_code
                if status in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {status}")
                if status == 404:
                    raise ImageNotFound(
                        f"{image}: not found at {url} ({_error_code(response)})",
                        hint="check the tag, and that the mirror carries this image "
                             "(for a namespace mirror: its repository path)")
                if status != 200:
                    raise RegistryError(f"{image}: {url} answered HTTP {status} "
                                        f"({_error_code(response)})")
                body = bytearray()
                for chunk in response.raw.stream(CHUNK, decode_content=True):
                    body += chunk
                    if len(body) > MAX_MANIFEST:
                        raise RegistryError(f"{image}: manifest at {url} is larger than "
                                            f"{MAX_MANIFEST >> 20} MiB")
                ctype = response.headers.get("Content-Type", "").split(";")[0].strip()
                return bytes(body), ctype, response.headers.get("Docker-Content-Digest", ""), url

        return self._retry(attempt, url)

    def blob(self, repository: str, digest: str, size: int, sink: Any, image: str,
             progress: Optional[Callable[[int], None]] = None) -> None:
        """Stream a blob into `sink` (`.size`, `.write()`), resuming with `Range` after a cut;
        the sink hashes what it is given, so bytes already written are never fetched again."""
        url = f"{self.url}/v2/{repository}/blobs/{digest}"
        scope = f"repository:{repository}:pull"
        failures = attempts = 0
        while True:
            attempts += 1
            start = sink.size
            try:
                self._blob_attempt(url, scope, digest, size, sink, image, progress)
                return
            except requests.exceptions.SSLError as exc:
                raise RegistryUnreachable(f"{url}: TLS failed: {exc}") from exc
            except (_Transient, *_TRANSIENT_ERRORS) as exc:
                failures = 1 if sink.size > start else failures + 1
                if failures > self.retries or attempts >= MAX_ATTEMPTS:
                    raise RegistryUnreachable(
                        f"{image}: blob {digest} from {url} failed after {attempts} attempts "
                        f"({sink.size} of {size} bytes): {exc}",
                        hint="check the mirror; a re-run starts the blob again") from exc
                log.info("%s: resuming blob %s at byte %d after: %s", image, digest,
                         sink.size, exc)
                self.sleep(self._delay(failures))

    def _blob_attempt(self, url: str, scope: str, digest: str, size: int, sink: Any,
                      image: str, progress: Optional[Callable[[int], None]]) -> None:
        start = sink.size
        # identity: Range offsets count the blob's own bytes, never a re-encoding of them
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        with self.request("GET", url, scope, headers, stream=True) as response:
            status = response.status_code
            if status in _TRANSIENT_STATUS:
                raise _Transient(f"HTTP {status}")
            if status == 404:
                raise ImageNotFound(f"{image}: blob {digest} not found at {url}",
                                    hint="the mirror's copy of this image is incomplete")
            skip = 0
            if status == 206 and start:
                if not response.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
                    raise _Transient(f"unexpected Content-Range "
                                     f"{response.headers.get('Content-Range')!r}")
            elif status == 200:
                skip = start  # the server ignored Range: drop what we already have
            else:
                raise RegistryError(f"{image}: blob {digest} at {url}: HTTP {status}")
            for chunk in response.raw.stream(CHUNK, decode_content=False):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                if sink.size + len(chunk) > size:
                    raise BlobCorrupt(f"{image}: blob {digest} from {url} is longer than the "
                                      f"{size} bytes its descriptor says; nothing was kept")
                sink.write(chunk)
                if progress:
                    progress(len(chunk))
        if sink.size < size:
            raise _Transient(f"connection closed after {sink.size} of {size} bytes")


def _error_code(response: requests.Response) -> str:
    """The registry's error code (MANIFEST_UNKNOWN, NAME_UNKNOWN, ...) or the HTTP status."""
    try:
        errors = response.json().get("errors") or []
        codes = [e.get("code") for e in errors if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError, requests.RequestException):
        codes = []
    return ", ".join(codes) or f"HTTP {response.status_code}"
