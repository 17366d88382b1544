"""The core behind `preflight`, `plan`, `install`, `status` and `reset --host`: one function
each, called by the thin click commands in installer/cli.py. Nothing here prints or exits."""

import contextlib
import json
import os
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

from installer import minisig
from installer.bundleinfo import open_for_preflight, read_info
from installer.cluster import find_node, load_cluster
from installer.errors import UsageError
from installer.host import Host
from installer.manifest import parse_manifest
from installer.runner import Runner
from installer.state import HostLock, State
from installer.steps import BUNDLES_DIR, Context, StepReport, all_steps, run_steps
from installer.steps.preflight import Finding, run_preflight

HOST_STEPS = ("preflight", "unpack", "host-prep", "local-repo", "runtime", "images", "binaries")


class Options(NamedTuple):
    bundle_path: str
    cluster_path: str
    key: minisig.PublicKey
    root: str = "/"
    node_name: Optional[str] = None
    dry_run: bool = False
    echo: Optional[Callable[[str], None]] = None  # dry-run lines and progress


class Outcome(NamedTuple):
    node: str
    role: str
    bundle: str
    findings: List[Finding]
    preflight_skipped: bool  # install on a host where preflight already passed
    steps: List[StepReport]

    @property
    def changes(self) -> int:
        return sum(len(step.changes) for step in self.steps)


@contextlib.contextmanager
def open_context(options: Options) -> Iterator[Context]:
    """Load cluster.yaml, verify the bundle (writing nothing) and find this host's node."""
    cluster = load_cluster(options.cluster_path)
    host = Host(options.root, dry_run=options.dry_run)
    runner = Runner(options.root, dry_run=options.dry_run, echo=options.echo)
    node = find_node(cluster, host.probes.addresses(), options.node_name)
    if not os.path.isfile(options.bundle_path):
        raise UsageError("bundle {} does not exist".format(options.bundle_path))
    with open_for_preflight(options.bundle_path, options.key, options.root) as opened:
        yield Context(host, runner, cluster, node, opened.info, options.bundle_path,
                      options.key, opened.directory)


def preflight(options: Options) -> Outcome:
    """Every host check; raises PreconditionError (exit 4) when one fails. Writes nothing."""
    with open_context(options._replace(dry_run=True)) as ctx:
        found = run_preflight(ctx)
        return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, False, [])


def plan(options: Options) -> Outcome:
    """The ordered steps and what each would change on this host. Writes nothing."""
    with open_context(options._replace(dry_run=True)) as ctx:
        found = run_preflight(ctx)
        reports = run_steps(ctx, all_steps(), apply=False)
        return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, False, reports)


def install(options: Options) -> Outcome:
    """Preflight (unless it passed before for the same inputs), then every step under the host
    lock, each recorded in state.json. Re-running changes only what is still missing."""
    with open_context(options) as ctx:
        inputs = ctx.inputs()
        skipped = State.load(ctx.host).done("preflight", inputs)
        found = [] if skipped else run_preflight(ctx)
        if options.dry_run:
            reports = run_steps(ctx, all_steps(), apply=True, progress=options.echo)
            return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, skipped, reports)
        with HostLock(ctx.host):
            state = State.load(ctx.host)
            state.data.update(bundle=ctx.info.digest, bundle_name=ctx.info.name,
                              node=ctx.node.name, role=ctx.node.role,
                              cluster=os.path.abspath(ctx.cluster.source))
            state.record("preflight", inputs, 0)
            reports = run_steps(ctx, all_steps(), state, apply=True, progress=options.echo)
        return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, skipped, reports)


def status(root: str) -> Dict[str, Any]:
    """What state.json says is installed, from which bundle, with the bundle's target."""
    host = Host(root, dry_run=True)
    state = State.load(host)
    result: Dict[str, Any] = dict(state.data)
    digest = state.data.get("bundle")
    if digest:
        raw = host.read_bytes("{}/{}/bundle.json".format(BUNDLES_DIR, digest))
        if raw is not None:
            info = read_info(parse_manifest(raw), digest)
            result["target"] = {"os": info.os, "release": info.release, "arch": info.arch}
            result["kubernetes_version"] = info.kubernetes_version
            result["runtime"] = info.runtime
            result["bundle_cached"] = True
        else:
            result["bundle_cached"] = False
    result["installed"] = bool(digest) and all(
        state.done(step, state.steps.get("preflight", {}).get("inputs", ""))
        for step in HOST_STEPS)
    return result


def reset_host(root: str, dry_run: bool = False,
               echo: Optional[Callable[[str], None]] = None) -> List[str]:
    """Undo host preparation: every file kubecrate wrote goes back to its kept original (or
    away, if kubecrate created it); the host steps are forgotten; the bundle cache stays."""
    host = Host(root, dry_run=dry_run)
    runner = Runner(root, dry_run=dry_run, echo=echo)
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(HostLock(host))
        changes = ["{} {}".format("restore" if c.action == "update" else "remove", c.path)
                   for c in host.restore_all()]
        if changes:
            runner.run(["systemctl", "daemon-reload"])
        state = State.load(host)
        if not dry_run and state.steps:
            state.forget(*HOST_STEPS)
            state.data.pop("bundle", None)
            state.save()
    return changes


def to_json(outcome: Outcome) -> str:
    return json.dumps({
        "node": outcome.node, "role": outcome.role, "bundle": outcome.bundle,
        "findings": [f._asdict() for f in outcome.findings],
        "steps": [{"name": s.name, "title": s.title, "changes": s.changes}
                  for s in outcome.steps],
        "changes": outcome.changes,
    }, indent=1)
