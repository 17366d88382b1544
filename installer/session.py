"""The core behind `preflight`, `plan`, `install`, `join-info`, `status` and `reset`: one
function each, called by the thin click commands in installer/cli.py. Nothing here prints or
exits."""

import contextlib
import json
import os
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from installer import certs, etcdcerts, installrecord, joinfile, report, servedcerts
from installer.bundlecache import cache_root
from installer.format import minisig
from installer.format.bundleinfo import BundleInfo, read_info, wanted_for_preflight
from installer.format.cluster import ETCD_ROLE, find_node, load_cluster
from installer.format.errors import KubecrateError, PreconditionError, UsageError
from installer.format.lbspec import CONTAINERD_SOCKET, DOCKERSHIM_SOCKET
from installer.format.manifest import parse_manifest
from installer.host import Host
from installer.hostfiles import naming_full_disk
from installer.runner import Runner
from installer.servedsource import served_source
from installer.source import open_source
from installer.state import STATE_PATH, HostLock, State
from installer.steps import (
    BUNDLES_DIR,
    Context,
    StepReport,
    all_steps,
    etcdhost,
    run_steps,
)
from installer.steps import images as images_step
from installer.steps import kubeadm as kubeadm_step
from installer.steps.loadbalancer import ADMIN_CONF, KUBELET_CONF
from installer.steps.preflight import FAIL, Finding, run_preflight

PREP_STEPS = ("preflight", "unpack", "host-prep", "local-repo", "time", "runtime", "images",
              "binaries")
CLUSTER_STEPS = ("loadbalancer", "kubeadm", "registry", "cni", "bundle-server", "etcd-host")
HOST_STEPS = PREP_STEPS + CLUSTER_STEPS


def steps_of(role: str) -> Tuple[str, ...]:
    """The steps an installed host of `role` has done (an etcd.external host: etcd-host)."""
    return PREP_STEPS + (("etcd-host",) if role == ETCD_ROLE else CLUSTER_STEPS[:-1])


class Options(NamedTuple):
    bundle_path: str
    cluster_path: str
    key: minisig.Trust
    root: str = "/"
    node_name: Optional[str] = None
    dry_run: bool = False
    echo: Optional[Callable[[str], None]] = None  # dry-run lines and progress
    join_path: Optional[str] = None  # install --join join.yaml (nodes after the first)
    join_out: Optional[str] = None  # install --join-out: a copy of the first node's join.yaml
    host_only: bool = False  # stop after the host steps; join later
    etcd_certs_path: Optional[str] = None  # install --etcd-certs (installer/etcdcerts.py)


class Outcome(NamedTuple):
    node: str
    role: str
    bundle: str
    findings: List[Finding]
    preflight_skipped: bool  # install on a host where preflight already passed
    steps: List[StepReport]
    smoke: Tuple[List[str], bool, str] = ([], True, "")  # smoke_after_install
    paused: bool = False  # an upgrade walk stopped until other nodes take their step

    @property
    def changes(self) -> int:
        return sum(len(step.changes) for step in self.steps)


Refusal = Callable[[Host, Any, BundleInfo, bytes, str], None]  # open_context's `refuse`


