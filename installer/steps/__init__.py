"""The install steps, in order, each a module with a Step whose check() says what apply() would
change (nothing: the host already is so) and whose apply() makes those changes.

run_steps() is the one loop behind `install`, `plan` and `--dry-run`: it checks every step,
applies those with pending changes (unless planning) and records each completed step in
state.json. Re-running is always safe: a completed step checks clean and is skipped, so a run
killed half-way resumes where it stopped and an installed host changes nothing.
"""

import hashlib
import os
from typing import Callable, List, NamedTuple, Optional

from installer.etcdcerts import EtcdCerts
from installer.format.bundleinfo import BundleInfo
from installer.format.cluster import Cluster, Node
from installer.format.errors import PreconditionError
from installer.format.minisig import Trust
from installer.host import Host
from installer.joinfile import JoinInfo
from installer.runner import Runner
from installer.source import Staged
from installer.state import State

BUNDLES_DIR = "/var/lib/kubecrate/bundles"


class Context:
    """Everything a step may use: the host, the runner, the cluster, this node and the bundle."""

    def __init__(self, host: Host, runner: Runner, cluster: Cluster, node: Node,
                 info: BundleInfo, bundle_path: str, key: Trust,
                 source_dir: Optional[str] = None, join: Optional[JoinInfo] = None,
                 join_out: Optional[str] = None, staged: Optional[Staged] = None,
                 etcd_certs: Optional[EtcdCerts] = None,
                 etcd_certs_path: Optional[str] = None) -> None:
        self.host = host
        self.runner = runner
        self.cluster = cluster
        self.node = node
        self.info = info
        self.bundle_path = bundle_path
        self.key = key
        # A folder holding at least bundle.json, repodata and keys (preflight's view); the
        # unpack step replaces it by the full cache folder.
        self.source_dir = source_dir
        self.join = join  # the JoinInfo of `install --join join.yaml`, if given
        self.join_out = join_out  # where `install --join-out` wants the first node's join.yaml
        # install: the bundle read once into a staging folder (installer/source.Staged) that
        # the unpack step commits into the cache; None for plan, preflight and --dry-run
        self.staged = staged
        # etcd.external: the etcd CA file of `install --etcd-certs` (installer/etcdcerts.py)
        self.etcd_certs = etcd_certs
        self.etcd_certs_path = etcd_certs_path

    @property
    def bundle_host_dir(self) -> str:
        """Where the unpacked bundle lives, as the host sees it."""
        return "{}/{}".format(BUNDLES_DIR, self.info.digest)

    @property
    def bundle_dir(self) -> str:
        """The unpacked bundle's real path."""
        return self.host.path(self.bundle_host_dir)

    def join_info(self) -> JoinInfo:
        """The join.yaml of `install --join`, where a step cannot go on without it (preflight
        requires it on every node that joins)."""
        if self.join is None:
            raise PreconditionError("{} joins an existing cluster: install needs --join "
                                    "join.yaml".format(self.node.name),
                                    hint="run `kubecrate-installer.pyz join-info --out "
                                         "join.yaml` on a control-plane node")
        return self.join

    def unpacked(self) -> bool:
        return os.path.isfile(os.path.join(self.bundle_dir, "bundle.json"))

    def inputs(self) -> str:
        """What a recorded step was done for: this bundle, this node, this cluster.yaml."""
        text = "{}\n{}\n{!r}".format(self.info.digest, self.node, tuple(self.cluster[1:]))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Step:
    """One ordered install step. Subclasses set name and title and implement both methods."""

    name = ""
    title = ""

    def check(self, ctx: Context) -> List[str]:
        """What apply() would change, one line each; empty when nothing needs doing."""
        raise NotImplementedError

    def apply(self, ctx: Context) -> List[str]:
        """Make the changes check() reported; returns what changed."""
        raise NotImplementedError


class Action(NamedTuple):
    what: str  # one line for plan and the install report
    do: Callable[[], object]


class ActionStep(Step):
    """A step that works out, from the host as it is, the actions still needed."""

    def actions(self, ctx: Context) -> List[Action]:
        raise NotImplementedError

    def check(self, ctx: Context) -> List[str]:
        return [action.what for action in self.actions(ctx)]

    def apply(self, ctx: Context) -> List[str]:
        done = []
        for action in self.actions(ctx):
            outcome = action.do()
            done.append(outcome if isinstance(outcome, str) else action.what)
        return done


class StepReport(NamedTuple):
    name: str
    title: str
    changes: List[str]  # done (install) or pending (plan / dry-run)


def all_steps(host_only: bool = False, etcd_host: bool = False) -> List[Step]:
    """The install steps after preflight, in order; `host_only` stops after the host
    preparation (binaries), before the load balancer, kubeadm and the CNI. An `etcd_host`
    (etcd.external) has etcd's static pod after the host preparation, and nothing else."""
    from installer.steps import (
        binaries,
        bundleserver,
        cni,
        etcdhost,
        hostprep,
        images,
        kubeadm,
        loadbalancer,
        registry,
        repo,
        runtime,
        timesync,
        unpack,
    )

    steps = [unpack.UnpackStep(), hostprep.HostPrepStep(), repo.RepoStep(),
             timesync.TimeStep(), runtime.RuntimeStep(), images.ImagesStep(),
             binaries.BinariesStep()]  # type: List[Step]
    if etcd_host and not host_only:
        steps.append(etcdhost.EtcdHostStep())
    elif not host_only:
        steps += [loadbalancer.LoadBalancerStep(), kubeadm.KubeadmStep(),
                  registry.RegistryStep(), cni.CniStep(), bundleserver.BundleServerStep()]
    return steps


def run_steps(ctx: Context, steps: List[Step], state: Optional[State] = None,
              apply: bool = True, progress: Optional[Callable[[str], None]] = None
              ) -> List[StepReport]:
    """Check each step and, when `apply`, apply the pending ones and record them in `state`.
    With apply=False (plan) later steps are checked against the host as it is now."""
    reports = []
    say = progress or (lambda line: None)
    for step in steps:
        pending = step.check(ctx)
        if pending and apply:
            say("{}: {} change(s)".format(step.name, len(pending)))
            done = step.apply(ctx) or pending
        else:
            done = pending
        if apply and state is not None and not ctx.host.dry_run:
            state.record(step.name, ctx.inputs(), len(done))
        reports.append(StepReport(step.name, step.title, list(done)))
    return reports
