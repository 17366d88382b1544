"""builder.registry.client against the mirror world's real `docker-registry` instances, judged by
skopeo, plus a fault-injecting reverse proxy (on 127.0.0.1) in front of one of them."""

import hashlib
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml
from lab.tools import require_tool

from builder.cache import Cache
from builder.inputs.mirrors import load_preset, parse_preset
from builder.registry.client import pull_images
from builder.registry.errors import BlobCorrupt, ImageNotFound, RegistryAuthError
from builder.registry.kubeadm_images import kubeadm_images

pytestmark = pytest.mark.integration

FLANNEL = ["docker.io/flannel/flannel:v0.22.3", "docker.io/flannel/flannel-cni-plugin:v1.2.0"]
REFS = [image.reference for image in kubeadm_images("v1.23.17")] + FLANNEL
PLATFORMS = ["linux/amd64", "linux/arm64"]
FAST = {"sleep": lambda seconds: None}


@pytest.fixture(autouse=True)
def own_docker_config(tmp_path, monkeypatch):
    # anonymous unless a preset names credentials: never the developer's ~/.docker
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


@pytest.fixture(scope="module")
def presets(mirror_world):
    return {name: load_preset(path) for name, path in mirror_world.state["presets"].items()}


@pytest.fixture(scope="module")
def authfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("skopeo") / "auth.json"
    path.write_text("{}")
    return str(path)


@pytest.fixture(scope="module")
def upstream_pulls(presets, tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("cache"))
    return cache, {p: pull_images(REFS, p, presets["default"], cache) for p in PLATFORMS}


def skopeo(authfile, *args):
    argv = [require_tool("skopeo"), args[0], "--tls-verify=false", "--authfile", authfile,
            *args[1:]]
    done = subprocess.run(argv, capture_output=True, timeout=60)
    assert done.returncode == 0, f"{argv}: {done.stderr.decode()}"
    return done.stdout


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_pulled_images_match_what_the_registry_serves(upstream_pulls, platform, authfile):
    cache, pulled = upstream_pulls
    arch = platform.split("/")[1]
    assert [p.reference for p in pulled[platform]] == REFS
    for image in pulled[platform]:
        transport = f"docker://{image.source.split('://', 1)[1]}"
        tag = image.reference.rsplit(":", 1)[1]
        top = json.loads(skopeo(authfile, "inspect", "--raw", f"{transport}:{tag}"))
        [entry] = [m for m in top["manifests"] if m["platform"]["architecture"] == arch]
        assert image.manifest_digest == entry["digest"]
        raw = skopeo(authfile, "inspect", "--raw", f"{transport}@{entry['digest']}")
        manifest = json.loads(raw)
        assert sha256(raw) == image.manifest_digest
        assert cache.path(image.manifest_digest).read_bytes() == raw
        assert image.config_digest == manifest["config"]["digest"]
        assert list(image.layer_digests) == [x["digest"] for x in manifest["layers"]]
        assert list(image.layer_sizes) == [x["size"] for x in manifest["layers"]]
        config = skopeo(authfile, "inspect", "--config", "--raw", "--override-os", "linux",
                        "--override-arch", arch, f"{transport}:{tag}")
        assert sha256(config) == image.config_digest
        for digest in (image.config_digest, *image.layer_digests):
            assert sha256(cache.path(digest).read_bytes()) == digest


def test_the_aliyun_shaped_mirror_gives_identical_records(upstream_pulls, presets, tmp_path):
    _, upstream = upstream_pulls
    cache = Cache(tmp_path / "aliyun")
    for platform in PLATFORMS:
        aliyun = pull_images(REFS, platform, presets["aliyun"], cache)
        assert [p._replace(source="") for p in aliyun] == [
            p._replace(source="") for p in upstream[platform]]
        assert "/google_containers/coredns" in aliyun[REFS.index(
            "registry.k8s.io/coredns/coredns:v1.8.6")].source


def test_the_token_instance_works_anonymously(upstream_pulls, presets, mirror_world,
                                              tmp_path):
    _, upstream = upstream_pulls
    k8s = [r for r in REFS if r.startswith("registry.k8s.io/")]
    pulled = pull_images(k8s, "linux/amd64", presets["token"], Cache(tmp_path / "c"))
    token_url = mirror_world.registries["token"]
    assert all(p.source.startswith(token_url + "/") for p in pulled)
    assert [p.config_digest for p in pulled] == [p.config_digest for p in upstream["linux/amd64"]
                                                 if p.reference in k8s]


