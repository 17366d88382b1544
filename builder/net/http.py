"""The builder's one HTTP transport: yum metadata and GPG keys, RPMs, release binaries and
registry manifests and blobs all move through these functions and one `requests.Session`.

    session = new_session()                        # User-Agent, pooled per host, proxies
    data = read_url(session, url, "base: repomd.xml", error=RepodataError)
    download(session, url, sink, size=n)           # streamed, resumed with Range after a cut
    fetch_to_cache(session, cache, url, sha256)    # the same into the content-addressed cache

What this module decides, so that no caller decides it again:

- timeouts: (connect, read between bytes), so a stalled mirror fails and a slow one does not;
- retries: 408, 429 and 5xx answers and refused, reset or timed-out connections are tried
  again after an exponential backoff with jitter, or after the server's `Retry-After`; bounded
  by failures in a row (a download that made progress starts counting again), by attempts in
  all, and by the total time spent waiting. Other answers are final (`StatusError`); so is a
  TLS failure (another attempt cannot fix a certificate);
- resume: a body cut short goes on with `Range: bytes=N-` where it stopped; a server that
  answers the whole file again (200) has its first N bytes dropped, so the sink sees each byte
  once (and a hash over it stays right);
- digests: `fetch_to_cache` hashes while streaming into a temporary file in the cache, which is
  renamed into place only when its SHA-256 is the one expected; a mismatch names the URL, the
  digest expected and the digest got, and leaves nothing behind;
- the session: kubecrate's User-Agent, connection pools per host large enough for the parallel
  downloads, and proxies from HTTP_PROXY/HTTPS_PROXY/NO_PROXY (requests' `trust_env`).

`file://` URLs are read from disk (mirror presets may name local trees). Registry auth (the
bearer-token dance on 401) stays in builder/registry/auth.py; it hands its authenticated
request to `request`/`fetch`/`download` as `send`.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, Type
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from builder import __version__
from builder.cache import Cache, DigestMismatch
from builder.errors import BuildError

__all__ = [
    "DEFAULT",
    "HTTPError",
    "LocalFileError",
    "Policy",
    "Reply",
    "StatusError",
    "TLSFailed",
    "TooLarge",
    "Transient",
    "Unreachable",
    "download",
    "fetch",
    "fetch_to_cache",
    "new_session",
    "read_url",
    "request",
    "retrying",
]

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 60.0)  # connect, read (between bytes): a stalled mirror fails, a slow one not
CHUNK = 1 << 20
POOL_SIZE = 16  # connections kept per host: the RPM fetcher runs 8 threads, registry pulls 8
MAX_ERROR_BODY = 64 << 10  # what is kept of a refused answer's body (registry error codes)
TRANSIENT_STATUS = frozenset((408, 429, 500, 502, 503, 504))
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
                    ConnectionError, TimeoutError)

Send = Callable[[Dict[str, str]], Any]  # extra headers -> a streamed requests.Response
Progress = Callable[[int], None]


class Policy(NamedTuple):
    """How hard one request tries. `attempts` counts failures in a row (a download that made
    progress starts again from one), `max_attempts` every attempt, `max_wait` the seconds slept
    between attempts in all; whichever is reached first ends the request."""

    attempts: int = 4
    max_attempts: int = 30
    backoff: float = 1.0  # the first wait; doubled per failure in a row, with +-25 % jitter
    max_delay: float = 8.0
    max_wait: float = 120.0
    timeout: Tuple[float, float] = TIMEOUT
    sleep: Optional[Callable[[float], None]] = None  # time.sleep (looked up when called)

    def wait(self, seconds: float) -> None:
        (self.sleep or time.sleep)(seconds)


DEFAULT = Policy()


# --------------------------------------------------------------------------- errors


class HTTPError(BuildError):
    """A URL gave no usable answer; `url` names it, `detail` says why in a few words."""

    def __init__(self, message: str, url: str, detail: str, hint: Optional[str] = None):
        super().__init__(message, hint)
        self.url, self.detail = url, detail


class StatusError(HTTPError):
    """A final (not retried) HTTP answer other than the one asked for: 404, 401, 403, ..."""

    def __init__(self, url: str, status: int, reason: str, body: bytes = b"",
                 headers: Optional[Mapping[str, str]] = None):
        super().__init__(f"{url}: HTTP {status} {reason}".rstrip(), url, f"HTTP {status}")
        self.status, self.reason, self.body = status, reason, body
        self.headers = dict(headers or {})


class Unreachable(HTTPError):
    """Every attempt failed (refused, reset, timed out, 408/429/5xx, a body cut short).
    `status` is that of the last answer (None when it was the connection), `in_body` whether
    the last failure came while the body was streaming, `received` the bytes kept."""

    def __init__(self, url: str, attempts: int, last: Transient, received: int = 0):
        super().__init__(f"{url}: no usable answer after {attempts} attempt"
                         f"{'s' if attempts != 1 else ''}: {last.detail}", url, last.detail,
                         hint="check that the mirror is up and reachable (proxy settings: "
                              "HTTPS_PROXY/NO_PROXY)")
        self.attempts, self.status, self.reason = attempts, last.status, last.reason
        self.in_body, self.received = last.in_body, received


class TLSFailed(Unreachable):
    """The TLS handshake or certificate check failed: not retried."""


class TooLarge(HTTPError):
    """The body is longer than the caller's limit (a descriptor's or repodata's size)."""

    def __init__(self, url: str, limit: int):
        super().__init__(f"{url}: the answer is longer than the {limit} bytes expected", url,
                         f"more than {limit} bytes")
        self.limit = limit


