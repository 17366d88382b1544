"""registry: with `images.mode: registry`, each control plane serves the bundle's images from
its own registry (installer/registryserve.py) once kubeadm has made the cluster CA: the
serving certificate (issued when missing or within RENEW_DAYS of its end), config.yml and the
kubecrate-registry unit, started again when any of them changed. A bundle that carries no
distribution image (registryserve.IMAGE_REPOSITORY) serves nothing: preflight warns, this
step logs it, and every node keeps loading the archive (installer/steps/images.py).
"""

import logging
from functools import partial
from typing import List

from installer import owned, registryserve
from installer.registrystore import REGISTRY_NODE_PORT
from installer.steps import Action, ActionStep, Context

log = logging.getLogger(__name__)
RENEW_DAYS = 30  # a re-run of install issues the certificate again this long before it expires


def registry_image(ctx: Context) -> str:
    """The bundle's distribution image with images.mode registry, else ''."""
    if ctx.cluster.images_mode != "registry":
        return ""
    return registryserve.registry_image([i.reference for i in ctx.info.images]) or ""


class RegistryStep(ActionStep):
    name = "registry"
    title = "the image registry on the control planes (images.mode: registry)"

    def actions(self, ctx: Context) -> List[Action]:
        if ctx.cluster.images_mode != "registry" or not ctx.node.is_control_plane:
            return []
        image = registry_image(ctx)
        if not image:
            log.warning("images.mode: registry, but the bundle carries no %s image: no "
                        "registry is served and every node loads the image archive",
                        registryserve.IMAGE_REPOSITORY)
            return []
        host, address = ctx.host, ctx.node.address
        found = []
        if not host.exists(registryserve.CERT) or not host.exists(registryserve.KEY):
            found.append(Action("issue {} for {}".format(registryserve.CERT, address),
                                partial(self._issue, ctx)))
        elif ctx.runner.query(["openssl", "x509", "-checkend", str(RENEW_DAYS * 86400),
                               "-noout", "-in", host.path(registryserve.CERT)]).returncode:
            # expires within RENEW_DAYS (or unreadable): containerd would refuse it
            found.append(Action("issue {} again for {} (it expires within {} days)".format(
                registryserve.CERT, address, RENEW_DAYS), partial(self._issue, ctx)))
        files = ((registryserve.CONFIG, registryserve.config_yml(address)),
                 (registryserve.UNIT_FILE, registryserve.unit_text(address, image)))
        for path, text in files:
            if host.read_text(path) != text:
                found.append(Action("write " + path, partial(host.write, path, text)))
        query = ctx.runner.query
        unit = registryserve.UNIT
        if found or query(["systemctl", "is-enabled", unit]).stdout.strip() != "enabled" or \
                query(["systemctl", "is-active", unit]).stdout.strip() != "active":
            found.append(Action("start {} on {}:{}".format(unit, address, REGISTRY_NODE_PORT),
                                partial(self._start, ctx)))
        return found

    def _issue(self, ctx: Context) -> None:
        if ctx.host.dry_run:
            return
        registryserve.issue(ctx.host, ctx.runner, ctx.node.address, ctx.cluster.endpoint)

    def _start(self, ctx: Context) -> str:
        unit = registryserve.UNIT
        owned.restart_unit(ctx.host, ctx.runner, self.name, unit)
        return "started {} (https://{}:{}/v2/)".format(unit, ctx.node.address,
                                                        REGISTRY_NODE_PORT)
