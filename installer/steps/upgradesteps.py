"""The steps of `upgrade --bundle` after its preflight (installer/upgrade.py, which says the
order and why), each re-checked from the host as it is so that a re-run resumes: the install
steps that apply unchanged (unpack, images, registry, runtime, binaries) and the upgrade's
own."""

import re
import time
from functools import partial
from typing import Any, List

from installer import kubeadmconfig
from installer.format.errors import StepFailed
from installer.steps import Action, ActionStep, Context, Step, parity
from installer.steps.binaries import BinariesStep
from installer.steps.images import ImagesStep
from installer.steps.loadbalancer import ADMIN_CONF, is_first
from installer.steps.registry import RegistryStep
from installer.steps.repo import ONLY_BUNDLE, RepoStep, install_packages, missing_packages
from installer.steps.runtime import RuntimeStep
from installer.steps.unpack import UnpackStep
from installer.upgrade import (
    CP_LABEL,
    Upgrade,
    kubelet_version,
    labels_of,
    name_of,
    ready,
    unschedulable,
)

KUBEADM_TIMEOUT = 900.0
KUBELET_WAIT = 180.0  # the restarted kubelet reports its version and Ready within this
DRAINED = "/var/lib/kubecrate/upgrade-drained"  # this upgrade drained the node: uncordon it


class UpgradeStep(ActionStep):
    def __init__(self, up: Upgrade) -> None:
        self.up = up


class KubeadmPackageStep(UpgradeStep):
    name = "upgrade-kubeadm"
    title = "The new bundle's repo as the local repo; kubeadm's package and binary from it"

    def actions(self, ctx: Context) -> List[Action]:
        found = [a for a in RepoStep().actions(ctx) if not a.what.startswith("install ")]
        specs = [s for s in ctx.info.packages_for(ctx.node.role)
                 if re.match(r"^kubeadm(-\d|$)", s)]
        if specs and missing_packages(ctx, specs):
            found.append(Action("install {} from the bundle repo".format(" ".join(specs)),
                                partial(install_packages, ctx, specs)))
        found += [a for a in BinariesStep().actions(ctx)
                  if a.what.startswith("install /usr/bin/kubeadm ")]
        return found


class ControlPlaneStep(UpgradeStep):
    name = "upgrade-kubeadm-upgrade"
    title = "kubeadm upgrade plan + apply (first control plane) or kubeadm upgrade node"

    def actions(self, ctx: Context) -> List[Action]:
        up = self.up
        if ctx.node.is_control_plane:
            if up.apiserver_version() == up.target:
                return []
        elif up.kubelet_is_new():
            return []  # `upgrade node` came before the kubelet was replaced
        patches = self._patches(ctx)
        if is_first(ctx):
            apply = ["kubeadm", "upgrade", "apply", up.target, "--yes"] + patches
            return [Action("kubeadm upgrade plan, then " + " ".join(apply),
                           partial(self._apply, ctx, apply))]
        node = ["kubeadm", "upgrade", "node"] + patches
        return [Action(" ".join(node), partial(self._kubeadm, ctx, node))]

    @staticmethod
    def _patches(ctx: Context) -> List[str]:
        """`selinux: enforcing` on a control plane: kubeadm upgrade apply/node write its static
        pods anew and keep no patches from init or join (the kubeadm-config ConfigMap holds the
        ClusterConfiguration only), so each gets --patches again (cmd/kubeadm/app/cmd/upgrade
        apply.go and node.go: options.AddPatchesFlag), or the pods lose spc_t
        (docs/selinux.md#upgrades)."""
        if not (ctx.cluster.enforcing and ctx.node.is_control_plane):
            return []
        return ["--patches", kubeadmconfig.SELINUX_PATCHES_DIR]

    def _apply(self, ctx: Context, apply: List[str]) -> str:
        self._kubeadm(ctx, ["kubeadm", "upgrade", "plan"])
        self._kubeadm(ctx, apply)
        return "kubeadm upgrade apply {}".format(self.up.target)

    def _kubeadm(self, ctx: Context, argv: List[str]) -> str:
        if "--patches" in argv:  # the same files as install wrote (kept as they are)
            from installer.steps.kubeadm import selinux_patches

            selinux_patches(ctx)
        try:
            ctx.runner.run(argv, timeout=KUBEADM_TIMEOUT)
        except StepFailed as err:
            raise StepFailed("`{}` failed on {}: {}".format(" ".join(argv), ctx.node.name,
                                                            err.message.strip()),
                             hint="nothing after it ran; fix what kubeadm names and re-run "
                                  "`upgrade` (it resumes here)")
        return " ".join(argv)


class DrainStep(UpgradeStep):
    name = "upgrade-drain"
    title = "kubectl drain this node (unless --no-drain)"

    def actions(self, ctx: Context) -> List[Action]:
        up = self.up
        if not up.drain or up.kubelet_is_new() and up.reported_version() == up.target:
            return []
        if ctx.runner.dry_run and not up.admin:
            return [Action("kubectl drain {}".format(ctx.node.name), lambda: None)]
        if unschedulable(up.node()):
            return []
        return [Action("kubectl drain {} --ignore-daemonsets --delete-emptydir-data".format(
            ctx.node.name), partial(self._drain, ctx))]

    def _drain(self, ctx: Context) -> None:
        # a file of its own, written before the drain: run_steps' State would overwrite a
        # flag in state.json, and a run killed during the drain must still uncordon
        ctx.host.write(DRAINED, ctx.node.name + "\n", 0o644)
        self.up.kubectl("drain", ctx.node.name, "--ignore-daemonsets", "--delete-emptydir-data",
                        "--timeout=300s", timeout=360)