def test_the_auth_instance_with_its_ca_and_credentials(presets, tmp_path):
    [pulled] = pull_images(["registry.k8s.io/pause:3.6"], "linux/arm64", presets["auth"],
                           Cache(tmp_path / "c"))
    assert pulled.source.startswith("https://127.0.0.1:")


def test_wrong_credentials_on_the_auth_instance(mirror_world, tmp_path):
    data = yaml.safe_load(open(mirror_world.state["presets"]["auth"]))
    url = data["registries"]["registry.k8s.io"]["url"]
    config = tmp_path / "wrong.json"
    wrong = "bWlycm9yLXdvcmxkOng="  # mirror-world:x
    config.write_text(json.dumps({"auths": {url.split("://")[1]: {"auth": wrong}}}))
    data["registries"]["registry.k8s.io"]["credentials"] = {"docker_config": str(config)}
    cache = Cache(tmp_path / "c")
    with pytest.raises(RegistryAuthError) as info:
        pull_images(["registry.k8s.io/pause:3.6"], "linux/amd64",
                    parse_preset(yaml.safe_dump(data)), cache)
    assert str(config) in info.value.message and url in info.value.message
    assert "docker login" in info.value.hint
    assert not (cache.root / "sha256").exists() or not any((cache.root / "sha256").rglob("*"))


def test_a_missing_tag_names_the_image_and_the_registry(presets, mirror_world, tmp_path):
    with pytest.raises(ImageNotFound) as info:
        pull_images(["registry.k8s.io/kube-apiserver:v1.99.0"], "linux/amd64",
                    presets["default"], Cache(tmp_path / "c"), **FAST)
    assert "registry.k8s.io/kube-apiserver:v1.99.0" in info.value.message
    assert mirror_world.registries["registry.k8s.io"] in info.value.message


class FaultyProxy:
    """A reverse proxy in front of one registry: it can flip a byte of a blob, or cut the
    connection part-way through a blob once; it records each blob request's Range header."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.corrupt = set()
        self.cut = {}
        self.ranges = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                outer.handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, h):
        forward = {k: v for k, v in h.headers.items() if k.lower() in
                   ("accept", "authorization", "range", "accept-encoding")}
        upstream = requests.get(self.upstream + h.path, headers=forward, timeout=10,
                                allow_redirects=False, proxies={"http": None})
        body = upstream.content
        digest = h.path.rsplit("/", 1)[1] if "/blobs/" in h.path else None
        if digest:
            self.ranges.append((digest, h.headers.get("Range")))
            if digest in self.corrupt:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
        h.send_response(upstream.status_code)
        for key in ("Content-Type", "Docker-Content-Digest", "Content-Range",
                    "WWW-Authenticate"):
            if key in upstream.headers:
                h.send_header(key, upstream.headers[key])
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        cut = self.cut.pop(digest, None) if digest else None
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(body)


@pytest.fixture
def faulty(mirror_world, presets):
    proxy = FaultyProxy(mirror_world.registries["registry.k8s.io"])
    data = yaml.safe_load(open(mirror_world.state["presets"]["default"]))
    data["registries"]["registry.k8s.io"] = {"url": proxy.url, "insecure": True}
    yield proxy, parse_preset(yaml.safe_dump(data))
    proxy.close()


def test_a_corrupt_blob_is_refused_and_never_cached(faulty, upstream_pulls, tmp_path):
    proxy, preset = faulty
    _, upstream = upstream_pulls
    etcd = next(p for p in upstream["linux/amd64"] if p.reference.endswith("etcd:3.5.6-0"))
    bad = etcd.layer_digests[-1]
    proxy.corrupt.add(bad)
    cache = Cache(tmp_path / "c")
    with pytest.raises(BlobCorrupt) as info:
        pull_images([etcd.reference], "linux/amd64", preset, cache, **FAST)
    assert etcd.reference in info.value.message and bad in info.value.message
    assert not cache.has(bad)
    assert not [p for p in (cache.root / "sha256").rglob(".part-*")]


def test_a_blob_cut_midway_is_resumed_with_range(faulty, upstream_pulls, tmp_path):
    proxy, preset = faulty
    _, upstream = upstream_pulls
    apiserver = upstream["linux/arm64"][0]
    layer = apiserver.layer_digests[-1]
    proxy.cut[layer] = 100
    cache = Cache(tmp_path / "c")
    [pulled] = pull_images([apiserver.reference], "linux/arm64", preset, cache, **FAST)
    assert pulled._replace(source="") == apiserver._replace(source="")
    assert [r for d, r in proxy.ranges if d == layer] == [None, "bytes=100-"]
    assert sha256(cache.path(layer).read_bytes()) == layer
