"""Credentials for yum repos and binary mirrors (docs/mirrors.md): a netrc file, never the URL.
A loopback HTTP server asks for basic auth; the builder's fetch succeeds with $NETRC and says
what to do without it."""

import base64
import hashlib
import http.server
import threading

import pytest
import requests

from builder.binaries import BinaryError, fetch_file
from builder.cache import Cache

pytestmark = pytest.mark.integration
PAYLOAD = b"crictl release bytes\n"
USER, PASSWORD = "builder", "s3cret-pw"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mirror"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD if self.path.endswith(".tar.gz") else \
            hashlib.sha256(PAYLOAD).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:{}/crictl.tar.gz".format(server.server_address[1])
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_a_netrc_file_gives_the_mirror_its_credentials(tmp_path, mirror, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with requests.Session() as session:
        got = fetch_file(session, Cache(tmp_path / "cache"), mirror, mirror + ".sha256",
                         attempts=1)
    assert got.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and got.url == mirror
    assert PASSWORD not in got.url


def test_without_credentials_the_error_says_where_to_put_them(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with requests.Session() as session, pytest.raises(BinaryError) as err:
        fetch_file(session, Cache(tmp_path / "cache"), mirror, mirror + ".sha256", attempts=1)
    assert "HTTP 401" in err.value.message and "netrc" in err.value.hint
