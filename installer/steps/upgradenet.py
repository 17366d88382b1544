"""What `upgrade --bundle` re-applies after this node's control plane is upgraded: the CNI
manifest and the static-pod load balancer, each only when what the new bundle (and this
installer) would make of it differs from what the node runs (docs/upgrades.md).

- The CNI (first control-plane node, after `kubeadm upgrade apply`, where kubernetes.io's
  "Upgrading kubeadm clusters" puts "Manually upgrade your CNI provider plugin"): the new
  bundle's flannel or calico manifest, made right for this cluster as install makes it
  (installer/steps/cni.py), applied with `kubectl apply -f` unless the digest install recorded
  (cni.STAMP) is the digest of the same text. The cluster keeps the CNI it runs: a bundle or
  cluster.yaml that would switch it is refused by the upgrade's preflight.
- The load balancer (every control plane, mode static-pods): the keepalived and haproxy static
  pods and their configs rendered again from cluster.yaml (installer/lbconfig.py); a file that
  differs is written, and the kubelet restarts that pod. Their images must be in the new
  bundle, or the kubelet would try to pull them on an air-gapped host and the VIP would go:
  preflight refuses that before anything changes.

`plan` shows both. Where the new bundle is not unpacked yet, plan decides the CNI from
bundle.json alone: the same manifest (by SHA-256) as the old bundle's is read from the old
bundle's cache folder; another one will be applied.
"""

import os
from typing import List, Optional

from installer.bundlecache import read_verified
from installer.format.bundleinfo import BundleInfo
from installer.steps import BUNDLES_DIR, Action, Context, cni
from installer.steps.cnichoice import choice_problem, chosen
from installer.steps.loadbalancer import bring_up, is_first
from installer.steps.preflight import FAIL, PASS, Finding
from installer.steps.preflight_lb import check_lb_images
from installer.steps.upgradesteps import UpgradeStep


def cni_findings(ctx: Context) -> List[Finding]:
    """The first control plane: the new bundle carries the CNI the cluster runs, and
    cluster.yaml with this bundle still chooses it."""
    if not is_first(ctx):
        return []
    problem = choice_problem(ctx)
    if problem:
        return [Finding(FAIL, "cni", problem, "set networking.cni to the CNI the cluster runs "
                        "and upgrade with a bundle that carries it (docs/cluster.md)")]
    was, now = cni.running(ctx), chosen(ctx)
    if was and was != now:
        return [Finding(FAIL, "cni", "the cluster runs {} (applied from {}), but {} with bundle "
                        "{} chooses {}: an upgrade does not switch the cluster's CNI".format(
                            was, cni.MANIFEST if was == "flannel" else cni.calico.MANIFEST,
                            ctx.cluster.source, ctx.info.name, now),
                        "set networking.cni: {} in {}".format(was, ctx.cluster.source))]
    return [Finding(PASS, "cni", "bundle {} carries the {} manifest".format(ctx.info.name,
                                                                           now))]


def lb_findings(ctx: Context) -> List[Finding]:
    """A control plane in mode static-pods whose load-balancer files would change: the new
    bundle carries the images they name."""
    if not ctx.node.is_control_plane or ctx.cluster.load_balancer.mode != "static-pods":
        return []
    if not bring_up(ctx):  # in this mode only the files' writes: none differs
        return []  # the pods keep running the images the runtime has
    return check_lb_images(ctx)


class CniStep(UpgradeStep):
    name = "upgrade-cni"
    title = "The CNI manifest again if the new bundle's differs (first control plane)"

    def actions(self, ctx: Context) -> List[Action]:
        if not is_first(ctx):
            return []
        source = cni.bundled_manifest(ctx)
        if source is None:  # preflight refused it (cni_findings)
            return []
        raw = self._raw(ctx, source)
        if raw is None and _same_file(self.up.old, ctx.info.hashes[source]):
            # plan of a walk's later step: the step before is not in the cache yet
            return [Action("apply {} unless the cluster runs the same (decided once bundle {} "
                           "is unpacked)".format(source, ctx.info.name), lambda: None)]
        if raw is None:  # plan, before the new bundle is unpacked
            return [Action("apply {} (bundle {} carries another {} manifest than bundle "
                           "{})".format(source, ctx.info.name, chosen(ctx), self.up.old.name),
                           lambda: None)]
        return cni.manifest_actions(ctx, source, raw)

    def _raw(self, ctx: Context, source: str) -> Optional[bytes]:
        """The manifest's bytes: from the new bundle, else (plan) the same bytes in the old
        bundle's cache folder; None when neither holds them."""
        digest = ctx.info.hashes[source]
        here = os.path.join(ctx.bundle_dir, source)
        if os.path.isfile(here):
            return read_verified(here, digest, source)
        old = self.up.old
        path = _same_file(old, digest)
        if path is None:
            return None
        kept = os.path.join(ctx.host.path("{}/{}".format(BUNDLES_DIR, old.digest)), path)
        return read_verified(kept, digest, path) if os.path.isfile(kept) else None


def _same_file(info: BundleInfo, digest: str) -> Optional[str]:
    for path, sha256 in info.hashes.items():
        if sha256 == digest and path.startswith("addons/"):
            return path
    return None


class LoadBalancerStep(UpgradeStep):
    name = "upgrade-loadbalancer"
    title = "The static-pod load balancer's manifests and configs again if they differ " \
        "(control planes, mode static-pods)"

    def actions(self, ctx: Context) -> List[Action]:
        if not ctx.node.is_control_plane or ctx.cluster.load_balancer.mode != "static-pods":
            return []
        return bring_up(ctx)
