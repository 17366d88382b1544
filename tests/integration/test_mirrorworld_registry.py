"""The mirror world's registries, judged by skopeo (a real OCI distribution client) and by the
distribution server's own auth checks."""

import gzip
import hashlib
import json
import os
import pathlib
import subprocess
import time

import pytest
import requests
from lab.tools import require_tool
from mirrorworld import images as images_mod
from mirrorworld import registry, registry_tls
from mirrorworld.registry_token import Issuer

pytestmark = pytest.mark.integration

SPEC = images_mod.load_spec()
REFS = [entry["ref"] for entry in SPEC["images"]]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    require_tool("docker-registry")
    require_tool("htpasswd")
    cache = os.environ.get("KUBECRATE_MW_CACHE")
    work = pathlib.Path(cache) if cache else tmp_path_factory.mktemp("mw-cache")
    info = registry.start(work, tmp_path_factory.mktemp("mw-run"))
    try:
        yield info, registry.generate(work)
    finally:
        registry.stop(info)


@pytest.fixture(scope="session")
def authfile(tmp_path_factory):
    # An empty auth file, so that credentials in ~/.docker or $XDG_RUNTIME_DIR never leak in.
    path = tmp_path_factory.mktemp("skopeo") / "auth.json"
    path.write_text("{}")
    return str(path)