@contextlib.contextmanager
def open_context(options: Options, stage: bool = False, refuse: Optional[Refusal] = None,
                 wanted: Callable[[str], bool] = wanted_for_preflight) -> Iterator[Context]:
    """Load cluster.yaml, check the bundle and find this host's node. Without `stage` nothing is
    written under the root (preflight's view of the bundle); with it (install) the bundle is
    read once into a staging folder beside the cache, which the unpack step renames into the
    cache and which is removed when anything fails before that. With `refuse` (install,
    upgrade), what the signed bundle.json alone decides is refused before a byte of the
    bundle's files is read: refuse(host, node, info, raw bundle.json, bundle path) raises."""
    cluster = load_cluster(options.cluster_path)
    host = Host(options.root, dry_run=options.dry_run)
    runner = Runner(options.root, dry_run=options.dry_run, echo=options.echo)
    node = find_node(cluster, host.probes.addresses(), options.node_name)
    join = None
    if options.join_path:
        try:
            join = joinfile.load(options.join_path)
        except joinfile.JoinFileError as err:  # a precondition of the join: exit 4
            raise PreconditionError(err.message, err.hint)
    if options.bundle_path:
        source = open_source(options.bundle_path)
    elif join is not None:  # a registry-mode worker fetches no image archive
        source = served_source(join, options.join_path or "join.yaml",
                               omit=partial(images_step.fetch_leaves_out, cluster, node))
    else:
        raise UsageError("--bundle is required on the first control-plane node (and without "
                         "--join)", hint="pass --bundle X.tar; a joining node may instead "
                         "pass only --join join.yaml and fetch the bundle from the first "
                         "control-plane node")
    options = options._replace(bundle_path=options.bundle_path or source.location)
    etcd = etcdcerts.load(options.etcd_certs_path, cluster) if options.etcd_certs_path \
        else None
    early = _signed_info(source, options.key) if refuse is not None else None
    if refuse is not None and early is not None:
        refuse(host, node, early[0], early[1], options.bundle_path)

    def context(checked: Any, directory: str, staged: Any = None) -> Context:
        images_step.require_archive(cluster, node, checked, directory)
        ctx = Context(host, runner, cluster, node,
                      read_info(checked.manifest, checked.manifest_sha256), options.bundle_path,
                      options.key, directory, join, options.join_out, staged, etcd,
                      options.etcd_certs_path)
        kubeadm_step.settings(ctx)  # the kubeadm: section against this bundle (exit 2)
        return ctx

    if stage:
        with naming_full_disk(cache_root(options.root), "unpacking " + options.bundle_path):
            staged = source.stage(options.key, options.root)
        try:
            yield context(staged.bundle, staged.directory, staged)
        finally:
            staged.discard()  # a no-op once the unpack step committed it
        return
    with source.view(options.key, options.root, wanted) as view:
        yield context(view.bundle, view.directory)


def _signed_info(source: Any, key: minisig.Trust) -> Optional[Tuple[BundleInfo, bytes]]:
    """The bundle's target from its signed bundle.json alone (BundleSource.signed_manifest),
    or None when that cannot be had cheaply and trusted: the full check that follows then
    reports what is wrong with the bundle, in its own words."""
    try:
        early = source.signed_manifest(key)
        return (read_info(early.manifest, early.manifest_sha256), early.manifest_raw) \
            if early else None
    except KubecrateError:
        return None


def _refuse_upgrade(host: Host, node: Any, info: BundleInfo, _raw: bytes, bundle_path: str
                    ) -> None:
    """install on a node that runs a cluster of another Kubernetes release: exit 4, naming
    `upgrade --bundle` (installer/upgrade.py is_upgrade)."""
    from installer import upgrade

    if upgrade.is_upgrade(host, info):
        raise PreconditionError(
            "{} runs a cluster from another Kubernetes release than bundle {} ({}): "
            "install does not upgrade".format(node.name, info.name, info.kubernetes_version),
            hint="run `upgrade --bundle {}` (docs/upgrades.md)".format(bundle_path))


def _join_checks(ctx: Context, required: bool, source: Optional[str] = None
                 ) -> List[Finding]:
    """join.yaml findings (naming the file `source`, the --join path); with `required`
    (install) a failure raises PreconditionError. Join material open to group or others is
    a warning."""
    if ctx.node.is_etcd_host:  # no join: its etcd CA is preflight's etcd-certs check
        return []
    name = source or "join.yaml"
    found = [Finding(level, "join", message, fix)
             for level, message, fix in kubeadm_step.join_findings(ctx, name)]
    exposed = joinfile.exposure(source) if source and ctx.join else None
    if source and exposed:
        found.append(Finding("warn", "join", exposed, "chmod 600 " + source))
    if not required:
        return [f._replace(level="warn") if f.level == FAIL else f for f in found]
    kubeadm_step.require_join(ctx, name)
    return found


