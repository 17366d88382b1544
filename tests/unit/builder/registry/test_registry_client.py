"""builder.registry.client against a small in-memory registry (registry_fakes.py next to this
file)."""

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler

import pytest
import requests
import yaml

from builder.cache import Cache
from builder.inputs.mirrors import parse_preset
from builder.registry import ranges as blobranges
from builder.registry.client import pull_images
from builder.registry.errors import (
    BlobCorrupt,
    ImageNotFound,
    PlatformNotFound,
    PullFailed,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachable,
)
from tests.unit.builder.registry.registry_fakes import FakeRegistry, Server, layer, reply

FAST = {"sleep": lambda seconds: None, "timeout": (2.0, 5.0)}
REF = "registry.k8s.io/kube-apiserver:v1.23.17"


def preset_for(url, **extra):
    entry = {"url": url, "insecure": True, **extra}
    return parse_preset(yaml.safe_dump({
        "name": "fake",
        "yum": {"base": {"baseurl": "http://127.0.0.1:1/os/", "gpgkeys": [
            {"url": "http://127.0.0.1:1/key", "fingerprint": "A" * 40}]}},
        "kubernetes": {"base": "http://127.0.0.1:1"},
        "releases": {"crictl": {"url": "http://127.0.0.1:1/{version}"}},
        "registries": {"registry.k8s.io": entry, "docker.io": {"url": url, "insecure": True}},
    }))


@pytest.fixture
def registry():
    fake = FakeRegistry()
    yield fake
    fake.close()


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache")


@pytest.fixture(autouse=True)
def no_docker_config(tmp_path, monkeypatch):
    # never read the developer's own ~/.docker/config.json
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def cached_files(cache):
    root = cache.root / "sha256"
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def pull(registry, cache, refs=(REF,), platform="linux/amd64", **options):
    preset = options.pop("preset", None) or preset_for(registry.url)
    return pull_images(list(refs), platform, preset, cache, **{**FAST, **options})


def test_single_manifest_by_tag_lands_in_the_cache(registry, cache):
    image = registry.add_image("kube-apiserver", "v1.23.17")
    [pulled] = pull(registry, cache)
    assert pulled.reference == REF
    assert pulled.platform == "linux/amd64"
    assert pulled.manifest_digest == image["digest"]
    assert pulled.config_digest == image["config"]
    assert list(pulled.layer_digests) == image["layers"]
    assert pulled.source == f"{registry.url}/kube-apiserver"
    for digest in [image["digest"], image["config"], *image["layers"]]:
        assert cache.has(digest)
    assert not [n for n in cached_files(cache) if n.startswith(".part")]


@pytest.mark.parametrize("oci", [False, True])
def test_index_resolves_to_the_platform_and_skips_attestations(registry, cache, oci):
    attestation = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": "sha256:" + "1" * 64, "size": 10,
                   "platform": {"os": "unknown", "architecture": "unknown"}}
    _, images = registry.add_index("kube-apiserver", "v1.23.17",
                                   ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"], oci,
                                   extra=[attestation])
    [arm64] = pull(registry, cache, platform="linux/arm64")
    assert arm64.manifest_digest == images["linux/arm64/v8"]["digest"]
    assert arm64.platform == "linux/arm64/v8"
    [arm] = pull(registry, cache, platform="linux/arm")
    assert arm.manifest_digest == images["linux/arm/v7"]["digest"]
    with pytest.raises(PlatformNotFound, match="linux/ppc64le.*it has: linux/amd64"):
        pull(registry, cache, platform="linux/ppc64le")


def test_single_platform_image_for_another_arch_is_refused(registry, cache):
    registry.add_image("kube-apiserver", "v1.23.17", "linux/arm64")
    with pytest.raises(PlatformNotFound, match="an image for linux/arm64, not linux/amd64"):
        pull(registry, cache)


def test_pinned_digest_pull_is_served_from_the_cache(registry, cache):
    digest, _ = registry.add_index("kube-apiserver", "v1.23.17", ["linux/amd64"])
    first = pull(registry, cache, refs=[f"{REF}@{digest}"])
    registry.log.clear()
    second = pull(registry, cache, refs=[f"{REF}@{digest}"])
    assert first == second
    assert registry.log == []  # nothing fetched, not even the ping
    assert first[0].reference == REF  # the tag, never a digest-only name