class LocalFileError(HTTPError):
    """A file:// URL that cannot be read."""


class Transient(Exception):
    """One failed attempt worth another: raised inside `retrying`'s call. `retry_after` is
    the server's wish in seconds, when it said one."""

    def __init__(self, detail: str, status: Optional[int] = None, reason: str = "",
                 retry_after: Optional[float] = None, in_body: bool = False):
        super().__init__(detail)
        self.detail, self.status, self.reason = detail, status, reason
        self.retry_after, self.in_body = retry_after, in_body


# --------------------------------------------------------------------------- session


def new_session(pool: int = POOL_SIZE) -> requests.Session:
    """The session a build, a lock or `why` uses: mirrors see which tool asks (and tests can
    tell a build's requests from others' in the servers' logs); proxies come from the
    environment, as requests reads them."""
    session = requests.Session()
    session.headers["User-Agent"] = f"kubecrate/{__version__} {requests.utils.default_user_agent()}"
    adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --------------------------------------------------------------------------- retries


class _Tries:
    """Counts one request's attempts and waits between them, within the policy's bounds."""

    def __init__(self, url: str, policy: Policy):
        self.url, self.policy = url, policy
        self.attempts = self.failures = 0
        self.waited = 0.0

    def failed(self, exc: Transient, progressed: bool = False, received: int = 0) -> None:
        """Wait before the next attempt, or raise Unreachable when a bound is reached."""
        policy = self.policy
        self.failures = 1 if progressed else self.failures + 1
        delay = exc.retry_after if exc.retry_after is not None else \
            min(policy.backoff * 2 ** (self.failures - 1), policy.max_delay) * \
            (0.75 + random.random() / 2)
        if (self.failures >= policy.attempts or self.attempts >= policy.max_attempts
                or self.waited + delay > policy.max_wait):
            raise Unreachable(self.url, self.attempts, exc, received) from None
        log.info("%s: %s (attempt %d, retrying in %.1f s)", self.url, exc.detail,
                 self.attempts, delay)
        self.waited += delay
        policy.wait(delay)


def retrying(call: Callable[[], Any], url: str, policy: Policy = DEFAULT) -> Any:
    """`call()` until it returns, trying again after a `Transient` or a dropped connection;
    Unreachable once the policy's bounds are reached, TLSFailed at once."""
    tries = _Tries(url, policy)
    while True:
        tries.attempts += 1
        try:
            return call()
        except Transient as exc:
            tries.failed(exc)


def _open(send: Send, url: str, headers: Dict[str, str]) -> Any:
    """One request: the response, or Transient for a dropped connection or a 408/429/5xx."""
    try:
        response = send(headers)
    except requests.exceptions.SSLError as exc:
        raise TLSFailed(url, 1, Transient(f"TLS failed: {exc}")) from None
    except TRANSIENT_ERRORS as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
    status = response.status_code
    if status in TRANSIENT_STATUS:
        after = _retry_after(_header(response, "Retry-After"))
        _close(response)
        raise Transient(f"HTTP {status}", status, getattr(response, "reason", "") or "", after)
    return response


def _retry_after(value: str) -> Optional[float]:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _header(response: Any, name: str) -> str:
    headers = getattr(response, "headers", None)
    return headers.get(name, "") if headers is not None else ""