def preflight(options: Options) -> Outcome:
    """Every host check; raises PreconditionError (exit 4) when one fails. Writes nothing."""
    with open_context(options._replace(dry_run=True)) as ctx:
        found = run_preflight(ctx) + _join_checks(ctx, False, options.join_path)
        return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, False, [])


def plan(options: Options, drain: bool = True, kubeconfig: Optional[str] = None) -> Outcome:
    """The ordered steps and what each would change on this host; on a node that runs an
    older bundle, the upgrade's (installer/upgrade.py). Writes nothing."""
    from installer import upgrade, upgradepath

    with open_context(options._replace(dry_run=True), wanted=upgradepath.wanted) as ctx:
        if upgrade.is_upgrade(ctx.host, ctx.info):  # each step of a multi-minor bundle too
            return upgradepath.walk_in(ctx, options._replace(dry_run=True), drain,
                                       kubeconfig, True)
        found = run_preflight(ctx) + _join_checks(ctx, False, options.join_path)
        reports = run_steps(ctx, all_steps(options.host_only, ctx.node.is_etcd_host),
                            apply=False)
        return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, False, reports)


def install(options: Options) -> Outcome:
    """Preflight (unless it passed before for the same inputs), then every step under the host
    lock, each recorded in state.json. Re-running changes only what is still missing."""
    with open_context(options, stage=not options.dry_run, refuse=_refuse_upgrade) as ctx:
        # again from the checked bundle: a stock-signed one is known only now
        _refuse_upgrade(ctx.host, ctx.node, ctx.info, b"", ctx.bundle_path)
        inputs = ctx.inputs()
        skipped = State.load(ctx.host).done("preflight", inputs)
        found = [] if skipped else run_preflight(ctx)
        if not options.host_only:
            found += _join_checks(ctx, True, options.join_path)
        steps = all_steps(options.host_only, ctx.node.is_etcd_host)
        if options.dry_run:
            reports = run_steps(ctx, steps, apply=True, progress=options.echo)
            return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, skipped, reports)
        with HostLock(ctx.host):
            state = State.load(ctx.host)
            state.use_bundle(ctx.info.digest)
            state.data.update(bundle_name=ctx.info.name, node=ctx.node.name, role=ctx.node.role,
                              cluster=os.path.abspath(ctx.cluster.source))
            if not skipped:  # what an auditor sees in `status` (installer/report.py)
                state.data["preflight_findings"] = [
                    {"level": f.level, "check": f.check, "message": f.message}
                    for f in found]
            if not options.host_only:
                installrecord.started(state)
            state.record("preflight", inputs, 0)
            reports = run_steps(ctx, steps, state, apply=True, progress=options.echo)
            if not options.host_only:
                installrecord.completed(state, [step.name for step in steps])
        checked = smoke_after_install(ctx) if not (options.host_only or ctx.node.is_etcd_host) \
            else ([], True, "")
        return Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, skipped, reports,
                       checked)


def status(root: str) -> Dict[str, Any]:
    """What state.json says is installed, from which bundle, with the bundle's target."""
    host = Host(root, dry_run=True)
    state = State.load(host)
    runner = Runner(root, dry_run=True)
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
            role = str(state.data.get("role") or "")
            result["signature"] = report.signer(host, "{}/{}".format(BUNDLES_DIR, digest))
            result["rpms"] = report.installed_rpms(runner, list(info.packages_for(role)))
            result["images"] = report.runtime_images(runner, info)
        else:
            result["bundle_cached"] = False
    inputs = state.steps.get("preflight", {}).get("inputs", "")
    result["prepared"] = bool(digest) and all(state.done(s, inputs) for s in PREP_STEPS)
    installed, result["steps_not_run"] = installrecord.judge(
        state, steps_of(str(state.data.get("role") or "")), inputs)
    result["installed"] = bool(digest) and installed
    result["joined"] = host.exists(KUBELET_CONF)
    result["expiry"] = _expiry(host, runner)
    found = certs.expiries(host, runner, kubeadm_step.now())
    found += servedcerts.expiries(host, runner, kubeadm_step.now())
    result["certificates"] = [item.as_json() for item in found]
    result["warnings"] = certs.warnings(found)
    from installer import etcdmembers

    etcd = etcdmembers.etcd_host_info(root) if state.data.get("role") == ETCD_ROLE \
        else etcdmembers.status_info(root)  # printed in its own section (cli._echo_etcd)
    if etcd is not None:
        result["etcd"] = etcd
    for item in found:  # the two named since the first release, in openssl's words
        if item.name in ("ca", "apiserver"):
            result["expiry"][item.name + "_certificate"] = item.expires.strftime(
                certs.OPENSSL_TIME.replace("%Z", "GMT"))
    return result


