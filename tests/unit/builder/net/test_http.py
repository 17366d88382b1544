"""builder.net.http against a real HTTP server on 127.0.0.1 that misbehaves on purpose: drops
the connection mid-body, answers 429/503 with Retry-After, ignores Range."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from builder.cache import Cache, DigestMismatch
from builder.net.http import (
    Policy,
    StatusError,
    TooLarge,
    Unreachable,
    download,
    fetch,
    fetch_to_cache,
    new_session,
    read_url,
    request,
)

BODY = bytes(range(256)) * 4096  # 1 MiB, every offset distinct enough to catch a bad resume


class Flaky(ThreadingHTTPServer):
    """Serves BODY at every path. `script` is a list of what the next requests get, one entry
    each: "cut" (half the body, then the connection is shut), "429"/"503" (with Retry-After
    `retry_after`), "whole" (200 and all of it, whatever the Range). Afterwards it behaves,
    Range included. `seen` records (path, Range header, User-Agent) per request."""

    daemon_threads = True

    def __init__(self, script=(), retry_after="1", ignore_range=False):
        self.script, self.retry_after, self.ignore_range = list(script), retry_after, ignore_range
        self.seen = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.seen.append((self.path, self.headers.get("Range"),
                            self.headers.get("User-Agent", "")))
        step = server.script.pop(0) if server.script else "ok"
        if self.path == "/missing":
            return self._answer(404, b'{"errors": [{"code": "NOT_HERE"}]}')
        if step in ("429", "503"):
            return self._answer(int(step), b"busy", {"Retry-After": server.retry_after})
        wanted = self.headers.get("Range", "")
        honoured = wanted and step != "whole" and not server.ignore_range
        first, _, last = wanted[len("bytes="):].partition("-") if honoured else ("0", "", "")
        start, end = int(first), int(last) + 1 if last else len(BODY)
        extra = {"Content-Range": f"bytes {start}-{end - 1}/{len(BODY)}"} if honoured else {}
        self._answer(206 if honoured else 200, BODY[start:end], extra, cut=step == "cut")

    def _answer(self, status, body, headers=None, cut=False):
        """Send `body`; with `cut`, only its first half, then shut the connection."""
        self.send_response(status)
        for key, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    started = []

    def start(*script, **options):
        started.append(Flaky(script, **options))
        threading.Thread(target=started[-1].serve_forever, args=(0.05,), daemon=True).start()
        return started[-1]

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def session():
    with new_session() as s:
        yield s


class Sink:
    def __init__(self):
        self.data = bytearray()

    @property
    def size(self):
        return len(self.data)

    def write(self, chunk):
        self.data += chunk


def quick(slept=None, **bounds):
    return Policy(sleep=(slept.append if slept is not None else lambda s: None), **bounds)


def test_a_cut_download_resumes_with_range_where_it_stopped(flaky, session):
    server = flaky("cut")
    sink, counted = Sink(), []
    download(session, server.url + "/f", sink, policy=quick(), progress=counted.append)
    assert bytes(sink.data) == BODY
    assert sum(counted) == len(BODY)  # every byte reported once
    (_, first, _), (_, second, _) = server.seen
    assert first is None and second == f"bytes={len(BODY) // 2}-"


def test_a_server_that_ignores_range_has_the_bytes_already_kept_dropped(flaky, session):
    server = flaky("cut", "whole")
    sink = Sink()
    download(session, server.url + "/f", sink, policy=quick())
    assert bytes(sink.data) == BODY and len(server.seen) == 2


class PartSink(Sink):
    """A part of a file: its size counts from the part's first byte in the file."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    @property
    def size(self):
        return self.start + len(self.data)


@pytest.mark.parametrize("script", [(), ("cut",), ("whole",)])
def test_a_part_is_fetched_from_its_start_to_its_stop(flaky, session, script):
    server = flaky(*script)
    start, stop = 1000, 300_000
    sink = PartSink(start)
    download(session, server.url + "/f", sink, size=len(BODY), stop=stop, policy=quick())
    assert bytes(sink.data) == BODY[start:stop]  # a server ignoring Range: the rest unread
    assert server.seen[0][1] == f"bytes={start}-{stop - 1}"
    if script == ("cut",):  # the part resumes within its own range
        assert server.seen[1][1] == f"bytes={start + (stop - start) // 2}-{stop - 1}"


def test_429_waits_as_long_as_retry_after_says(flaky, session):
    server = flaky("429", retry_after="3")
    slept = []
    assert fetch(session, server.url + "/f", policy=quick(slept)).data == BODY
    assert slept == [3.0] and len(server.seen) == 2


def test_retries_are_bounded_in_count_and_name_the_url(flaky, session):
    server = flaky(*["503"] * 10, retry_after="")
    slept = []
    with pytest.raises(Unreachable) as caught:
        fetch(session, server.url + "/f", policy=quick(slept, attempts=3))
    assert caught.value.message.startswith(f"{server.url}/f: no usable answer after 3 attempts")
    assert caught.value.status == 503 and len(server.seen) == 3 and len(slept) == 2
    assert 1.0 * 0.75 <= slept[0] <= 1.25 and 2.0 * 0.75 <= slept[1] <= 2.5  # doubling


