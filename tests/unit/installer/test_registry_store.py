"""installer/registrystore.py on small fake images: distribution's storage layout (the real
docker-registry and containerd judge it in tests/integration/builder/registry/
test_registry_store.py), nothing linked when a blob is corrupt, containerd's hosts.toml, and
the images step laying the storage out on control planes in registry mode."""

from types import SimpleNamespace

import pytest
import tomllib

from builder.cache import Cache
from builder.registry.image_archive import write_archive
from installer.format.bundleinfo import BundleImage
from installer.format.cluster import parse_cluster
from installer.format.imagearchive import ImageArchiveError
from installer.host import Host
from installer.registrystore import V2, feed, hosts_toml, split_reference
from installer.steps import images
from tests.unit.builder.registry.test_image_archive_refusals import _image
from tests.unit.installer.test_host_steps import GOOD, FakeRunner


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


def _step_ctx(tmp_path, archive, text, node, dry_run=False):
    listing = "REF TYPE DIGEST\n" + "".join(
        "{} x {}\n".format(i.reference, i.manifest_digest) for i in archive.images)
    info = SimpleNamespace(
        runtime="containerd", addons={}, image_archive="images.tar", hashes={},
        images=tuple(BundleImage(i.reference, i.config_digest, 10, ("worker",)) for i in
                     archive.images),
        images_for=lambda role: tuple(
            BundleImage(i.reference, i.config_digest, 10, (role,), "linux/amd64",
                        i.manifest_digest) for i in archive.images
            if (role == "worker") == ("flannel" in i.reference)))
    return SimpleNamespace(
        host=Host(str(tmp_path / "root"), dry_run=dry_run), cluster=parse_cluster(text),
        node=parse_cluster(text).node(node), info=info, bundle_dir=str(archive.path.parent),
        runner=FakeRunner({("ctr", "-n", "k8s.io", "images", "ls"): (0, listing)}))


REGISTRY_CLUSTER = GOOD + "images: {mode: registry}\n"


def test_in_registry_mode_each_control_plane_lays_out_every_roles_images_once(tmp_path,
                                                                             archive):
    plan = images.ImagesStep().actions(_step_ctx(tmp_path, archive, REGISTRY_CLUSTER, "cp1",
                                                 dry_run=True))
    assert [a.what for a in plan] == [
        "lay 2 image(s) out as registry storage in /var/lib/kubecrate/registry: "
        "registry.k8s.io/pause:3.6 docker.io/flannel/flannel:v0.22.3"]
    plan[0].do()
    assert not (tmp_path / "root").exists()  # --dry-run writes nothing
    ctx = _step_ctx(tmp_path, archive, REGISTRY_CLUSTER, "cp1")
    assert images.ImagesStep().actions(ctx)[0].do().startswith("laid out 2 image(s)")
    storage = tmp_path / "root" / "var/lib/kubecrate/registry" / V2 / "repositories"
    assert (storage / "docker.io/flannel/flannel/_manifests/tags/v0.22.3/current/link").is_file()
    assert images.ImagesStep().actions(ctx) == []  # fed: nothing left to do
    for text, node in ((REGISTRY_CLUSTER, "w1"), (GOOD, "cp1")):  # workers; archive mode
        assert images.ImagesStep().actions(_step_ctx(tmp_path / node, archive, text, node)) \
            == []
