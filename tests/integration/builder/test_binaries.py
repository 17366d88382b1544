"""Release binaries: fetched from the mirror world's dl.k8s.io and GitHub-release trees through
its preset and verified against the checksum files; a tiny local server plays a mirror that
serves a tampered file, a missing one, and a connection cut mid-way."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import requests

from builder.binaries import BinaryError, fetch_file, fetch_kubernetes, fetch_release
from builder.cache import Cache
from builder.inputs.mirrors import KubernetesTree, load_preset

pytestmark = pytest.mark.integration

VERSION, ARCH = "v1.23.17", "amd64"


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False
        yield s


def _cache_files(cache: Cache) -> list[str]:
    root = cache.root / "sha256"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_kube_binaries_crictl_and_cni_verify_and_land_in_the_cache(mirror_world, session,
                                                                    tmp_path):
    preset = load_preset(mirror_world.preset)
    cache = Cache(tmp_path / "cache")
    kube = fetch_kubernetes(session, preset, cache, VERSION, ARCH)
    crictl = fetch_release(session, preset, cache, "crictl", "v1.23.0", ARCH)
    cni = fetch_release(session, preset, cache, "cni", "1.1.1", ARCH)
    assert [f.name for f in kube] == ["kubeadm", "kubelet", "kubectl"]
    assert crictl.filename == "crictl-v1.23.0-linux-amd64.tar.gz"
    assert cni.filename == "cni-plugins-linux-amd64-v1.1.1.tgz" and cni.version == "v1.1.1"
    for record in [*kube, crictl, cni]:
        served = mirror_world.www / record.url.split(mirror_world.base_url + "/", 1)[1]
        assert record.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
        assert cache.path(record.sha256).read_bytes() == served.read_bytes()
        assert record.size == served.stat().st_size
        assert record.checksum_url == record.url + ".sha256"
    assert len(_cache_files(cache)) == 5


def test_the_china_shaped_preset_fetches_binaries_through_the_daocloud_prefix(
        mirror_world, session, tmp_path):
    # As manifests/mirrors/china.yaml does: files.m.daocloud.io/<upstream host>/<path>, with the
    # checksum files fetched through the same prefix (they are upstream's own).
    preset = load_preset(mirror_world.preset_aliyun)
    prefix = mirror_world.base_url + "/files.m.daocloud.io/"
    log = Path(mirror_world.state["nginx"]["access_log"])
    seen = log.stat().st_size if log.exists() else 0
    cache = Cache(tmp_path / "cache")
    kube = fetch_kubernetes(session, preset, cache, VERSION, ARCH, names=["kubeadm"])
    cni = fetch_release(session, preset, cache, "cni", "1.1.1", ARCH)
    for record, upstream in ((kube[0], "dl.k8s.io/release/v1.23.17/bin/linux/amd64/kubeadm"),
                             (cni, "github.com/containernetworking/plugins/releases/download/"
                                   "v1.1.1/cni-plugins-linux-amd64-v1.1.1.tgz")):
        assert record.url == prefix + upstream
        assert record.sha256 == hashlib.sha256((mirror_world.www / upstream).read_bytes()
                                               ).hexdigest()
    with open(log, "rb") as handle:
        handle.seek(seen)
        requested = handle.read().decode()
    for path in ("kubeadm.sha256 ", "kubeadm ", "v1.1.1.tgz.sha256 ", "v1.1.1.tgz "):
        assert any("GET /files.m.daocloud.io/" in line and path in line and '" 200 ' in line
                   for line in requested.splitlines()), (path, requested)


def test_a_cached_file_is_not_downloaded_again(mirror_world, session, tmp_path):
    preset = load_preset(mirror_world.preset)
    cache = Cache(tmp_path / "cache")
    fetch_kubernetes(session, preset, cache, VERSION, ARCH, names=["kubectl"])
    before = mirror_world.access_log.read_text().count(f"/{VERSION}/bin/linux/{ARCH}/kubectl ")
    again = fetch_kubernetes(session, preset, cache, VERSION, ARCH, names=["kubectl"])
    after = mirror_world.access_log.read_text().count(f"/{VERSION}/bin/linux/{ARCH}/kubectl ")
    assert after == before and again[0].size > 0


def test_a_version_the_mirror_lacks_names_the_url(mirror_world, session, tmp_path):
    preset = load_preset(mirror_world.preset)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BinaryError) as caught:
        fetch_kubernetes(session, preset, cache, "v1.99.0", ARCH, names=["kubeadm"])
    assert preset.kubernetes.checksum_url("v1.99.0", ARCH, "kubeadm") in caught.value.message
    assert "404" in caught.value.message
    assert _cache_files(cache) == []


def test_a_locked_digest_that_upstream_no_longer_serves_is_refused(mirror_world, session,
                                                                   tmp_path):
    preset = load_preset(mirror_world.preset)
    with pytest.raises(BinaryError, match="the lock says"):
        fetch_kubernetes(session, preset, Cache(tmp_path / "c"), VERSION, ARCH,
                         names=["kubeadm"], expected={"kubeadm": "0" * 64})


# --------------------------------------------------------------------------- a hostile mirror


class _Mirror(http.server.ThreadingHTTPServer):
    """Serves `files` {path: bytes}; a path in `cut` answers its first request with a
    Content-Length it never fulfils, then behaves; a path in `busy` answers its first request
    429 with `Retry-After: 2`. With `ranges`, a `Range: bytes=N-` request gets 206 and the rest
    of the file, as dl.k8s.io's CDN and GitHub's release storage do. `headers` records each
    request's headers."""

    def __init__(self, files: dict, cut=(), busy=(), ranges=False):
        self.files, self.cut, self.busy, self.ranges = files, set(cut), set(busy), ranges
        self.requests, self.headers = [], []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        self.server.headers.append(dict(self.headers))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if self.path in self.server.busy:
            self.server.busy.discard(self.path)
            self.send_response(429)
            self.send_header("Retry-After", "2")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        wanted = self.headers.get("Range", "")
        start = int(wanted[6:-1]) if self.server.ranges and wanted.startswith("bytes=") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        data = data[start:]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.path in self.server.cut:
            self.server.cut.discard(self.path)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile():
    servers = []

    def start(files, cut=(), **options):
        server = _Mirror(files, cut, **options)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _tree(binary: bytes, published: bytes) -> dict:
    base = f"/release/{VERSION}/bin/linux/{ARCH}/kubeadm"
    return {base: binary, base + ".sha256": hashlib.sha256(published).hexdigest().encode()}


