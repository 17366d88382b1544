"""Images: stream to `docker load` (or `ctr -n k8s.io images import -`) only the images this
node's role needs and the runtime lacks; an image already present with the same ID is skipped.
The images of a CNI the cluster does not run (a bundle may carry flannel and calico;
installer/steps/cnichoice.py) are not loaded.

`docker load` copies its whole input under /var/lib/docker/tmp first, so the subset is written
straight from the bundle's archive into the command's stdin
(installer/format/imagearchive.py), never to a temporary file. A run killed half-way leaves
the runtime with whole images or none, and the next run loads what is still missing.

With `images.mode: registry` (docs/cluster.md) a control plane also lays the bundle's images
(every role's, less an unused CNI's) out as registry storage in REGISTRY_STORAGE
(installer/registrystore.py), each control plane its own copy, so that the registry survives
the loss of one; an image whose tag already points at its manifest there is skipped. The
registry step serves it (installer/steps/registry.py) when the bundle carries distribution's
image; then workers load nothing and containerd pulls their images through the load balancer,
while control planes keep loading theirs (the registry and the static pods run from them
before the VIP is up).
"""

import os
import time
from typing import Dict, List, Set

from installer import bundlecache, registryserve, registrystore
from installer.format import imagearchive
from installer.format.bundle import Bundle
from installer.format.bundleinfo import BundleImage, BundleInfo, read_info
from installer.format.cluster import CNIS, Cluster, Node
from installer.format.errors import PreconditionError, StepFailed
from installer.runner import Runner
from installer.steps import Action, ActionStep, Context
from installer.steps.cnichoice import chosen


def normalize(reference: str) -> str:
    """A reference as `docker images` shows it: docker.io/ and library/ dropped."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if reference.startswith(prefix):
            return reference[len(prefix):]
    return reference


def present_images(ctx: Context) -> Dict[str, str]:
    """Normalized reference -> image ID (docker) or manifest digest (containerd)."""
    return runtime_images(ctx.runner, ctx.info.runtime)


def runtime_images(runner: Runner, runtime: str) -> Dict[str, str]:
    """What the runtime holds: normalized reference -> image ID (docker) or manifest digest
    (containerd); {} when the runtime cannot be asked."""
    if runtime == "docker":
        result = runner.query(["docker", "images", "--no-trunc", "--format",
                               "{{.Repository}}:{{.Tag}} {{.ID}}"])
    else:
        result = runner.query(["ctr", "-n", "k8s.io", "images", "ls"])
    if result.returncode != 0:
        return {}
    found = {}
    for line in result.stdout.splitlines()[0 if runtime == "docker" else 1:]:
        fields = line.split()
        if runtime == "docker" and len(fields) == 2:
            found[normalize(fields[0])] = fields[1]
        elif len(fields) >= 3:
            found[normalize(fields[0])] = fields[2]
    return found


def unused_cni_images(ctx: Context) -> Set[str]:
    """The images of the CNI add-ons this cluster does not run."""
    cni = chosen(ctx)
    return {ref for name, addon in ctx.info.addons.items() if name in CNIS and name != cni
            for ref in addon.images}


def pulls_every_image(cluster: Cluster, node: Node, info: BundleInfo) -> bool:
    """A worker whose images the control planes' registry serves (images.mode registry and a
    bundle carrying distribution's image): containerd pulls every one of them, so it loads
    nothing and needs no image archive (installer/session.py leaves it out of a fetched
    bundle). Not an etcd.external host: it comes up before any control plane serves, and runs
    etcd from the archive."""
    return node.role == "worker" and cluster.images_mode == "registry" and \
        bool(registryserve.registry_image([i.reference for i in info.images]))


def fetch_leaves_out(cluster: Cluster, node: Node, bundle: Bundle) -> List[str]:
    """What a bundle fetched from the bundle server leaves out on this node
    (installer/servedsource.py `omit`): the image archive on a worker that pulls every image."""
    info = read_info(bundle.manifest, bundle.manifest_sha256)
    return [info.image_archive] if pulls_every_image(cluster, node, info) else []


def require_archive(cluster: Cluster, node: Node, bundle: Bundle, directory: str) -> None:
    """Refuse (exit 4), before any step, a cache folder fetched without the image archive
    (bundlecache.omitted) on a node that loads images from it: cluster.yaml changed to
    images.mode archive, or the node is no longer such a worker."""
    left_out = bundlecache.omitted(directory, bundle.manifest)
    if not left_out:  # every folder but a registry-mode worker's: no second read_info
        return
    lacking = [path for path in left_out if path not in fetch_leaves_out(cluster, node, bundle)]
    if lacking:
        raise PreconditionError(
            "the cache folder {} of bundle {} was fetched without {}, for a worker that pulls "
            "every image from the control planes' registry, but {} ({}, images.mode {}) loads "
            "images from it".format(directory, bundle.manifest.name, ", ".join(lacking),
                                    node.name, node.role, cluster.images_mode),
            hint="remove that folder (rm -rf {}) and run this again: the bundle is then "
                 "fetched or unpacked whole".format(directory))


def wanted_images(ctx: Context) -> List[BundleImage]:
    """The role's images less an unused CNI's and, unless images.mode is registry,
    distribution's (the recipe's "@registry", which then runs nowhere); none on a worker whose
    images the control planes' registry serves (containerd pulls them)."""
    if pulls_every_image(ctx.cluster, ctx.node, ctx.info):
        return []
    unused = unused_cni_images(ctx)
    serving = ctx.cluster.images_mode == "registry"
    return [i for i in ctx.info.images_for(ctx.node.role) if i.reference not in unused
            and (serving or not registryserve.registry_image([i.reference]))]