def test_digest_only_reference_is_refused(registry, cache):
    with pytest.raises(RegistryError, match="needs a tag"):
        pull(registry, cache, refs=["registry.k8s.io/pause@sha256:" + "a" * 64])


def test_corrupt_blob_is_refused_and_nothing_is_kept(registry, cache):
    image = registry.add_image("kube-apiserver", "v1.23.17")
    registry.corrupt.add(image["layers"][1])
    with pytest.raises(BlobCorrupt) as info:
        pull(registry, cache)
    assert REF in info.value.message and image["layers"][1] in info.value.message
    assert not cache.has(image["layers"][1])
    assert not [n for n in cached_files(cache) if n.startswith(".part")]


def test_layer_not_matching_its_diff_id_is_refused(registry, cache):
    wrong = [layer(b"base linux/amd64", "etc/base")[1], "sha256:" + "3" * 64]
    image = registry.add_image("kube-apiserver", "v1.23.17", diff_ids=wrong)
    with pytest.raises(BlobCorrupt, match="uncompresses to"):
        pull(registry, cache)
    assert cache.has(image["layers"][0]) and not cache.has(image["layers"][1])


def test_lying_manifest_digest_header_is_refused(registry, cache):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.lie_digest = True
    with pytest.raises(BlobCorrupt, match="the registry says sha256:0000"):
        pull(registry, cache)


@pytest.mark.parametrize("ignore_range", [False, True])
def test_cut_blob_is_resumed(registry, cache, ignore_range):
    payload = os.urandom(3 << 20)  # incompressible: the layer is ~3 MiB
    image = registry.add_image("kube-apiserver", "v1.23.17", payload=payload)
    big = image["layers"][1]
    registry.cut[big] = 1 << 20
    registry.ignore_range = ignore_range
    seen = []
    [pulled] = pull(registry, cache, progress=lambda n, total: seen.append((n, total)))
    assert cache.has(big)
    ranges = [r[2].get("Range") for r in registry.requests_for(f"/blobs/{big}")]
    assert ranges[0] is None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) >= 1 << 20 or ignore_range
    # progress counts every byte once, resumed or not
    total = seen[0][1]
    assert total == sum(pulled.layer_sizes)
    assert sum(n for n, _ in seen) == total


def test_transient_errors_are_retried_then_reported(registry, cache):
    image = registry.add_image("kube-apiserver", "v1.23.17")
    registry.fail["/manifests/"] = 2
    registry.fail[image["layers"][0]] = 2
    pull(registry, cache)
    registry.fail["/manifests/"] = 100
    with pytest.raises(RegistryUnreachable, match="after 5 attempts"):
        pull(registry, Cache(cache.root.parent / "other"))


def test_missing_tag_names_the_image_and_the_url(registry, cache):
    with pytest.raises(ImageNotFound) as info:
        pull(registry, cache)
    message = info.value.message
    assert REF in message and f"{registry.url}/v2/kube-apiserver/manifests/v1.23.17" in message
    assert "MANIFEST_UNKNOWN" in message


def test_several_failures_are_reported_together(registry, cache):
    with pytest.raises(PullFailed) as info:
        pull(registry, cache, refs=[REF, "registry.k8s.io/pause:3.6"])
    assert len(info.value.errors) == 2 and "pause:3.6" in info.value.message


def test_unreachable_mirror_names_the_url(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RegistryUnreachable) as info:
        pull_images([REF], "linux/amd64", preset_for(url), cache, retries=1, **FAST)
    assert f"{url}/v2/" in info.value.message


def test_basic_auth_with_docker_config(registry, cache, tmp_path):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.basic = ("user", "secret")
    config = tmp_path / "config.json"
    host = registry.url.split("//")[1]
    config.write_text(json.dumps({"auths": {host: {"auth": "dXNlcjpzZWNyZXQ="}}}))
    preset = preset_for(registry.url, credentials={"docker_config": str(config)})
    pull(registry, cache, preset=preset)

    config.write_text(json.dumps({"auths": {host: {"auth": "dXNlcjp3cm9uZw=="}}}))  # user:wrong
    with pytest.raises(RegistryAuthError) as info:
        pull(registry, Cache(tmp_path / "c2"), preset=preset)
    assert f"auths['{host}'] in {config}" in info.value.message
    assert "docker login" in info.value.hint and "wrong" not in str(info.value)


