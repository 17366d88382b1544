"""`images push FILE.tar`: a user's images into this control plane's registry storage
(images.mode registry, docs/cluster.md), where its kubecrate-registry serves them to every
node's containerd through the load balancer, as it serves the bundle's.

The tar is read and every blob checked first (installer/imagetar.py), staged in a folder
inside the storage; only then are the blobs moved into place and the images linked with
the same writer the images step feeds the bundle's images with (installer/registrystore.py),
each tag's `current` link last. A tar that is refused leaves the storage as it was.

Each control plane serves its own storage and nothing copies between them (their registries
are read only, and the installer holds no way into the other hosts), so the push is this
node's: peers() asks the other control planes' registries which of the images they lack
(installer/registrypeers.py), so that the user knows where the same command must still run
before pods use the image. Until then a pull through the load balancer that reaches one that
lacks it gets 404 and goes on to each control plane's own registry (registrystore.hosts_toml),
and the image is lost with this node.
"""

import contextlib
import glob
import os
import shutil
import tempfile
from typing import Iterator, List, NamedTuple, Optional, Tuple

from installer import imagetar, registrypeers, registryserve, registrystore
from installer.format.bundleinfo import BundleInfo, read_info
from installer.format.cluster import Cluster, Node, load_cluster
from installer.format.errors import PreconditionError, UsageError
from installer.format.manifest import parse_manifest
from installer.host import Host
from installer.registrystore import REGISTRY_CA, REGISTRY_NODE_PORT
from installer.state import STATE_PATH, HostLock, State
from installer.steps import BUNDLES_DIR

STAGING_PREFIX = ".kubecrate-push."


class Target(NamedTuple):
    node: Node
    cluster: Cluster
    info: BundleInfo
    storage: str  # the real path of this node's registry storage

    @property
    def other_control_planes(self) -> List[Node]:
        return [n for n in self.cluster.nodes if n.is_control_plane and n.name != self.node.name]


class Pushed(NamedTuple):
    reference: str
    manifest_digest: str
    new: bool  # False: the tag already pointed at this manifest here


def target(host: Host) -> Target:
    """This node as a push target, or PreconditionError saying why it is not one."""
    state = State.load(host)
    name, digest = state.data.get("node"), str(state.data.get("bundle") or "")
    raw = host.read_bytes("{}/{}/bundle.json".format(BUNDLES_DIR, digest)) if digest else None
    if not name or raw is None:
        raise PreconditionError(
            "images push runs on a control plane kubecrate installed: {} names no node or "
            "no cached bundle".format(host.path(STATE_PATH)),
            hint="run it on a control plane of a cluster with images.mode: registry")
    info = read_info(parse_manifest(raw), digest)
    if info.runtime == "docker":
        raise PreconditionError(
            "{} runs Docker (bundle {}): there is no registry to push to; images.mode "
            "registry is for containerd only, as Docker's registry-mirrors mirror Docker Hub "
            "only".format(name, info.name),
            hint="load the image on each node that runs it: `docker load -i FILE.tar`")
    path = str(state.data.get("cluster") or "")
    try:
        cluster = load_cluster(path)
    except OSError:
        raise PreconditionError("cannot read {}, the cluster.yaml install used (state.json "
                                "names it)".format(path or "cluster.yaml"),
                                hint="put it back where install read it")
    node = cluster.node(name)
    if cluster.images_mode != "registry":
        raise PreconditionError(
            "{}: images.mode is {}: the nodes load their images from the bundle's archive and "
            "no registry serves them".format(path, cluster.images_mode),
            hint="import the image on each node that runs it: `ctr -n k8s.io images import "
                 "FILE.tar`; or set images.mode: registry (docs/cluster.md) and re-run "
                 "install on every node")
    if node is None or not node.is_control_plane:
        others = ", ".join("{} ({})".format(n.name, n.address)
                           for n in cluster.nodes if n.is_control_plane)
        raise PreconditionError(
            "{} is a {}: only the control planes serve the registry".format(
                name, node.role if node else "node cluster.yaml does not list"),
            hint="run `images push FILE.tar` on each control plane: " + others)
    storage = host.path(registryserve.STORAGE)
    if not registryserve.registry_image([i.reference for i in info.images]) or \
            not os.path.isdir(storage):
        raise PreconditionError(
            "{} serves no registry: the bundle {} carries no {} image, or install has not "
            "laid out {} yet".format(name, info.name, registryserve.IMAGE_REPOSITORY,
                                     storage),
            hint="install with a containerd bundle that carries it (docs/cluster.md "
                 "\"images: mode\")")
    return Target(node, cluster, info, storage)


