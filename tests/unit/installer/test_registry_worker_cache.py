"""images.mode registry (issue 22): a worker that pulls every image from the control planes'
registry fetches the bundle from the bundle server without its image archive
(installer/servedsource.py `omit`, installer/steps/images.py fetch_leaves_out); its cache
folder says so (bundlecache.OMITTED_NAME) and is verified as complete otherwise; a node that
would load images from such a folder is refused before any step. An etcd.external host keeps
loading etcd and pause from the archive: it comes up before any control plane serves."""

import io
import json
import os
from types import SimpleNamespace

import pytest
from lab.bundles import make_key, make_source, pack_source

from installer import bundlecache, cachecare
from installer.format import minisig
from installer.format.bundleinfo import BundleImage
from installer.format.cluster import find_node, parse_cluster
from installer.format.errors import PreconditionError, VerificationError
from installer.servedsource import ServedSource
from installer.source import CacheSource, open_source
from installer.steps import images
from tests.unit.installer.test_registry_mode import CLUSTER, REGISTRY

ARCHIVE = "images/images.tar"
DISTRIBUTION = "docker.io/library/registry:2.8.3"
PAUSE = "registry.k8s.io/pause:3.9"
ETCD = "registry.k8s.io/etcd:3.5.15-0"
EXTERNAL = REGISTRY + "etcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n"


def _image(reference, roles):
    return {"reference": reference, "config_digest": "sha256:" + "c" * 64, "size": 1,
            "roles": roles}


METADATA = {"target": {"os": "rocky", "release": "9.4", "arch": "x86_64"},
            "runtime": {"name": "containerd", "version": "1.6.33"},
            "kubernetes_version": "v1.30.14", "pause_image": PAUSE,
            "images": [_image(PAUSE, ["control-plane", "worker"]),
                       _image(ETCD, ["control-plane"]),
                       _image(DISTRIBUTION, ["control-plane"])]}


class Fetcher:
    """The bundle server's side for ServedSource: serves `folder` (a control plane's cache
    folder) and records every path asked for."""

    def __init__(self, folder, digest):
        self.folder, self.asked = folder, []
        self.prefix = "/kubecrate/v1/bundles/{}/".format(digest)

    def url(self, path):
        return "https://10.0.0.11:8447" + path

    def open(self, path):
        name = path[len(self.prefix):]
        self.asked.append(name)
        return io.BytesIO((self.folder / name).read_bytes())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A signed containerd bundle carrying distribution's image, unpacked into a control
    plane's cache (what its bundle server serves)."""
    top = tmp_path_factory.mktemp("served")
    key, _, public = make_key(top / "keys")
    packed = pack_source(make_source(top / "src"), top / "k8s.tar", key, metadata=METADATA,
                         name="k8s-1.30-el9")
    trust = minisig.parse_public_key(public.read_text())
    folder = open_source(str(packed.path)).stage(trust, str(top / "cp1")).commit()
    return SimpleNamespace(trust=trust, digest=packed.manifest_sha256, folder=folder,
                           bundle=bundlecache.load_cached(folder, trust))


def _fetch(served, root, cluster_text=REGISTRY, node="w1"):
    cluster = parse_cluster(cluster_text)
    me = find_node(cluster, [], node)
    fetcher = Fetcher(type(root)(served.folder), served.digest)
    join = SimpleNamespace(bundle_server="10.0.0.11:8447", bundle=served.digest)
    source = ServedSource(join, fetcher, omit=lambda b: images.fetch_leaves_out(cluster, me, b))
    folder = source.stage(served.trust, str(root)).commit()
    return folder, fetcher.asked, cluster, me


def test_a_registry_mode_worker_fetches_no_image_archive_and_its_cache_verifies(
        served, tmp_path):
    folder, asked, cluster, w1 = _fetch(served, tmp_path / "w1")
    assert ARCHIVE not in asked and "bin/kubeadm" in asked
    assert not os.path.exists(os.path.join(folder, ARCHIVE))
    assert json.loads(open(os.path.join(folder, bundlecache.OMITTED_NAME)).read()) == {
        "omitted": [ARCHIVE]}
    checked = CacheSource(folder).verify(served.trust)  # complete but for the archive
    assert checked.manifest_sha256 == served.digest
    images.require_archive(cluster, w1, checked, folder)  # this worker needs none
    (listed,) = cachecare.list_cache(str(tmp_path / "w1"))
    assert cachecare.as_json(listed)["without_image_archive"] is True
    # a control plane, in archive mode, fetches the whole bundle
    whole, asked, _, _ = _fetch(served, tmp_path / "cp2", node="cp1")
    assert ARCHIVE in asked and not os.path.exists(
        os.path.join(whole, bundlecache.OMITTED_NAME))
    _, asked, _, _ = _fetch(served, tmp_path / "w1-archive", cluster_text=CLUSTER)
    assert ARCHIVE in asked


def test_a_folder_without_the_archive_is_refused_where_images_are_loaded_from_it(
        served, tmp_path):
    folder, _, _, _ = _fetch(served, tmp_path / "w1")
    checked = CacheSource(folder).verify(served.trust)
    archive_mode = parse_cluster(CLUSTER)
    with pytest.raises(PreconditionError) as err:
        images.require_archive(archive_mode, find_node(archive_mode, [], "w1"), checked, folder)
    assert err.value.message == (
        "the cache folder {} of bundle k8s-1.30-el9 was fetched without images/images.tar, "
        "for a worker that pulls every image from the control planes' registry, but w1 "
        "(worker, images.mode archive) loads images from it".format(folder))
    assert err.value.hint.startswith("remove that folder (rm -rf {})".format(folder))


def test_omitted_may_name_only_the_image_archive(served, tmp_path):
    folder, _, _, _ = _fetch(served, tmp_path / "w1")
    os.unlink(os.path.join(folder, "bin/kubeadm"))  # deleted, then disguised as left out
    with open(os.path.join(folder, bundlecache.OMITTED_NAME), "w") as out:
        json.dump({"omitted": [ARCHIVE, "bin/kubeadm"]}, out)
    with pytest.raises(VerificationError) as err:
        CacheSource(folder).verify(served.trust)
    assert "omitted.json: not a list of files left out, or names another file than the " \
        "image archive images/images.tar" in err.value.message


def test_an_external_etcd_host_loads_etcd_and_pause_from_the_archive_in_registry_mode(
        tmp_path):
    """Before the fix it loaded nothing (as a worker does), so its kubelet could never start
    etcd: no control plane, hence no registry, exists before the etcd hosts are up."""
    cluster = parse_cluster(EXTERNAL)
    bundle = [BundleImage(i["reference"], i["config_digest"], 1, tuple(i["roles"]))
              for i in METADATA["images"]]
    info = SimpleNamespace(runtime="containerd", images=bundle, addons={}, pause_image=PAUSE,
                           images_for=lambda role: [bundle[0], bundle[1]])
    ctx = SimpleNamespace(cluster=cluster, node=find_node(cluster, [], "etcd1"), info=info)
    assert [i.reference for i in images.wanted_images(ctx)] == [PAUSE, ETCD]
    worker = SimpleNamespace(cluster=cluster, node=find_node(cluster, [], "w1"), info=info)
    assert images.wanted_images(worker) == []
