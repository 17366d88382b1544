"""The bundle's image archive judged by the real readers: Docker 20.10 `docker load`,
containerd 1.6 `ctr images import` and skopeo, with images pulled by builder/registry/client.py from
the mirror world; plus the installer's streamed subsets and byte-for-byte reproducibility."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import requests
from lab.runtimes import docker_images
from lab.tools import require_tool

from builder.cache import Cache
from builder.registry.image_archive import bundle_images, write_archive
from installer.bundlecache import file_sha256
from installer.format.imagearchive import list_images, write_subset
from tests.integration.builder.registry.conftest import MTIME, pull

pytestmark = pytest.mark.integration

WORKER = ["docker.io/flannel/flannel:v0.22.3", "registry.k8s.io/kube-proxy:v1.23.17",
          "registry.k8s.io/pause:3.6"]


def _clear_docker(dockerd):
    ids = dockerd.run("images", "-aq", text=True).stdout.split()
    if ids:
        dockerd.run("rmi", "-f", *sorted(set(ids)))


def _clear_containerd(containerd):
    refs = containerd.references()
    if refs:
        containerd.ctr("images", "rm", "--sync", *refs)


def _docker_view(dockerd, refs):
    """{full reference: image ID}, asking docker by the full name it normalises."""
    out = {}
    for ref in refs:
        done = dockerd.run("image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}", ref,
                           text=True)
        image_id, digests = done.stdout.split(" ", 1)
        assert json.loads(digests) == [], "docker load must not invent RepoDigests"
        out[ref] = image_id
    return out


def test_docker_load_gives_every_reference_with_the_config_digest_as_id(dockerd, archive,
                                                                         mirror_world):
    _clear_docker(dockerd)
    dockerd.run("load", "-i", archive.path)
    expected = {im.reference: im.config_digest for im in archive.images}
    # every image the world serves (scripts/mirrorworld/images.yaml), each under its own name
    assert len(expected) == len(mirror_world.state["registry"]["images"])
    assert _docker_view(dockerd, expected) == expected
    assert len(docker_images(dockerd)) == len(expected)


def test_ctr_import_lists_every_reference(containerd, archive):
    _clear_containerd(containerd)
    containerd.ctr("images", "import", archive.path)
    assert containerd.references() == sorted(im.reference for im in archive.images)
    done = containerd.ctr("images", "ls", text=True)
    for image in archive.images:  # containerd's target is the manifest the registry served
        line = next(x for x in done.stdout.splitlines() if x.startswith(image.reference + " "))
        assert image.manifest_digest in line


def _stream_subset_into(argv, archive_path, refs):
    """Pipe write_subset() straight into a loader's stdin, as the installer does."""
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        written = write_subset(str(archive_path), refs, proc.stdin)
        proc.stdin.close()
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=300) == 0, err.decode()
    return written, out.decode()


def test_streamed_subset_loads_exactly_that_subset(dockerd, containerd, archive):
    _clear_docker(dockerd)
    written, _ = _stream_subset_into([*dockerd.client, "load"], archive.path, WORKER)
    assert [im.reference for im in written] == WORKER
    expected = {im.reference: im.config_digest for im in archive.images
                if im.reference in WORKER}
    assert _docker_view(dockerd, WORKER) == expected
    assert len(docker_images(dockerd)) == len(WORKER)

    _clear_containerd(containerd)
    _stream_subset_into([*containerd.client, "-n", "k8s.io", "images", "import", "-"],
                        archive.path, WORKER)
    assert containerd.references() == WORKER


def test_subset_holds_only_the_blobs_of_its_images(archive, tmp_path):
    out = tmp_path / "pause.tar"
    with open(out, "wb") as handle:
        write_subset(str(archive.path), ["registry.k8s.io/pause:3.6"], handle)
    listed = subprocess.run(["tar", "tf", out], capture_output=True, text=True, check=True)
    pause = next(im for im in archive.images if im.reference == "registry.k8s.io/pause:3.6")
    blobs = sorted(f"blobs/sha256/{d[7:]}" for d in
                   (pause.manifest_digest, pause.config_digest, *pause.layer_digests))
    assert listed.stdout.split() == ["oci-layout", "index.json", "manifest.json", "blobs/",
                                     "blobs/sha256/", *blobs]
    assert [im.reference for im in list_images(str(out))] == ["registry.k8s.io/pause:3.6"]
    assert out.stat().st_size < archive.size