def test_a_tampered_binary_is_refused_naming_the_url_and_nothing_is_cached(
        mirror_world, hostile, session, tmp_path):
    server = hostile(_tree(b"#!/bin/sh\necho evil\n", b"the real kubeadm"))
    preset = dataclasses.replace(load_preset(mirror_world.preset),
                                 kubernetes=KubernetesTree(server.url))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BinaryError) as caught:
        fetch_kubernetes(session, preset, cache, VERSION, ARCH, names=["kubeadm"])
    assert f"{server.url}/release/{VERSION}/bin/linux/{ARCH}/kubeadm:" in caught.value.message
    assert "nothing was cached" in caught.value.hint
    assert list((tmp_path / "cache").rglob("*.part-*")) == [] and _cache_files(cache) == []


def test_a_tampered_release_tarball_is_refused(hostile, session, tmp_path):
    name = "crictl-v1.23.0-linux-amd64.tar.gz"
    real = hashlib.sha256(b"real tarball").hexdigest()
    server = hostile({f"/{name}": b"other tarball",
                      f"/{name}.sha256": f"{real}  {name}\n".encode()})
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BinaryError, match=rf"{server.url}/{name}: downloaded bytes"):
        fetch_file(session, cache, f"{server.url}/{name}", f"{server.url}/{name}.sha256")
    assert _cache_files(cache) == []


def test_a_connection_cut_mid_way_is_retried(hostile, session, tmp_path):
    files = _tree(b"kubeadm bytes " * 1000, b"kubeadm bytes " * 1000)
    path = f"/release/{VERSION}/bin/linux/{ARCH}/kubeadm"
    server = hostile(files, cut=[path])
    cache = Cache(tmp_path / "cache")
    got = fetch_file(session, cache, server.url + path, server.url + path + ".sha256",
                     sleep=lambda _s: None)
    assert server.requests.count(path) == 2
    assert cache.path(got.sha256).read_bytes() == files[path]


def test_a_connection_cut_mid_way_resumes_where_it_stopped(hostile, session, tmp_path):
    # A dropped download goes on with Range from the byte it reached, as RPMs and registry
    # blobs do, instead of fetching the whole file again.
    files = _tree(b"kubeadm bytes " * 1000, b"kubeadm bytes " * 1000)
    path = f"/release/{VERSION}/bin/linux/{ARCH}/kubeadm"
    server = hostile(files, cut=[path], ranges=True)
    cache = Cache(tmp_path / "cache")
    got = fetch_file(session, cache, server.url + path, server.url + path + ".sha256",
                     sleep=lambda _s: None)
    asked = [h.get("Range") for p, h in zip(server.requests, server.headers) if p == path]
    assert asked == [None, f"bytes={len(files[path]) // 2}-"]
    assert cache.path(got.sha256).read_bytes() == files[path]


def test_429_is_retried_after_the_wait_the_mirror_asks_for(hostile, session, tmp_path):
    files = _tree(b"kubeadm", b"kubeadm")
    path = f"/release/{VERSION}/bin/linux/{ARCH}/kubeadm"
    server = hostile(files, busy=[path, path + ".sha256"])
    slept = []
    got = fetch_file(session, Cache(tmp_path / "c"), server.url + path,
                     server.url + path + ".sha256", sleep=slept.append)
    assert got.size == len(b"kubeadm") and slept == [2.0, 2.0]
    assert server.requests.count(path) == 2 and server.requests.count(path + ".sha256") == 2


def test_an_unreachable_mirror_names_the_url(session, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/release/{VERSION}/bin/linux/{ARCH}/kubelet"
    slept = []
    with pytest.raises(BinaryError, match="unreachable") as caught:
        fetch_file(session, Cache(tmp_path / "c"), url, url + ".sha256", sleep=slept.append)
    assert url + ".sha256" in caught.value.message
    assert len(slept) == 2  # three attempts, bounded


def test_checksum_files_in_either_upstream_form():
    from builder.binaries import parse_checksum

    hexd = "ab" * 32
    assert parse_checksum(hexd + "\n", "kubeadm", "u") == hexd
    assert parse_checksum(f"{hexd}  x.tgz\n", "x.tgz", "u") == hexd
    assert parse_checksum(f"{'cd' * 32} *y.tgz\n{hexd} *x.tgz\n", "x.tgz", "u") == hexd
    for bad in ("", "not a digest", f"{hexd}  other.tgz", f"{hexd}\n{hexd}\n"):
        with pytest.raises(BinaryError, match="^u: "):
            parse_checksum(bad, "x.tgz", "u")


def test_paths_are_what_the_world_serves(mirror_world):
    # The preset's dl.k8s.io tree is the world's: a guard that the tests above fetch real files.
    preset = load_preset(mirror_world.preset)
    url = preset.kubernetes.binary_url(VERSION, ARCH, "kubeadm")
    assert Path(mirror_world.www, url.split(mirror_world.base_url + "/", 1)[1]).is_file()