def peers(root: str, where: Target, pushed: List[Pushed], port: int = REGISTRY_NODE_PORT
          ) -> List[Tuple[Node, Optional[List[str]]]]:
    """Each other control plane with the pushed references its registry lacks ([] when it
    serves them all), or None when it did not answer (installer/registrypeers.py)."""
    others = where.other_control_planes
    found = registrypeers.survey([n.address for n in others],
                                 [(p.reference, p.manifest_digest) for p in pushed],
                                 Host(root).path(REGISTRY_CA), port)
    return [(node, found[node.address]) for node in others]


def check_file(path: str) -> None:
    """UsageError unless `path` is a readable tar (or gzip-compressed tar)."""
    if not os.path.isfile(path):
        raise UsageError("{}: no such file".format(path), hint=imagetar.TOOLS_HINT)
    try:
        is_tar = imagetar.is_tar(path)
    except (OSError, EOFError):
        is_tar = False
    if not is_tar:
        raise UsageError("{} is not a tar archive (docker-archive or OCI layout)".format(path),
                         hint=imagetar.TOOLS_HINT)


def push(root: str, path: str, dry_run: bool = False) -> Tuple[Target, List[Pushed]]:
    """Put the images of the tar at `path` into this control plane's registry storage (with
    `dry_run`, check them and change nothing); this node and what was pushed."""
    host = Host(root, dry_run=dry_run)
    where = target(host)
    check_file(path)
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(HostLock(host))
        staging = stack.enter_context(_staging(where.storage))
        images = imagetar.read(path, staging)
        _refuse_unserved(path, where.info, images)
        done = [Pushed(i.reference, i.manifest_digest, registrystore.tag_link(
            where.storage, i.reference) != i.manifest_digest) for i in images]
        if dry_run:
            return where, done
        for hexd in sorted({h for image in images for h in image.blobs}):
            registrystore.place_blob(where.storage, hexd, os.path.join(staging, hexd))
        for image in images:
            registrystore.link_image(where.storage, image.reference, image.manifest_digest,
                                     image.blobs)
    return where, done


@contextlib.contextmanager
def _staging(storage: str) -> Iterator[str]:
    """A folder beside the blobs (one file system: renames), removed whatever happens, and
    with it what a killed push left."""
    for stale in glob.glob(os.path.join(storage, STAGING_PREFIX + "*")):
        shutil.rmtree(stale, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=storage)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _refuse_unserved(path: str, info: BundleInfo, images: List[imagetar.TarImage]) -> None:
    """UsageError for an image the nodes' containerd would not pull through the registry
    (no hosts.toml for its registry: the runtime step writes one for each registry the
    bundle's images name), or one that would replace a bundle image with other content."""
    bundled = {i.reference: i.manifest_digest for i in info.images}
    served = sorted({registrystore.split_reference(ref)[0] for ref in bundled})
    for image in images:
        registry = registrystore.split_reference(image.reference)[0]
        if registry not in served:
            raise UsageError(
                "{}: {} is under {}, and containerd on the nodes pulls only the images of {} "
                "through the cluster's registry (their hosts.toml files)".format(
                    path, image.reference, registry, ", ".join(served)),
                hint="name it under one of those, e.g. `skopeo copy docker-archive:{0} "
                     "docker-archive:NEW.tar:docker.io/ORG/NAME:TAG`, and use that name in "
                     "the pod spec".format(path))
        if image.reference in bundled and bundled[image.reference] != image.manifest_digest:
            raise UsageError(
                "{}: {} is one of the bundle's images: another image under its name would "
                "change what every node runs".format(path, image.reference),
                hint="push it under another name or tag")