def test_basic_auth_without_credentials_says_where_it_looked(registry, cache, tmp_path):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.basic = ("user", "secret")
    with pytest.raises(RegistryAuthError, match="none were found in .*no-docker-config"):
        pull(registry, cache)


def test_basic_auth_from_environment_variables(registry, cache, monkeypatch):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.basic = ("user", "secret")
    monkeypatch.setenv("REG_USER", "user")
    monkeypatch.setenv("REG_PASS", "secret")
    preset = preset_for(registry.url, credentials={"username_env": "REG_USER",
                                                   "password_env": "REG_PASS"})
    pull(registry, cache, preset=preset)


def test_anonymous_bearer_token(registry, cache):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.bearer = True
    pull(registry, cache)
    token_requests = registry.requests_for("/token")
    assert token_requests and "scope=repository%3Akube-apiserver%3Apull" in token_requests[0][1]
    assert "Authorization" not in token_requests[0][2]
    assert len(token_requests) == 1  # one token serves every request of the scope


def test_authorization_never_follows_a_redirect_to_another_port(registry, cache, tmp_path):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.basic = ("user", "secret")
    cdn_headers = []

    def cdn(h: BaseHTTPRequestHandler) -> None:
        cdn_headers.append(dict(h.headers))
        registry.serve_blob(h, h.path.rsplit("/", 1)[1])

    other = Server(cdn)
    try:
        registry.redirect_blobs = other.url
        config = tmp_path / "config.json"
        config.write_text(json.dumps(
            {"auths": {registry.url.split("//")[1]: {"auth": "dXNlcjpzZWNyZXQ="}}}))
        preset = preset_for(registry.url, credentials={"docker_config": str(config)})
        pull(registry, cache, preset=preset)
    finally:
        other.close()
    assert len(cdn_headers) == 3  # config and two layers, all from the other port
    assert all("Authorization" not in h for h in cdn_headers)
    blob_requests = registry.requests_for("/blobs/")
    assert blob_requests and all("Authorization" in r[2] for r in blob_requests)


def test_credential_helper_answers_for_the_mirror_host(registry, cache, tmp_path):
    registry.add_image("kube-apiserver", "v1.23.17")
    registry.basic = ("user", "secret")
    host = registry.url.split("//")[1]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {host: "fake"}}))
    calls = []

    def run(argv, input, **kwargs):
        calls.append((argv, input))
        out = json.dumps({"ServerURL": input, "Username": "user", "Secret": "secret"})
        return __import__("subprocess").CompletedProcess(argv, 0, out, "")

    preset = preset_for(registry.url, credentials={"docker_config": str(config)})
    pull(registry, cache, preset=preset, run=run)
    assert calls == [(["docker-credential-fake", "get"], host)]


def test_no_proxy_reaches_127_0_0_1_directly(registry, cache, monkeypatch):
    registry.add_image("kube-apiserver", "v1.23.17")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    pull(registry, cache)


def test_http_proxy_from_the_environment_is_used(registry, cache, monkeypatch):
    registry.add_image("kube-apiserver", "v1.23.17")
    seen = []

    def proxy(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.path)  # an absolute URL: the client asked us to forward it
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        upstream = requests.get(h.path, headers=headers, allow_redirects=False, timeout=5,
                                proxies={"http": None})
        reply(h, upstream.status_code, upstream.content,
              {k: v for k, v in upstream.headers.items()
               if k.lower() in ("content-type", "docker-content-digest", "www-authenticate")})

    server = Server(proxy)
    try:
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.setenv("http_proxy", server.url)
        pull(registry, cache)
    finally:
        server.close()
    assert seen and all(p.startswith(registry.url) for p in seen)