def _close(response: Any) -> None:
    close = getattr(response, "close", None)
    if close is not None:
        close()


def _getter(session: Optional[requests.Session], url: str, policy: Policy,
            stream: bool = True) -> Send:
    if session is None:
        raise ValueError(f"{url}: no session to send the request with")

    def send(headers: Dict[str, str]) -> Any:
        if not headers and not stream:
            return session.get(url, timeout=policy.timeout)
        return session.get(url, headers=headers, stream=stream, timeout=policy.timeout)

    return send


def _refused(response: Any, url: str) -> StatusError:
    """The final answer as an error, with the start of its body (a registry's error codes)."""
    body = b""
    with contextlib.suppress(*TRANSIENT_ERRORS, AttributeError):
        if getattr(response, "_content", None) is False:  # streamed, not read yet
            for block in response.iter_content(CHUNK):
                body += block
                if len(body) >= MAX_ERROR_BODY:
                    break
        else:
            body = response.content or b""
    _close(response)
    return StatusError(url, response.status_code, getattr(response, "reason", "") or "",
                       body[:MAX_ERROR_BODY], getattr(response, "headers", None))


# --------------------------------------------------------------------------- requests


class Reply(NamedTuple):
    """A whole (small) body with the headers that came with it."""

    data: bytes
    headers: Mapping[str, str]
    url: str


def request(session: Optional[requests.Session], url: str, *, policy: Policy = DEFAULT,
            send: Optional[Send] = None, headers: Optional[Dict[str, str]] = None) -> Any:
    """One request retried until it gets an answer that is not 408/429/5xx; the response is
    returned whatever its status (the caller reads it: a token server's 401, a ping)."""
    send = send or _getter(session, url, policy)
    return retrying(lambda: _open(send, url, dict(headers or {})), url, policy)


def fetch(session: Optional[requests.Session], url: str, *, policy: Policy = DEFAULT,
          limit: Optional[int] = None, send: Optional[Send] = None,
          headers: Optional[Dict[str, str]] = None) -> Reply:
    """GET a whole body (200 only; StatusError otherwise), retried; TooLarge past `limit`."""
    if urlsplit(url).scheme == "file":
        data = _read_file(url)
        if limit is not None and len(data) > limit:
            raise TooLarge(url, limit)
        return Reply(data, {}, url)
    streamed = send is not None or limit is not None or bool(headers)
    send = send or _getter(session, url, policy, stream=streamed)

    def attempt() -> Reply:
        response = _open(send, url, dict(headers or {}))
        if response.status_code != 200:
            raise _refused(response, url)
        if not streamed:
            return Reply(response.content, getattr(response, "headers", {}) or {}, url)
        body = bytearray()
        with contextlib.closing(response):
            try:
                for block in response.iter_content(CHUNK):
                    body += block
                    if limit is not None and len(body) > limit:
                        raise TooLarge(url, limit)
            except TRANSIENT_ERRORS as exc:
                raise Transient(f"{type(exc).__name__}: {exc}", in_body=True) from None
            return Reply(bytes(body), response.headers, url)

    return retrying(attempt, url, policy)


def read_url(session: Optional[requests.Session], url: str, what: str, *,
             policy: Policy = DEFAULT, error: Type[BuildError] = BuildError,
             hint: Optional[str] = None) -> bytes:
    """`fetch(...).data`, its failures raised as `error("<what>: cannot fetch <url> (...)")`
    (a file:// URL: "cannot read")."""
    try:
        return fetch(session, url, policy=policy).data
    except LocalFileError as err:
        raise error(f"{what}: cannot read {url}: {err.detail}") from None
    except HTTPError as err:
        raise error(f"{what}: cannot fetch {url} ({err.detail})", hint=hint) from None


def _read_file(url: str) -> bytes:
    try:
        return Path(unquote(urlsplit(url).path)).read_bytes()
    except OSError as err:
        raise LocalFileError(f"cannot read {url}: {err.strerror}", url,
                             err.strerror or str(err)) from None


# --------------------------------------------------------------------------- downloads