def test_retries_are_bounded_in_total_waiting_time(flaky, session):
    server = flaky(*["429"] * 10, retry_after="50")
    slept = []
    with pytest.raises(Unreachable):
        fetch(session, server.url + "/f", policy=quick(slept, attempts=10, max_wait=120))
    assert slept == [50.0, 50.0] and len(server.seen) == 3  # a third wait would pass 120 s


def test_a_final_answer_is_not_retried_and_keeps_its_body(flaky, session):
    server = flaky()
    with pytest.raises(StatusError) as caught:
        fetch(session, server.url + "/missing", policy=quick())
    assert caught.value.status == 404 and b"NOT_HERE" in caught.value.body
    assert len(server.seen) == 1
    assert request(session, server.url + "/missing", policy=quick()).status_code == 404


def test_a_refused_connection_is_retried_then_named(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/f"
    slept = []
    with pytest.raises(Unreachable, match="ConnectionError") as caught:
        fetch(session, url, policy=quick(slept, attempts=2))
    assert caught.value.url == url and caught.value.status is None and len(slept) == 1


def test_a_mismatch_names_url_expected_and_got_and_leaves_nothing(flaky, session, tmp_path):
    server = flaky("cut")
    cache = Cache(tmp_path / "cache")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DigestMismatch) as caught:
        fetch_to_cache(session, cache, server.url + "/f", wrong, policy=quick())
    got = hashlib.sha256(BODY).hexdigest()
    assert caught.value.message == (f"{server.url}/f: downloaded bytes have sha256:{got}, "
                                    f"expected sha256:{wrong}")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_fetch_to_cache_keeps_the_file_only_when_the_check_passes(flaky, session, tmp_path):
    server = flaky()
    cache = Cache(tmp_path / "cache")
    digest = hashlib.sha256(BODY).hexdigest()
    seen = []

    def refuse():
        raise RuntimeError("signature bad")

    with pytest.raises(RuntimeError):
        fetch_to_cache(session, cache, server.url + "/f", digest, tee=seen.append, check=refuse,
                       policy=quick())
    assert b"".join(seen) == BODY and not cache.has(digest)
    path = fetch_to_cache(session, cache, server.url + "/f", digest, policy=quick())
    assert path.read_bytes() == BODY


def test_more_bytes_than_expected_are_refused(flaky, session):
    server = flaky()
    with pytest.raises(TooLarge):
        download(session, server.url + "/f", Sink(), size=100, policy=quick())
    with pytest.raises(TooLarge):
        fetch(session, server.url + "/f", limit=100, policy=quick())


def test_the_session_says_who_asks(flaky, session):
    server = flaky()
    fetch(session, server.url + "/f", policy=quick())
    assert server.seen[0][2].startswith("kubecrate/")


def test_proxies_come_from_the_environment(flaky, monkeypatch):
    proxy = flaky()
    for name in ("http_proxy", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with new_session() as session:
        fetch(session, "http://mirror.invalid/f", policy=quick())
    assert proxy.seen[0][0] == "http://mirror.invalid/f"  # the absolute form a proxy receives


def test_file_urls_are_read_from_disk(tmp_path):
    (tmp_path / "f").write_bytes(b"local")
    assert read_url(None, (tmp_path / "f").as_uri(), "here") == b"local"
    with pytest.raises(Exception, match="here: cannot read .*/nothing"):
        read_url(None, (tmp_path / "nothing").as_uri(), "here")
    sink = Sink()
    download(None, (tmp_path / "f").as_uri(), sink)
    assert bytes(sink.data) == b"local"


def test_an_answer_without_a_session_of_ours_still_gets_timeouts(flaky):
    server = flaky()
    calls = []

    class Recording(requests.Session):
        def request(self, *args, **kwargs):
            calls.append(kwargs.get("timeout"))
            return super().request(*args, **kwargs)

    with Recording() as plain:
        download(plain, server.url + "/f", Sink(), policy=quick())
    assert calls == [(10.0, 60.0)]


def test_pinned_urls_come_from_the_cache_and_others_from_the_network(flaky, session, tmp_path):
    from builder.net.pinned import pin_urls

    server = flaky()
    cache = Cache(tmp_path / "cache")
    digest = cache.put_bytes(b"pinned bytes")
    adapter = pin_urls(session, cache, {server.url + "/pinned": digest,
                                        server.url + "/f": "sha256:" + "0" * 64})
    sink = Sink()
    sink.write(b"pinned ")  # as if a first attempt had been cut there: the rest is asked for
    download(session, server.url + "/pinned", sink, policy=quick())
    assert bytes(sink.data) == b"pinned bytes" and adapter.served == 1
    assert fetch(session, server.url + "/f", policy=quick()).data == BODY  # blob not cached
    assert [path for path, _, _ in server.seen] == ["/f"]