def test_blobs_are_fetched_in_parallel(registry, cache):
    refs = []
    for index in range(4):
        registry.add_image(f"image{index}", "v1", payload=os.urandom(1 << 16))
        refs.append(f"registry.k8s.io/image{index}:v1")
    threads = set()
    original = registry.serve_blob

    def serve(h, digest):
        threads.add(threading.get_ident())
        original(h, digest)

    registry.serve_blob = serve
    pulled = pull(registry, cache, refs=refs, workers=4)
    assert [p.reference for p in pulled] == refs
    # the shared base layer is one blob, fetched once
    base = pulled[0].layer_digests[0]
    assert all(p.layer_digests[0] == base for p in pulled)
    assert len(registry.requests_for(f"/blobs/{base}")) == 1
    assert len(threads) > 1


@pytest.mark.parametrize("ignore_range", [False, True])
def test_a_big_layer_is_fetched_in_ranges_on_several_connections(registry, cache, monkeypatch,
                                                                  ignore_range):
    monkeypatch.setattr(blobranges, "PART_MIN", 64 << 10)
    payload = os.urandom(1 << 20)  # incompressible: the layer is ~1 MiB, the base a few bytes
    image = registry.add_image("kube-apiserver", "v1.23.17", payload=payload)
    big = image["layers"][1]
    registry.ignore_range = ignore_range
    seen = []
    [pulled] = pull(registry, cache, workers=4,
                    progress=lambda n, total: seen.append((n, total)))
    assert cache.has(big) and pulled.layer_digests[1] == big
    ranges = sorted(tuple(int(x) for x in r[2]["Range"].split("=")[1].split("-"))
                    for r in registry.requests_for(f"/blobs/{big}"))
    size = pulled.layer_sizes[1]
    assert len(ranges) == 4 and ranges[0][0] == 0 and ranges[-1][1] == size - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))  # no gap, no overlap
    assert sum(n for n, _ in seen) == seen[0][1] == sum(pulled.layer_sizes)  # each byte once
    assert not [n for n in cached_files(cache) if n.startswith(".part")]


def test_a_layer_fetched_in_ranges_is_checked_whole(registry, cache, monkeypatch):
    monkeypatch.setattr(blobranges, "PART_MIN", 64 << 10)
    image = registry.add_image("kube-apiserver", "v1.23.17", payload=os.urandom(1 << 20))
    # its last byte, in the last range: only the whole blob shows it, so every range is
    # asked for once first (a flipped first byte fails the lead's gzip stream at once, and
    # a range no connection has started by then is never asked for: 3 requests, at times)
    registry.corrupt_last.add(image["layers"][1])
    with pytest.raises(BlobCorrupt) as info:
        pull(registry, cache, workers=4)
    assert image["layers"][1] in info.value.message
    assert len(registry.requests_for(f"/blobs/{image['layers'][1]}")) == 4
    assert not cache.has(image["layers"][1])
    assert not [n for n in cached_files(cache) if n.startswith(".part")]


def test_a_range_that_fails_fails_the_pull_once_and_leaves_nothing(registry, cache,
                                                                   monkeypatch):
    monkeypatch.setattr(blobranges, "PART_MIN", 64 << 10)
    image = registry.add_image("kube-apiserver", "v1.23.17", payload=os.urandom(1 << 20))
    big = image["layers"][1]
    original = registry.serve_blob

    def serve(h, digest):
        if digest == big and not h.headers.get("Range", "").startswith("bytes=0-"):
            return reply(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        original(h, digest)

    registry.serve_blob = serve
    with pytest.raises(ImageNotFound) as info:  # one error, not the same one per range
        pull(registry, cache, workers=4)
    assert big in info.value.message
    assert not cache.has(big)
    assert not [n for n in cached_files(cache) if n.startswith(".part")]


def test_part_ranges_cover_the_blob_and_leave_small_ones_whole():
    assert blobranges.part_ranges(5 << 20, 1 << 20, 8) == [(0, 5 << 20)]  # under PART_MIN
    ranges = blobranges.part_ranges(40 << 20, 10 << 20, 8)
    assert ranges == [(0, 10 << 20), (10 << 20, 20 << 20), (20 << 20, 30 << 20),
                      (30 << 20, 40 << 20)]
    assert len(blobranges.part_ranges(1 << 30, 10 << 20, 8)) == 8  # never more than the connections


def test_layer_helper_matches_gzip():
    gz, diff = layer(b"x")
    assert gz[:2] == b"\x1f\x8b" and diff.startswith("sha256:")