def download(session: Optional[requests.Session], url: str, sink: Any, *,
             size: Optional[int] = None, policy: Policy = DEFAULT,
             progress: Optional[Progress] = None, send: Optional[Send] = None,
             stop: Optional[int] = None) -> None:
    """Stream `url` into `sink` (`.size`, the bytes it holds; `.write()`), resuming with Range
    after a cut. `size`, when known, is the whole length: more is TooLarge. With `stop`, only
    the bytes from `sink.size` up to `stop` (one part of a file fetched in parts: the sink's
    size counts from the part's first byte in the file)."""
    if urlsplit(url).scheme == "file":
        data = _read_file(url)
        if size is not None and len(data) > size:
            raise TooLarge(url, size)
        if stop is not None:
            data = data[sink.size:stop]
        for start in range(0, len(data), CHUNK):
            _give(sink, data[start:start + CHUNK], progress)
        return
    send = send or _getter(session, url, policy)
    tries = _Tries(url, policy)
    while True:
        tries.attempts += 1
        before = sink.size
        try:
            _attempt(send, url, sink, size, progress, stop)
            return
        except Transient as exc:
            tries.failed(exc, progressed=sink.size > before, received=sink.size)


def _attempt(send: Send, url: str, sink: Any, size: Optional[int],
             progress: Optional[Progress], stop: Optional[int] = None) -> None:
    start = sink.size
    # identity: Range offsets count the file's own bytes, never a re-encoding of them
    headers = {"Accept-Encoding": "identity"}
    if start or stop is not None:
        headers["Range"] = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
    response = _open(send, url, headers)
    with contextlib.closing(response):
        status, skip = response.status_code, 0
        if status == 206 and "Range" in headers:
            if not _header(response, "Content-Range").startswith(f"bytes {start}-"):
                raise Transient(f"unexpected Content-Range "
                                f"{_header(response, 'Content-Range')!r}")
        elif status == 200:
            skip = start  # the server ignored Range: drop what the sink already has
        else:
            raise _refused(response, url)
        promised = _header(response, "Content-Length")
        end = start + int(promised) if promised.isdigit() and status == 206 else \
            int(promised) if promised.isdigit() else None
        if stop is not None and end is not None:
            end = min(end, stop)
        try:
            for chunk in response.raw.stream(CHUNK, decode_content=False):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                    if not chunk:
                        continue
                if stop is not None and sink.size + len(chunk) >= stop:
                    # the part is complete; a server that ignored Range sends more, unread
                    _give(sink, chunk[:stop - sink.size], progress)
                    break
                if size is not None and sink.size + len(chunk) > size:
                    raise TooLarge(url, size)
                _give(sink, chunk, progress)
        except TRANSIENT_ERRORS as exc:
            raise Transient(f"{type(exc).__name__}: {exc}", in_body=True) from None
    # A body that ends before its Content-Length is a cut; one that ends as it said, short of
    # `size`, is what the server has: the caller's digest check refuses it, no retry can help.
    if end is not None and sink.size < end and not _header(response, "Content-Encoding"):
        raise Transient(f"connection closed after {sink.size} of {end} bytes", in_body=True)


def _give(sink: Any, chunk: bytes, progress: Optional[Progress]) -> None:
    sink.write(chunk)
    if progress is not None:
        progress(len(chunk))


class _Tee:
    """The cache writer, plus whoever else wants to see the bytes (a signature verifier)."""

    def __init__(self, writer: Any, tee: Optional[Callable[[bytes], Any]]):
        self._writer, self._tee = writer, tee

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        if self._tee is not None:
            self._tee(data)


def fetch_to_cache(session: Optional[requests.Session], cache: Cache, url: str, sha256: str,
                   *, size: Optional[int] = None, policy: Policy = DEFAULT,
                   progress: Optional[Progress] = None, send: Optional[Send] = None,
                   tee: Optional[Callable[[bytes], Any]] = None,
                   check: Optional[Callable[[], Any]] = None, hint: Optional[str] = None) -> Path:
    """Download `url` into `cache` under `sha256`, hashing while streaming; the file is
    renamed into place only when the digest matches and `check()` (given the bytes through
    `tee`) returns. A mismatch is DigestMismatch naming the URL, expected and got."""
    with cache.writer(sha256, url) as out:
        download(session, url, _Tee(out, tee), size=size, policy=policy, progress=progress,
                 send=send)
        expected, got = sha256.lower().removeprefix("sha256:"), out.hash.hexdigest()
        if got != expected:
            raise DigestMismatch(f"{url}: downloaded bytes have sha256:{got}, expected "
                                 f"sha256:{expected}",
                                 hint=hint or "the mirror serves different content than the "
                                              "lock/metadata promise; nothing was kept")
        if check is not None:
            check()
    return cache.path(sha256)