def test_a_changed_cached_archive_is_refused_before_the_stream_ends(archive, tmp_path):
    """The image archive is hashed while it streams to the runtime: a
    mismatch raises before the tar's end marker, so `docker load` gets a truncated tar."""
    import hashlib

    from installer.format.errors import VerificationError

    signed = hashlib.sha256(archive.path.read_bytes()).hexdigest()
    out = tmp_path / "pause.tar"
    with open(out, "wb") as handle:
        write_subset(str(archive.path), ["registry.k8s.io/pause:3.6"], handle, sha256=signed)
    whole = out.read_bytes()
    with open(out, "wb") as handle, pytest.raises(VerificationError, match="images.tar in the "
                                                  "bundle cache has sha256 .* \\(changed\\)"):
        write_subset(str(archive.path), ["registry.k8s.io/pause:3.6"], handle,
                     sha256="0" * 64)
    assert whole.endswith(b"\0" * 1024) and out.read_bytes() == whole[:-1024]


def test_skopeo_reads_it_as_docker_archive_and_oci_archive(archive, tmp_path):
    skopeo = require_tool("skopeo")
    auth = tmp_path / "auth.json"
    auth.write_text("{}")
    for image in archive.images:
        done = subprocess.run([skopeo, "inspect", "--authfile", str(auth), "--raw", "--config",
                               f"docker-archive:{archive.path}:{image.reference}"],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        assert "sha256:" + hashlib.sha256(done.stdout).hexdigest() == image.config_digest
    # skopeo 1.9's OCI layout reader only considers descriptors with OCI media types
    # (containers/image oci/layout getManifestDescriptor), so the OCI-typed images are the
    # ones it can name in oci-archive:; containerd, the OCI reader that matters, takes all.
    oci = [im for im in archive.images if im.reference in (
        "registry.k8s.io/etcd:3.5.6-0", "docker.io/flannel/flannel:v0.22.3")]
    assert len(oci) == 2
    for image in oci:
        done = subprocess.run([skopeo, "inspect", "--authfile", str(auth), "--raw",
                               f"oci-archive:{archive.path}:{image.reference}"],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        assert "sha256:" + hashlib.sha256(done.stdout).hexdigest() == image.manifest_digest


def test_same_inputs_same_bytes(pulled, archive, tmp_path, monkeypatch):
    cache, images = pulled
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(MTIME))
    again = write_archive(list(reversed(images)), cache, tmp_path / "again.tar")
    assert again.sha256 == archive.sha256 == file_sha256(str(archive.path))
    assert again.path.read_bytes() == archive.path.read_bytes()


def test_pulled_through_the_aliyun_mirror_same_bytes(mirror_world, archive, tmp_path):
    cache = Cache(tmp_path / "cache")
    images = pull(mirror_world, mirror_world.preset_aliyun, cache)
    assert any("google_containers/coredns" in im.source for im in images), \
        [im.source for im in images]
    via_aliyun = write_archive(images, cache, tmp_path / "aliyun.tar", mtime=MTIME)
    assert via_aliyun.path.read_bytes() == archive.path.read_bytes()


def test_bundle_images_lists_roles(archive):
    roles = {im.reference: ["control-plane"] for im in archive.images}
    for ref in WORKER:
        roles[ref] = ["worker", "control-plane"]
    entries = bundle_images(archive, roles)
    pause = next(e for e in entries if e.reference == "registry.k8s.io/pause:3.6")
    assert pause.roles == ("control-plane", "worker")
    assert pause.platform == "linux/amd64"
    assert pause.to_json()["config_digest"] == pause.image_id
    assert pause.image_id.startswith("sha256:")


def test_registry_answers_are_what_was_archived(mirror_world, archive):
    # The image ID docker reports is the config digest the registry served, not one we made.
    session = requests.Session()
    session.trust_env = False
    entry = mirror_world.state["registry"]["instances"]["registry.k8s.io"]
    pause = next(im for im in archive.images if im.reference == "registry.k8s.io/pause:3.6")
    got = session.get(f"{entry['url']}/v2/pause/manifests/{pause.manifest_digest}", timeout=30,
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert got.status_code == 200
    assert got.json()["config"]["digest"] == pause.config_digest
    assert Path(archive.path).stat().st_size == archive.size