def _expiry(host: Host, runner: Runner) -> Dict[str, str]:
    """When the join material and the cluster certificates on this node expire."""
    found: Dict[str, str] = {}
    try:
        join = kubeadm_step.read_join(host)
    except joinfile.JoinFileError:
        join = None
    if join:
        found["bootstrap_token"] = join.token_expires
        if join.certificate_key_expires:
            found["certificate_key"] = join.certificate_key_expires
    return found


def renew_certs(root: str, dry_run: bool = False,
                echo: Optional[Callable[[str], None]] = None) -> List[str]:
    """`renew-certs` on a control-plane node (installer/certs.py), then the serving
    certificates of the registry and the bundle server (installer/servedcerts.py), under the
    host lock."""
    host = Host(root, dry_run=dry_run)
    runner = Runner(root, dry_run=dry_run, echo=echo)
    cluster = _installed_cluster(host)
    name = State.load(host).data.get("node")
    if cluster is None or not name:
        raise PreconditionError("renew-certs needs an installed control-plane node: {} names "
                                "no cluster.yaml or node".format(host.path(STATE_PATH)),
                                hint="run it on a control-plane node that kubecrate installed")
    if name in [h.name for h in cluster.etcd_hosts]:
        raise PreconditionError(
            "{} is an etcd.external host: renew-certs renews a control-plane node's "
            "certificates".format(name), hint=etcdhost.RENEW_HINT)
    node = cluster.node(name)
    if node is None:
        raise PreconditionError(
            "{} names no node {}, the node {} says this host is".format(
                State.load(host).data.get("cluster"), name, host.path(STATE_PATH)),
            hint="put the node back into that cluster.yaml as install had it (same name, "
                 "address and role), then run renew-certs again")
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(HostLock(host))
        changes = certs.renew(host, runner, node.address,
                              cluster.load_balancer.apiserver_port, echo or (lambda line: None))
        return changes + servedcerts.renew(host, runner, cluster, node.address)


def join_info(root: str, out: Optional[str] = None, dry_run: bool = False,
              echo: Optional[Callable[[str], None]] = None
              ) -> Tuple[joinfile.JoinInfo, List[str]]:
    """Fresh join material on a control-plane node: the recorded token and certificate key
    while they are valid, else a new token / re-uploaded certificates; written to the node's
    join.yaml and to `out`. Raises PreconditionError off a control-plane node."""
    host = Host(root, dry_run=dry_run)
    runner = Runner(root, dry_run=dry_run, echo=echo)
    if not host.exists(ADMIN_CONF):
        raise PreconditionError("{} is missing: join-info runs on a control-plane node that "
                                "is installed".format(host.path(ADMIN_CONF)),
                                hint="run it on the first control-plane node, or on any "
                                     "control-plane node that joined")
    old = kubeadm_step.read_join(host)
    cluster_path = State.load(host).data.get("cluster")
    cluster = load_cluster(cluster_path) if cluster_path and os.path.isfile(cluster_path) \
        else None
    if old:
        endpoint = old.endpoint
    elif cluster is not None:
        endpoint = str(cluster.endpoint)
    else:
        raise PreconditionError("cannot tell this cluster's endpoint: no {} and no recorded "
                                "cluster.yaml".format(host.path(kubeadm_step.JOIN_FILE)))
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(HostLock(host))
        version, socket = _kubeadm_target(host, runner)
        info, done = kubeadm_step.refresh_join(host, runner, endpoint, kubeadm_step.now(),
                                               version, socket,
                                               cluster.etcd_endpoints if cluster else ())
        if dry_run:
            return info, done + ["would write join material to {}".format(
                out or host.path(kubeadm_step.JOIN_FILE))]
        return info, done + kubeadm_step.write_join(host, info, out)


