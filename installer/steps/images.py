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

from installer import registryserve, registrystore
from installer.format import imagearchive
from installer.format.bundleinfo import BundleImage
from installer.format.cluster import CNIS
from installer.format.errors import StepFailed
from installer.runner import Runner
from installer.steps import Action, ActionStep, Context
from installer.steps.cnichoice import chosen
from installer.steps.registry import registry_image


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


def wanted_images(ctx: Context) -> List[BundleImage]:
    """The role's images less an unused CNI's and, unless images.mode is registry,
    distribution's (the recipe's "@registry", which then runs nowhere); none on a worker whose
    images the control planes' registry serves (containerd pulls them)."""
    if not ctx.node.is_control_plane and registry_image(ctx):
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