REGISTRY_STORAGE = "/var/lib/kubecrate/registry"


def unfed_images(ctx: Context) -> List[str]:
    """With images.mode registry, on a control plane: the bundle's images (every role's, less
    an unused CNI's) that REGISTRY_STORAGE does not serve yet; else []."""
    if ctx.cluster.images_mode != "registry" or not ctx.node.is_control_plane:
        return []
    unused = unused_cni_images(ctx)
    root = ctx.host.path(REGISTRY_STORAGE)
    unfed: List[str] = []
    for role in ("control-plane", "worker"):
        for image in ctx.info.images_for(role):
            if image.reference in unused or image.reference in unfed or \
                    registryserve.registry_image([image.reference]):
                continue  # distribution's own image runs from the runtime, never pulled
            current = registrystore.tag_link(root, image.reference)
            if current is None or (image.manifest_digest and current != image.manifest_digest):
                unfed.append(image.reference)
    return unfed


def missing_images(ctx: Context) -> List[str]:
    present = present_images(ctx)
    missing = []
    for image in wanted_images(ctx):
        have = present.get(normalize(image.reference))
        if have is None or (ctx.info.runtime == "docker" and have != image.image_id):
            missing.append(image.reference)
    return missing


class ImagesStep(ActionStep):
    name = "images"
    title = "Load the role's images into the container runtime"

    def actions(self, ctx: Context) -> List[Action]:
        wanted = wanted_images(ctx)
        missing = missing_images(ctx)
        actions = []
        if missing:
            what = "load {} image(s) ({} already present): {}".format(
                len(missing), len(wanted) - len(missing), " ".join(missing))
            actions.append(Action(what, lambda: self._load(ctx, missing, len(wanted))))
        unfed = unfed_images(ctx)
        if unfed:
            what = "lay {} image(s) out as registry storage in {}: {}".format(
                len(unfed), REGISTRY_STORAGE, " ".join(unfed))
            actions.append(Action(what, lambda: self._feed(ctx, unfed)))
        return actions

    def _feed(self, ctx: Context, unfed: List[str]) -> str:
        if ctx.host.dry_run:
            return "lay out {} image(s)".format(len(unfed))
        started = time.monotonic()
        registrystore.feed(os.path.join(ctx.bundle_dir, ctx.info.image_archive),
                           ctx.host.path(REGISTRY_STORAGE), unfed,
                           sha256=ctx.info.hashes.get(ctx.info.image_archive))
        return "laid out {} image(s) as registry storage in {:.1f}s".format(
            len(unfed), time.monotonic() - started)

    def _load(self, ctx: Context, missing: List[str], wanted: int) -> str:
        archive = os.path.join(ctx.bundle_dir, ctx.info.image_archive)
        if ctx.info.runtime == "docker":
            argv = ["docker", "load"]
        else:
            argv = ["ctr", "-n", "k8s.io", "images", "import", "-"]
        started = time.monotonic()
        ctx.runner.run(argv, stdin=lambda pipe: imagearchive.write_subset(
            archive, missing, pipe, sha256=ctx.info.hashes.get(ctx.info.image_archive)))
        if ctx.runner.dry_run:
            return "load {} image(s)".format(len(missing))
        still = missing_images(ctx)
        if still:
            raise StepFailed("{} did not leave {} with the bundle's image ID".format(
                " ".join(argv), ", ".join(still)),
                hint="see `docker images --no-trunc`; a different image under the same name "
                     "must be removed first")
        return "loaded {} image(s) in {:.1f}s ({} already present)".format(
            len(missing), time.monotonic() - started, wanted - len(missing))