def _kubeadm_target(host: Host, runner: Runner) -> Tuple[str, Optional[str]]:
    """(Kubernetes version, CRI socket) for join-info's kubeadm configs: from the installed
    bundle recorded in state.json, else kubeadm's own version (what it would fall back to)
    and no socket (kubeadm then detects it)."""
    digest = State.load(host).data.get("bundle")
    raw = host.read_bytes("{}/{}/bundle.json".format(BUNDLES_DIR, digest)) if digest else None
    if digest and raw is not None:
        try:
            info = read_info(parse_manifest(raw), digest)
            return info.kubernetes_version, (DOCKERSHIM_SOCKET if info.runtime == "docker"
                                             else CONTAINERD_SOCKET)
        except KubecrateError:  # a damaged cache: kubeadm's own version is as good
            pass
    return runner.run(["kubeadm", "version", "-o", "short"], readonly=True).stdout.strip(), None


def to_json(outcome: Outcome) -> str:
    return json.dumps({
        "node": outcome.node, "role": outcome.role, "bundle": outcome.bundle,
        "findings": [f._asdict() for f in outcome.findings],
        "steps": [{"name": s.name, "title": s.title, "changes": s.changes}
                  for s in outcome.steps],
        "changes": outcome.changes,
        "paused": outcome.paused,  # an upgrade walk waits for other nodes (upgradepath.py)
        "smoke": {"checks": outcome.smoke[0], "passed": outcome.smoke[1],
                  "note": outcome.smoke[2]},
    }, indent=1)


def smoke(root: str) -> Tuple[List[str], bool, str]:
    """`status --check` (installer/smoke.py): (lines, all passed, why it could not run)."""
    from installer import smoke as smoke_check

    host = Host(root, dry_run=True)
    if not host.exists(ADMIN_CONF):
        return [], False, "no {} here: run `status --check` on a control-plane node".format(
            ADMIN_CONF)
    cluster = _installed_cluster(host)
    checks = smoke_check.smoke_check(Runner(root, dry_run=True), host.path(ADMIN_CONF),
                                     [n.name for n in cluster.nodes] if cluster else [],
                                     _dns_domain(cluster))
    return smoke_check.render(checks), all(c.ok for c in checks), ""


def _installed_cluster(host: Host) -> Optional[Any]:
    """The cluster.yaml install used (state.json), if it is still there and loads."""
    path = State.load(host).data.get("cluster")
    if not path or not os.path.isfile(path):
        return None
    try:
        return load_cluster(path)
    except (OSError, ValueError, KubecrateError):
        return None


def _dns_domain(cluster: Optional[Any]) -> str:
    """cluster.yaml's kubeadm.dns_domain (docs/load-balancer.md), else kubeadm's default."""
    return str(dict(cluster.kubeadm).get("dns_domain") or "cluster.local") if cluster \
        else "cluster.local"


def smoke_after_install(ctx: Context) -> Tuple[List[str], bool, str]:
    """At the end of install: the smoke check when this install completed the cluster (every
    node of cluster.yaml registered), run where admin credentials are (control planes); on a
    worker that completes it, a pointer to `status --check`."""
    from installer import smoke as smoke_check

    expected = [n.name for n in ctx.cluster.nodes]
    if not ctx.host.exists(ADMIN_CONF):
        return [], True, "run `status --check` on a control-plane node once every node of " \
            "cluster.yaml has joined"
    kubeconfig = ctx.host.path(ADMIN_CONF)
    if not smoke_check.cluster_complete(ctx.runner, kubeconfig, expected):
        return [], True, ""
    checks = smoke_check.smoke_check(ctx.runner, kubeconfig, expected, _dns_domain(ctx.cluster))
    return smoke_check.render(checks), all(c.ok for c in checks), ""
