"""The image archive writer's refusals and the installer's subset reader on small fake images
(the real readers judge the format in tests/integration/builder/registry/test_image_archive.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from builder.cache import Cache
from builder.registry.image_archive import ArchiveError, write_archive
from builder.registry.images import PulledImage
from builder.registry.mediatypes import DOCKER_LAYER, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER_ZSTD
from installer.format.imagearchive import ImageArchiveError, list_images, write_subset


def _image(cache: Cache, ref: str, content: bytes, layer_type: str = DOCKER_LAYER) -> PulledImage:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("file")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    layer_digest = cache.put_bytes(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}})
    config_digest = cache.put_bytes(config.encode())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                           "config": {"digest": config_digest, "size": len(config)},
                           "layers": [{"mediaType": layer_type, "digest": layer_digest,
                                       "size": len(layer)}]})
    return PulledImage(ref, "linux/amd64", cache.put_bytes(manifest.encode()), DOCKER_MANIFEST,
                       config_digest, (layer_digest,), (layer_type,), (len(layer),))


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache")


@pytest.fixture
def two(cache):
    return [_image(cache, "registry.k8s.io/pause:3.6", b"pause"),
            _image(cache, "docker.io/library/haproxy:2.8", b"haproxy")]


@pytest.mark.parametrize("ref", ["pause:3.6", "registry.k8s.io/pause",
                                 "registry.k8s.io/pause@sha256:" + "a" * 64, "library/x:1"])
def test_only_full_tagged_references(cache, tmp_path, ref):
    image = _image(cache, "registry.k8s.io/pause:3.6", b"x")._replace(reference=ref)
    with pytest.raises(ArchiveError, match="not a full registry/repository:tag"):
        write_archive([image], cache, tmp_path / "a.tar", mtime=0)


def test_refusals_leave_no_file(cache, tmp_path, two):
    out = tmp_path / "a.tar"
    cases = [
        ([two[0], two[0]], "listed twice"),
        ([two[0]._replace(config_digest=two[1].config_digest)], "names config"),
        ([_image(cache, "registry.k8s.io/x:1", b"z", OCI_LAYER_ZSTD)], "cannot load"),
        ([two[0]._replace(manifest_media_type=OCI_INDEX)],
         "single-platform"),
    ]
    for images, message in cases:
        with pytest.raises(ArchiveError, match=message):
            write_archive(images, cache, out, mtime=0)
    cache.path(two[1].layer_digests[0]).unlink()
    with pytest.raises(ArchiveError, match="not in the cache"):
        write_archive(two, cache, out, mtime=0)
    assert list(tmp_path.glob("*.tar*")) == [] and list(tmp_path.glob(".*")) == []


def test_a_corrupted_cache_blob_never_reaches_the_archive(cache, tmp_path, two):
    cache.path(two[1].layer_digests[0]).write_bytes(b"rotten")
    with pytest.raises(ArchiveError, match="does not hash to"):
        write_archive(two, cache, tmp_path / "a.tar", mtime=0)
    assert list(tmp_path.glob("*a.tar*")) == []


def test_shared_blobs_stored_once_and_metadata_first(cache, tmp_path):
    a = _image(cache, "registry.k8s.io/a:1", b"same")
    b = _image(cache, "registry.k8s.io/b:1", b"same")  # same layer and config, other name
    summary = write_archive([b, a], cache, tmp_path / "a.tar", mtime=0)
    with tarfile.open(summary.path) as tar:
        names = tar.getnames()
        assert all(m.uid == 0 and m.mtime == 0 and m.uname == "" for m in tar.getmembers())
    assert names[:3] == ["oci-layout", "index.json", "manifest.json"]
    assert len(names) == 5 + 3 and summary.blobs == 3
    assert [im.reference for im in summary.images] == ["registry.k8s.io/a:1",
                                                       "registry.k8s.io/b:1"]
    assert [im.reference for im in list_images(str(summary.path))] == [
        "registry.k8s.io/a:1", "registry.k8s.io/b:1"]


def test_subset_of_an_unknown_reference_suggests_a_close_one(cache, tmp_path, two):
    summary = write_archive(two, cache, tmp_path / "a.tar", mtime=0)
    with pytest.raises(ImageArchiveError) as caught:
        write_subset(str(summary.path), ["registry.k8s.io/pause:3.7"], io.BytesIO())
    assert "no registry.k8s.io/pause:3.7" in caught.value.message
    assert "registry.k8s.io/pause:3.6" in caught.value.hint


def test_subset_refuses_a_corrupt_blob(cache, tmp_path, two):
    summary = write_archive(two, cache, tmp_path / "a.tar", mtime=0)
    data = bytearray(summary.path.read_bytes())
    layer = two[0].layer_digests[0][7:]
    with tarfile.open(summary.path) as tar:
        member = tar.getmember(f"blobs/sha256/{layer}")
    data[member.offset_data] ^= 0xFF
    summary.path.write_bytes(bytes(data))
    with pytest.raises(ImageArchiveError, match=f"blob sha256:{layer} is corrupt"):
        write_subset(str(summary.path), ["registry.k8s.io/pause:3.6"], io.BytesIO())


def test_subset_refuses_links_and_strangers(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    with pytest.raises(ImageArchiveError, match="unexpected symlink"):
        list_images(str(path))


def test_subset_output_is_deterministic_and_well_formed(cache, tmp_path, two):
    summary = write_archive(two, cache, tmp_path / "a.tar", mtime=0)
    outs = []
    for _ in range(2):
        out = io.BytesIO()
        write_subset(str(summary.path), ["docker.io/library/haproxy:2.8"], out)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(outs[0])) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        index = json.load(tar.extractfile("index.json"))
    assert manifest == [{"Config": f"blobs/sha256/{two[1].config_digest[7:]}",
                         "RepoTags": ["docker.io/library/haproxy:2.8"],
                         "Layers": [f"blobs/sha256/{two[1].layer_digests[0][7:]}"]}]
    assert [m["digest"] for m in index["manifests"]] == [two[1].manifest_digest]
