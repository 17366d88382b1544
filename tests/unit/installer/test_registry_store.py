"""installer/registrystore.py on small fake images: distribution's storage layout (the real
docker-registry and containerd judge it in tests/integration/builder/registry/
test_registry_store.py), nothing linked when a blob is corrupt, and containerd's hosts.toml."""

import pytest
import tomllib

from builder.cache import Cache
from builder.registry.image_archive import write_archive
from installer.format.imagearchive import ImageArchiveError
from installer.registrystore import V2, feed, hosts_toml, split_reference
from tests.unit.builder.registry.test_image_archive_refusals import _image


@pytest.fixture
def archive(tmp_path):
    cache = Cache(tmp_path / "cache")
    images = [_image(cache, "registry.k8s.io/pause:3.6", b"pause"),
              _image(cache, "docker.io/flannel/flannel:v0.22.3", b"flannel")]
    return write_archive(images, cache, tmp_path / "images.tar", mtime=0)


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_feed_writes_distributions_layout(archive, tmp_path):
    root = tmp_path / "storage"
    images = feed(str(archive.path), str(root))
    files = _files(root)
    pause = next(i for i in images if i.reference == "registry.k8s.io/pause:3.6")
    manifest = pause.manifest_digest[7:]
    repo = V2 + "/repositories/registry.k8s.io/pause/"
    link = pause.manifest_digest.encode()
    assert files[repo + "_manifests/tags/3.6/current/link"] == link
    assert files[repo + "_manifests/tags/3.6/index/sha256/{}/link".format(manifest)] == link
    assert files[repo + "_manifests/revisions/sha256/{}/link".format(manifest)] == link
    for hexd in pause.blobs[1:]:  # config and layer
        assert files[repo + "_layers/sha256/{}/link".format(hexd)] == b"sha256:" + hexd.encode()
    blobs = {name.split("/")[-2] for name in files if name.startswith(V2 + "/blobs/sha256/")}
    assert blobs == {h for i in images for h in i.blobs}
    for name in files:
        if name.startswith(V2 + "/blobs/"):
            assert name.split("/")[-3] == name.split("/")[-2][:2] and name.endswith("/data")
    assert V2 + "/repositories/docker.io/flannel/flannel/_manifests/tags/v0.22.3/current/link" \
        in files
    feed(str(archive.path), str(root))  # again: the same files, no temporary ones left
    assert _files(root) == files


def test_a_corrupt_blob_links_nothing_and_leaves_no_partial_file(archive, tmp_path):
    data = bytearray(archive.path.read_bytes())
    pause = next(i for i in archive.images if i.reference == "registry.k8s.io/pause:3.6")
    layer = pause.layer_digests[0][7:]
    at = data.rindex(("blobs/sha256/" + layer).encode())  # its ustar header
    at = (at // 512 + 1) * 512 + 10  # inside the layer's data
    data[at] ^= 0xFF
    broken = tmp_path / "broken.tar"
    broken.write_bytes(bytes(data))
    root = tmp_path / "storage"
    with pytest.raises(ImageArchiveError, match="blob sha256:{} is corrupt".format(layer)):
        feed(str(broken), str(root))
    files = _files(root)
    assert not [n for n in files if "/repositories/" in n], files
    assert not [n for n in files if layer in n or "kubecrate-tmp" in n], files


@pytest.mark.parametrize("reference, parts", [
    ("registry.k8s.io/pause:3.6", ("registry.k8s.io", "registry.k8s.io/pause", "3.6")),
    ("docker.io/flannel/flannel:v0.22.3",
     ("docker.io", "docker.io/flannel/flannel", "v0.22.3")),
    ("registry.example:5000/team/app:1", ("registry.example:5000",
                                          "registry.example:5000/team/app", "1")),
    ("registry.k8s.io/pause@sha256:" + "a" * 64, ("registry.k8s.io", "registry.k8s.io/pause",
                                                   None)),
])
def test_split_reference(reference, parts):
    assert split_reference(reference) == parts


def test_hosts_toml_sends_pulls_to_the_registry_path_of_that_registry():
    doc = tomllib.loads(hosts_toml("registry.k8s.io", "https://10.0.0.100:5452",
                                   "/etc/kubecrate/registry/ca.crt"))
    assert doc == {"server": "https://registry.k8s.io", "host": {
        "https://10.0.0.100:5452/v2/registry.k8s.io": {
            "capabilities": ["pull", "resolve"], "ca": "/etc/kubecrate/registry/ca.crt",
            "override_path": True}}}
    hub = tomllib.loads(hosts_toml("docker.io", "https://10.0.0.100:5452", "/ca.crt"))
    assert hub["server"] == "https://registry-1.docker.io"
    assert list(hub["host"]) == ["https://10.0.0.100:5452/v2/docker.io"]