class PackagesStep(UpgradeStep):
    name = "upgrade-packages"
    title = "The role's packages from the new bundle's repo"

    def actions(self, ctx: Context) -> List[Action]:
        found = RepoStep().actions(ctx)
        names = [s for s in ctx.info.packages_for(ctx.node.role) if not re.search(r"-\d", s)]
        installed = [n for n in names if ctx.runner.query(["rpm", "-q", n]).returncode == 0]
        if installed:
            # yum's check-update exits 100 when the enabled repos hold newer packages
            newer = ctx.runner.query(["yum", "-q"] + ONLY_BUNDLE + ["check-update"] + installed,
                                     timeout=600)
            if newer.returncode == 100:
                found.append(Action("upgrade {} from the bundle repo".format(" ".join(installed)),
                                    partial(ctx.runner.run, ["yum", "-y"] + ONLY_BUNDLE +
                                            ["upgrade"] + installed, timeout=1800)))
        return found


class KubeletStep(UpgradeStep):
    name = "upgrade-kubelet"
    title = "Restart the kubelet until its Node reports the new version and Ready"

    def actions(self, ctx: Context) -> List[Action]:
        if ctx.runner.dry_run and not self.up.kubelet_is_new():
            return [Action("restart the kubelet ({})".format(self.up.target), lambda: None)]
        if self.up.reported_version() == self.up.target:
            return []
        return [Action("restart the kubelet; wait for {} to report {} and Ready".format(
            ctx.node.name, self.up.target), partial(self._restart, ctx))]

    def _restart(self, ctx: Context, sleep: Any = time.sleep) -> str:
        ctx.runner.run(["systemctl", "daemon-reload"])
        ctx.runner.run(["systemctl", "restart", "kubelet"])
        started = time.monotonic()
        while time.monotonic() - started < KUBELET_WAIT:
            node = self.up.node()
            if node and kubelet_version(node) == self.up.target and ready(node):
                return "restarted the kubelet: {} reports {} and Ready after {:.0f}s".format(
                    ctx.node.name, self.up.target, time.monotonic() - started)
            sleep(1.0)
        raise StepFailed("the kubelet on {} did not report {} and Ready within {:.0f}s".format(
            ctx.node.name, self.up.target, KUBELET_WAIT),
            hint="see `journalctl -u kubelet`; re-run `upgrade` once it runs")


class UncordonStep(UpgradeStep):
    name = "upgrade-uncordon"
    title = "kubectl uncordon this node (if the upgrade drained it)"

    def actions(self, ctx: Context) -> List[Action]:
        if ctx.runner.dry_run:  # what the drain above will need undone
            return [Action("kubectl uncordon {}".format(ctx.node.name), lambda: None)] \
                if self.up.drain and not self.up.kubelet_is_new() else []
        if not ctx.host.exists(DRAINED) or not self.up.admin:
            return []
        if not unschedulable(self.up.node()):
            return [Action("forget the drain record", partial(ctx.host.remove, DRAINED))]
        return [Action("kubectl uncordon {}".format(ctx.node.name), partial(
            self._uncordon, ctx))]

    def _uncordon(self, ctx: Context) -> None:
        self.up.kubectl("uncordon", ctx.node.name)
        ctx.host.remove(DRAINED)


class ConfigStep(UpgradeStep):
    name = "upgrade-config"
    title = "kubecrate's kept kubeadm configs to the new release's API (v1beta4 from 1.31)"

    def actions(self, ctx: Context) -> List[Action]:
        from installer.steps.kubeadm import INIT_CONFIG, JOIN_CONFIG

        found = []
        for path in (INIT_CONFIG, JOIN_CONFIG):
            text = ctx.host.read_text(path)
            new = kubeadmconfig.migrate(text, self.up.target) if text else None
            if new is not None:
                found.append(Action("migrate {} from kubeadm.k8s.io/v1beta3 to v1beta4".format(
                    path), partial(ctx.host.write, path, new, 0o600)))
        return found


class RecordStep(UpgradeStep):
    name = "upgrade-record"
    title = "The cluster's bundle record, once every control plane runs the new release"

    def actions(self, ctx: Context) -> List[Action]:
        if not ctx.node.is_control_plane or not ctx.host.exists(ADMIN_CONF):
            return []
        if ctx.runner.dry_run:
            return [Action("record bundle {} in ConfigMap kube-system/{} once every control "
                           "plane runs {}".format(ctx.info.name, parity.CONFIGMAP,
                                                  self.up.target), lambda: None)]
        if parity.cluster_bundle(ctx.runner, ctx.host.path(ADMIN_CONF)) == ctx.info.digest:
            return []
        behind = [name_of(n) for n in self.up.nodes()
                  if CP_LABEL in labels_of(n) and kubelet_version(n) != self.up.target]
        if behind:
            return []  # the last control plane to upgrade records it
        return [Action("record bundle {} in ConfigMap kube-system/{}".format(
            ctx.info.name, parity.CONFIGMAP), partial(parity.record, ctx,
                                                      ctx.host.path(ADMIN_CONF)))]


def steps(up: Upgrade) -> List[Step]:
    from installer.steps import upgradenet

    return [UnpackStep(), ImagesStep(), RegistryStep(), KubeadmPackageStep(up),
            ControlPlaneStep(up),
            upgradenet.LoadBalancerStep(up), upgradenet.CniStep(up), DrainStep(up),
            PackagesStep(up), RuntimeStep(), BinariesStep(), KubeletStep(up),
            UncordonStep(up), ConfigStep(up), RecordStep(up)]