def skopeo(authfile, *args, check=True):
    argv = [require_tool("skopeo"), *args[:1], "--authfile", authfile, *args[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc


def host(url):
    return url.split("://", 1)[1]


def generated(gen, ref):
    return next(im for im in gen["images"] if im["ref"] == ref)


def instances_for(info, ref):
    """(instance name, path:tag) for every instance serving `ref`."""
    return [(name, inst["paths"][ref]) for name, inst in info["instances"].items()
            if ref in inst["paths"] and name in ("registry.k8s.io", "docker.io", "aliyun")]


@pytest.mark.parametrize("ref", REFS)
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_every_image_resolves_to_the_requested_platform(world, authfile, ref, arch):
    info, gen = world
    image = generated(gen, ref)
    platform = next(p for p in image["manifests"] if p.split("/")[1] == arch)
    served = instances_for(info, ref)
    upstream = ref.split("/", 1)[0]
    assert upstream in [name for name, _ in served], "not under its upstream-shaped name"
    if upstream == "registry.k8s.io":
        assert "aliyun" in [name for name, _ in served], "missing from the Aliyun mirror"
    for name, path in served:
        url = f"docker://{host(info['instances'][name]['url'])}/{path}"
        out = json.loads(skopeo(authfile, "inspect", "--tls-verify=false",
                                "--override-arch", arch, "--override-os", "linux", url).stdout)
        assert out["Architecture"] == arch
        assert out["Os"] == "linux"
        # skopeo reports the digest of what the tag names (the index), and the chosen
        # platform's layers, which differ per platform.
        assert out["Digest"] == image["digest"], (name, path)
        assert out["Layers"] == image["manifests"][platform]["layers"], (name, path)


def test_aliyun_flattens_coredns_and_keeps_digests(world, authfile):
    info, gen = world
    aliyun = info["instances"]["aliyun"]
    assert (aliyun["namespace"], aliyun["flatten"]) == ("google_containers", True)
    ref = "registry.k8s.io/coredns/coredns:v1.8.6"
    assert aliyun["paths"][ref] == "google_containers/coredns:v1.8.6"
    base = host(aliyun["url"])
    nested = skopeo(authfile, "inspect", "--tls-verify=false", "--raw",
                    f"docker://{base}/google_containers/coredns/coredns:v1.8.6", check=False)
    assert nested.returncode != 0
    raw = skopeo(authfile, "inspect", "--tls-verify=false", "--raw",
                 f"docker://{base}/google_containers/coredns:v1.8.6").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == generated(gen, ref)["digest"]


@pytest.mark.parametrize("ref, arch, variant", [
    ("docker.io/library/haproxy:2.8", "arm", "v7"),
    ("docker.io/library/haproxy:2.8", "arm64", "v8"),
    ("registry.k8s.io/pause:3.6", "arm", "v7"),
])
def test_variants_are_matched(world, authfile, ref, arch, variant):
    info, gen = world
    image = generated(gen, ref)
    platform = next(p for p in image["manifests"] if p.split("/")[1] == arch)
    name, path = instances_for(info, ref)[0]
    url = f"docker://{host(info['instances'][name]['url'])}/{path}"
    out = json.loads(skopeo(authfile, "inspect", "--tls-verify=false", "--override-arch", arch,
                            "--override-variant", variant, url).stdout)
    assert out["Architecture"] == arch
    assert out["Layers"] == image["manifests"][platform]["layers"]


def test_media_types_oci_and_docker(world, authfile):
    info, _ = world
    base = host(info["instances"]["registry.k8s.io"]["url"])
    kinds = {}
    for path in ("etcd:3.5.6-0", "kube-apiserver:v1.23.17"):
        raw = json.loads(skopeo(authfile, "inspect", "--tls-verify=false", "--raw",
                                f"docker://{base}/{path}").stdout)
        kinds[path] = (raw["mediaType"], raw["manifests"][0]["mediaType"])
    assert kinds["etcd:3.5.6-0"] == (images_mod.OCI_INDEX, images_mod.OCI_MANIFEST)
    assert kinds["kube-apiserver:v1.23.17"] == (images_mod.DOCKER_LIST, images_mod.DOCKER_MANIFEST)


def test_configs_match_layers_and_base_layers_are_shared(world):
    info, gen = world
    base = info["instances"]["docker.io"]["url"]
    image = generated(gen, "docker.io/flannel/flannel:v0.22.3")
    amd64 = image["manifests"]["linux/amd64"]
    repo = "flannel/flannel"
    config = requests.get(f"{base}/v2/{repo}/blobs/{amd64['config']}", timeout=10).json()
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    diff_ids = []
    for digest in amd64["layers"]:
        blob = requests.get(f"{base}/v2/{repo}/blobs/{digest}", timeout=10).content
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == digest
        diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest())
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    other = generated(gen, "registry.k8s.io/kube-proxy:v1.23.17")["manifests"]["linux/amd64"]
    assert other["layers"][0] == amd64["layers"][0]


def test_auth_instance_needs_credentials_and_the_ca(world, authfile):
    info, _ = world
    auth = info["instances"]["auth"]
    assert auth["url"].startswith("https://127.0.0.1:")
    for path in ("pause:3.6", "kube-apiserver:v1.23.17"):
        url = f"docker://{host(auth['url'])}/{path}"
        anonymous = skopeo(authfile, "inspect", "--cert-dir", auth["cert_dir"], url, check=False)
        assert anonymous.returncode != 0
        assert "unauthorized" in anonymous.stderr.lower()
        creds = f"{auth['username']}:{auth['password']}"
        wrong = skopeo(authfile, "inspect", "--cert-dir", auth["cert_dir"], "--creds",
                       auth["username"] + ":wrong", url, check=False)
        assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()
        no_ca = skopeo(authfile, "inspect", "--creds", creds, url, check=False)
        assert no_ca.returncode != 0 and "certificate" in no_ca.stderr
        out = json.loads(skopeo(authfile, "inspect", "--cert-dir", auth["cert_dir"],
                                "--creds", creds, "--override-arch", "arm64", url).stdout)
        assert out["Architecture"] == "arm64"
    response = requests.get(auth["url"] + "/v2/", verify=auth["ca"], timeout=10,
                            auth=(auth["username"], auth["password"]))
    assert response.status_code == 200


def test_token_instance_issues_tokens_the_registry_verifies(world, authfile, tmp_path):
    info, _ = world
    tok = info["instances"]["token"]
    url = f"docker://{host(tok['url'])}/kube-apiserver:v1.23.17"
    out = json.loads(skopeo(authfile, "inspect", "--tls-verify=false", url).stdout)
    assert out["Architecture"] == "amd64"
    creds = f"{tok['username']}:{tok['password']}"
    skopeo(authfile, "inspect", "--tls-verify=false", "--creds", creds, url)
    wrong = skopeo(authfile, "inspect", "--tls-verify=false", "--creds",
                   tok["username"] + ":wrong", url, check=False)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()

    manifest = tok["url"] + "/v2/kube-apiserver/manifests/v1.23.17"
    challenge = requests.get(manifest, timeout=10)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith(f'Bearer realm="{tok["token_url"]}"')
    scope = {"service": tok["service"], "scope": "repository:kube-apiserver:pull"}
    good = requests.get(tok["token_url"], params=scope, timeout=10).json()["token"]
    accept = {"Accept": images_mod.DOCKER_LIST}
    ok = requests.get(manifest, headers={"Authorization": f"Bearer {good}", **accept}, timeout=10)
    assert ok.status_code == 200
    # Same claims signed by a key the registry does not trust: it must refuse it.
    pki = registry_tls.make_pki(tmp_path / "rogue")
    rogue = Issuer({"issuer": registry.TOKEN_ISSUER, "signer_key": pki["signer_key"],
                    "signer_cert": pki["signer_cert"]})
    forged = rogue.token("", tok["service"], [scope["scope"]])["token"]
    refused = requests.get(manifest, headers={"Authorization": f"Bearer {forged}", **accept},
                           timeout=10)
    assert refused.status_code == 401


def test_copy_round_trip_keeps_the_manifest(world, authfile, tmp_path):
    info, gen = world
    image = generated(gen, "registry.k8s.io/etcd:3.5.6-0")
    src = f"docker://{host(info['instances']['aliyun']['url'])}/google_containers/etcd:3.5.6-0"
    archive = f"oci-archive:{tmp_path / 'etcd.tar'}:registry.k8s.io/etcd:3.5.6-0"
    skopeo(authfile, "copy", "--src-tls-verify=false", "--override-arch", "arm64", src, archive)
    out = json.loads(skopeo(authfile, "inspect", archive).stdout)
    assert out["Architecture"] == "arm64"
    assert out["Digest"] == image["manifests"]["linux/arm64"]["digest"]


def test_generate_is_cached_and_deterministic(world):
    _, gen = world
    started = time.monotonic()
    warm = registry.generate(pathlib.Path(gen["htpasswd"]).parents[2])
    assert time.monotonic() - started < 1.0
    assert warm == gen
    first, _ = images_mod.build(SPEC)
    second, _ = images_mod.build(SPEC)
    assert [im.digest for im in first] == [im.digest for im in second]
    assert [im.digest for im in first] == [im["digest"] for im in gen["images"]]


def test_stop_ends_every_process(world, tmp_path):
    _, gen = world
    info = registry.start(pathlib.Path(gen["htpasswd"]).parents[2], tmp_path)
    pids = info["pids"]
    assert len(pids) == len(info["instances"]) + 1  # plus the token server
    registry.stop(info)
    for pid in pids:
        assert not registry._alive(pid)
    for entry in info["instances"].values():
        with pytest.raises(requests.ConnectionError):
            requests.get(entry["url"] + "/v2/", timeout=2, verify=False)
