"""`upgrade --bundle NEW.tar`: kubeadm's supported path, one minor version at a time, from a
newer bundle (docs/upgrades.md), run on every node in turn: the first control-plane node of
cluster.yaml, the other control planes, then the workers.

The new bundle is verified as install verifies it (signature first, then every file). Preflight
refuses, before anything changes: a node that kubecrate did not install; a bundle for another
OS, release, arch or runtime; a downgrade; a skip of more than one minor (kubeadm's
MaximumAllowedMinorVersionUpgradeSkew, cmd/kubeadm/app/phases/upgrade/policy.go) unless the
bundle carries the releases in between, which installer/upgradepath.py then walks in order;
a node out of turn (another control plane before the first, a worker before every control
plane: the kubelet must not be newer than the apiservers, kubernetes.io's version skew policy;
the first control plane before every node runs the release it upgrades from); an unhealthy
cluster (a Node NotReady, a control plane without its etcd member). Then, each step re-checked
from the host as it is and recorded in state.json, so a re-run after a crash resumes where it
stopped:

 1. the bundle into the cache and its images into the runtime (nothing else has changed yet);
    in images.mode registry, a control plane's kubecrate-registry unit written for the new
    bundle's distribution image and restarted, when that image differs;
 2. the bundle's repo as the local repo, kubeadm's package and binary from it;
 3. `kubeadm upgrade plan` + `kubeadm upgrade apply vX.Y.Z` on the first control plane,
    `kubeadm upgrade node` elsewhere; then the static-pod load balancer's files on a control
    plane and the CNI manifest on the first, each only when it differs
    (installer/steps/upgradenet.py);
 4. `kubectl drain` (unless --no-drain), then the role's packages, the runtime's config (the
    new pause image), kubelet/kubectl/crictl/CNI binaries, the kubelet restarted until its Node
    reports the new version, `kubectl uncordon`;
 5. kubecrate's kept kubeadm configs migrated (v1beta3 -> v1beta4 from 1.31), and on a control
    plane, once every control plane runs the new version, the cluster's bundle record
    (ConfigMap kube-system/kubecrate-bundle) moved to the new bundle.
"""

import json
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from installer.format.bundleinfo import BundleInfo, read_info
from installer.format.errors import KubecrateError, PreconditionError
from installer.format.manifest import parse_manifest
from installer.host import Host
from installer.state import State
from installer.steps import BUNDLES_DIR, Context
from installer.steps.loadbalancer import ADMIN_CONF, KUBELET_CONF, is_first
from installer.steps.preflight import FAIL, PASS, WARN, Finding

APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
CP_LABEL = "node-role.kubernetes.io/control-plane"
STATE_KEY = "upgrade"  # state.json: {"from": digest, "to": digest, "drained": bool}
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def version_tuple(text: str) -> Tuple[int, int, int]:
    match = _VERSION.match(text)
    if not match:
        raise KubecrateError("not a Kubernetes version: {!r}".format(text))
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def cached_info(host: Host, digest: str) -> Optional[BundleInfo]:
    raw = host.read_bytes("{}/{}/bundle.json".format(BUNDLES_DIR, digest))
    return read_info(parse_manifest(raw), digest) if raw is not None else None


def installed_from(host: Host, new_digest: str) -> Optional[str]:
    """The bundle this node runs: state.json's, or during an upgrade to `new_digest` that was
    interrupted, the one it started from."""
    state = State.load(host)
    running = state.data.get(STATE_KEY) or {}
    if running.get("to") == new_digest and running.get("from"):
        return str(running["from"])
    return state.data.get("bundle")


def is_upgrade(host: Host, new: BundleInfo) -> bool:
    """Whether this node runs (or is being upgraded from) a bundle of another Kubernetes
    version than `new`: what `plan` then shows is the upgrade, and install refuses."""
    old_digest = installed_from(host, new.digest)  # never `new` while an upgrade to it runs
    if not old_digest or old_digest == new.digest or not host.exists(KUBELET_CONF):
        return False
    old = cached_info(host, old_digest)
    return old is not None and old.kubernetes_version != new.kubernetes_version


class Upgrade:
    """One node's upgrade: the new bundle's context, the bundle it runs now, the credentials
    to see the cluster with."""

    def __init__(self, ctx: Context, old: BundleInfo, kubeconfig: Optional[str],
                 drain: bool) -> None:
        self.ctx = ctx
        self.old = old
        self.drain = drain
        host = ctx.host
        self.admin = bool(kubeconfig) or host.exists(ADMIN_CONF)
        self.kubeconfig = kubeconfig or (host.path(ADMIN_CONF) if host.exists(ADMIN_CONF)
                                         else host.path(KUBELET_CONF))
        self.target = ctx.info.kubernetes_version

    # ------------------------------------------------------------------ the cluster's view

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0) -> Any:
        argv = ["kubectl", "--kubeconfig", self.kubeconfig] + list(args)
        if not check:
            return self.ctx.runner.query(argv, timeout=timeout)
        return self.ctx.runner.run(argv, timeout=timeout,
                                   hint="check the cluster with `kubectl --kubeconfig {} get "
                                        "nodes`".format(self.kubeconfig))

    def nodes(self) -> List[Dict[str, Any]]:
        done = self.kubectl("get", "nodes", "-o", "json", check=False)
        if done.returncode != 0:
            raise PreconditionError("cannot list the cluster's nodes with {}: {}".format(
                self.kubeconfig, done.stderr.strip()),
                hint="the apiserver must answer before an upgrade; check `kubectl get nodes`")
        try:
            return list(json.loads(done.stdout).get("items") or [])
        except ValueError:
            raise PreconditionError("`kubectl get nodes -o json` gave no JSON")

    def node(self) -> Optional[Dict[str, Any]]:
        for item in self.nodes():
            if item.get("metadata", {}).get("name") == self.ctx.node.name:
                return item
        return None

    # ------------------------------------------------------------------------ preflight

    def findings(self, resuming: bool) -> List[Finding]:
        found = self.bundle_findings()
        if any(f.level == FAIL for f in found):
            return found
        nodes = self.nodes()
        found += self.health_findings(nodes, resuming)
        found += self.order_findings(nodes)
        from installer.steps import upgradenet

        found += upgradenet.cni_findings(self.ctx) + upgradenet.lb_findings(self.ctx)
        if self.drain and not self.admin:
            found.append(Finding(FAIL, "drain", "draining {} needs cluster-admin credentials, "
                                 "and this worker has none".format(self.ctx.node.name),
                                 "pass --kubeconfig with a copy of a control-plane node's "
                                 "/etc/kubernetes/admin.conf, or --no-drain"))
        return found

    def bundle_findings(self) -> List[Finding]:
        return bundle_findings(self.ctx.info, self.old, self.ctx.node.name)

    def health_findings(self, nodes: List[Dict[str, Any]], resuming: bool) -> List[Finding]:
        found = []
        not_ready = [name_of(n) for n in nodes if not ready(n)
                     and not (resuming and name_of(n) == self.ctx.node.name)]
        if not_ready:
            found.append(Finding(FAIL, "nodes", "node(s) NotReady: {}".format(
                ", ".join(not_ready)), "bring every node back to Ready (`kubectl describe node "
                "NAME`) before upgrading; an upgrade drains nodes one at a time"))
        else:
            found.append(Finding(PASS, "nodes", "{} node(s) Ready".format(len(nodes))))
        control_planes = [name_of(n) for n in nodes if CP_LABEL in labels_of(n)]
        pods = self.kubectl("get", "pods", "-n", "kube-system", "-l", "component=etcd", "-o",
                            "json", check=False)
        if pods.returncode != 0:
            found.append(Finding(WARN, "etcd", "cannot list the etcd pods with {}: {}".format(
                self.kubeconfig, pods.stderr.strip()), "the control planes check etcd"))
            return found
        try:
            items = json.loads(pods.stdout).get("items") or []
        except ValueError:
            items = []
        members = {(p.get("spec") or {}).get("nodeName") for p in items
                   if ((p.get("status") or {}).get("phase") == "Running")}
        missing = [name for name in control_planes if name not in members]
        if missing:
            found.append(Finding(FAIL, "etcd", "control plane(s) {} have no running etcd member "
                                 "(no etcd-NAME pod in kube-system)".format(", ".join(missing)),
                                 "restore the member first (docs/cluster.md); kubeadm refuses "
                                 "an upgrade with an unhealthy etcd cluster"))
        else:
            found.append(Finding(PASS, "etcd", "{} etcd member(s), one per control plane".format(
                len(members))))
        return found

    def order_findings(self, nodes: List[Dict[str, Any]]) -> List[Finding]:
        """A control plane after the first, a worker after every control plane."""
        if is_first(self.ctx):  # the next minor once every node runs this one (upgradepath)
            minor = version_tuple(self.old.kubernetes_version)[:2]
            behind = [name_of(n) for n in nodes if _VERSION.match(kubelet_version(n))
                      and version_tuple(kubelet_version(n))[:2] < minor]
            if behind:
                return [Finding(FAIL, "order", "{} still run(s) a release older than {}".format(
                    ", ".join(behind), self.old.kubernetes_version),
                    "run `upgrade` with this bundle on {} first: the cluster moves one minor "
                    "at a time, every node before the next minor (an apiserver may be one "
                    "minor from another, no more)".format(", ".join(behind)))]
            return []
        first = self.ctx.cluster.load_balancer.peers[0].name
        if self.ctx.node.is_control_plane:
            wanted = [first]
            fix = "run `upgrade` on {} first: it runs `kubeadm upgrade apply`".format(first)
        else:
            wanted = [name_of(n) for n in nodes if CP_LABEL in labels_of(n)]
            fix = "upgrade every control-plane node first: a kubelet must not be newer than " \
                  "the apiservers"
        behind = [name_of(n) for n in nodes if name_of(n) in wanted and
                  kubelet_version(n) != self.target]
        if behind:
            return [Finding(FAIL, "order", "{} still run(s) an older release than {}".format(
                ", ".join(behind), self.target), fix)]
        return [Finding(PASS, "order", "{} already run(s) {}".format(", ".join(wanted),
                                                                    self.target))]

    # --------------------------------------------------------------------- host checks

    def apiserver_version(self) -> Optional[str]:
        text = self.ctx.host.read_text(APISERVER_MANIFEST)
        if text is None:
            return None
        # YAML as kubeadm writes it, or JSON (which is YAML too) as a patched pod may be
        found = re.search(r"image\"?:\s*\"?[^\s\"]*/kube-apiserver:(v[0-9.]+)", text)
        return found.group(1) if found else None

    def kubelet_is_new(self) -> bool:
        """/usr/bin/kubelet is the bundle's bin/kubelet (never known from a bin/kubelet.gz)."""
        digest = self.ctx.info.hashes.get("bin/kubelet")
        return digest is not None and self.ctx.host.sha256("/usr/bin/kubelet") == digest

    def reported_version(self) -> Optional[str]:
        node = self.node()
        return kubelet_version(node) if node else None


def bundle_findings(new: BundleInfo, old: BundleInfo, node: str, carried: bool = False
                    ) -> List[Finding]:
    """The new bundle against the one `node` runs: the same profile, no downgrade, one minor
    on (unless it `carried` the releases in between: upgradepath.remaining checks those)."""
    found = []
    for what, was, now in (("OS", old.os, new.os),
                           ("release", old.major_release, new.major_release),
                           ("arch", old.arch, new.arch),
                           ("runtime", old.runtime, new.runtime)):
        if was != now:
            found.append(Finding(FAIL, "bundle", "bundle {} is for {} {} but {} runs {} "
                                 "{} (bundle {})".format(new.name, what, now, node, what, was,
                                                         old.name),
                                 "upgrade with a bundle of the same profile ({} {} {}, "
                                 "{})".format(old.os, old.major_release, old.arch,
                                              old.runtime)))
    have = version_tuple(old.kubernetes_version)
    want = version_tuple(new.kubernetes_version)
    if want < have:
        found.append(Finding(FAIL, "version", "bundle {} carries Kubernetes {}, older than "
                             "the {} this node runs: kubecrate does not downgrade".format(
                                 new.name, new.kubernetes_version, old.kubernetes_version),
                             "to go back, restore an etcd snapshot taken before the "
                             "upgrade and reinstall from bundle {}".format(old.name)))
    elif want[:2] > (have[0], have[1] + 1) and not carried:
        steps = " -> ".join("1.{}".format(minor) for minor in range(have[1], want[1] + 1))
        found.append(Finding(FAIL, "version", "bundle {} carries Kubernetes {} only; this "
                             "node runs {}: kubeadm upgrades one minor version at a time "
                             "({}) and the bundle has no intermediate releases".format(
                                 new.name, new.kubernetes_version,
                                 old.kubernetes_version, steps),
                             "upgrade with the bundle of 1.{} first, or with one that "
                             "carries every minor in between (docs/upgrades.md)".format(
                                 have[1] + 1)))
    else:
        found.append(Finding(PASS, "version", "{} -> {} (bundle {} -> {})".format(
            old.kubernetes_version, new.kubernetes_version, old.name, new.name)))
    return found


def preflight_failed(node: str, failed: List[Finding]) -> PreconditionError:
    """exit 4, nothing changed (a staged bundle is removed on the way out)."""
    return PreconditionError(
        "upgrade preflight failed on {} ({} check(s)):\n  ".format(node, len(failed))
        + "\n  ".join("{}: {}{}".format(f.check, f.message, " -> " + f.fix if f.fix else "")
                       for f in failed),
        hint="nothing was changed; fix the above and re-run")


def refuse_early(host: Host, node: Any, new: BundleInfo, raw: bytes, _bundle: str) -> None:
    """What the new bundle's signed bundle.json alone decides against the bundle this node
    runs (bundle_findings; a multi-minor path lacking a minor), before a byte of the bundle's
    files is hashed (session.open_context's `refuse`). Anything it cannot tell is left to
    the preflight that follows, which sees the same and more."""
    from installer.format.upgradepath import read_path
    from installer.upgradepath import remaining

    digest = installed_from(host, new.digest)
    old = cached_info(host, digest) if digest and digest != new.digest else None
    if old is None or node.is_etcd_host:
        return
    try:
        data = json.loads(raw.decode("utf-8"))
        path = read_path(data if isinstance(data, dict) else {})
    except (ValueError, KubecrateError):
        return
    failed = [f for f in bundle_findings(new, old, node.name, bool(path)) if f.level == FAIL]
    if failed:
        raise preflight_failed(node.name, failed)
    if path:
        remaining(path, old.kubernetes_version, new.kubernetes_version, new.name)


def name_of(node: Dict[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def labels_of(node: Dict[str, Any]) -> Dict[str, Any]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def kubelet_version(node: Dict[str, Any]) -> str:
    return str(((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or "")


def ready(node: Dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def unschedulable(node: Optional[Dict[str, Any]]) -> bool:
    return bool(node and (node.get("spec") or {}).get("unschedulable"))


def load_old(ctx: Context) -> BundleInfo:
    """The bundle this node runs, from the cache; PreconditionError when there is none."""
    digest = installed_from(ctx.host, ctx.info.digest)
    if not digest or not ctx.host.exists(KUBELET_CONF):
        raise PreconditionError("{} has no cluster installed by kubecrate to upgrade "
                                "(state.json names no bundle, or {} is missing)".format(
                                    ctx.node.name, ctx.host.path(KUBELET_CONF)),
                                hint="install the cluster first: `install --bundle`")
    old = cached_info(ctx.host, digest)
    if old is None:
        raise PreconditionError("the bundle {} runs ({}) is not in its cache {}".format(
            ctx.node.name, digest, ctx.host.path(BUNDLES_DIR)),
            hint="unpack that bundle again (`unpack OLD.tar`) so the upgrade knows what it "
                 "upgrades from")
    return old


def begin(host: Host, old: BundleInfo, new: BundleInfo) -> None:
    """Record that this node is being upgraded (what a re-run resumes from)."""
    state = State.load(host)
    running = dict(state.data.get(STATE_KEY) or {})
    if running.get("to") != new.digest:
        running = {"from": old.digest, "to": new.digest, "started": int(time.time())}
    state.set(**{STATE_KEY: running})


def finish(ctx: Context, old: BundleInfo) -> None:
    """The node runs the new bundle: state.json's bundle moves (the old one becomes
    previous_bundle, which `cache prune` keeps), the host steps' records move with it."""
    from installer.session import HOST_STEPS

    state = State.load(ctx.host)
    state.use_bundle(ctx.info.digest)
    state.data.update(bundle_name=ctx.info.name)
    state.data.pop(STATE_KEY, None)
    state.data["upgraded"] = {"from": old.digest, "from_name": old.name,
                              "to": ctx.info.digest, "at": int(time.time())}
    for name in HOST_STEPS:
        if name in state.steps:
            state.steps[name]["inputs"] = ctx.inputs()
    state.save()


def run(options: Any, drain: bool, kubeconfig: Optional[str], plan_only: bool) -> Any:
    """`upgrade`: preflight, then every step under the host lock, recorded in state.json (with
    `plan_only` or --dry-run, what would run). Returns session.Outcome."""
    from installer import upgradepath

    return upgradepath.walk(options, drain, kubeconfig, plan_only)


def run_in(ctx: Context, options: Any, drain: bool, kubeconfig: Optional[str],
           plan_only: bool, pause_when_behind: bool = False) -> Any:
    """One minor on an open context (each step of installer/upgradepath.py's walk). With
    `pause_when_behind` (a walk that finished a step in this run), a refusal only because
    other nodes have not taken the step before is no failure: the Outcome says `paused`."""
    from installer import session
    from installer.state import HostLock
    from installer.steps import upgradesteps

    if ctx.node.is_etcd_host:  # kubeadm's HA etcd guide leaves their upgrades out too
        raise PreconditionError(
            "{} is an etcd.external host: upgrade upgrades the nodes, not the etcd hosts, in "
            "this version".format(ctx.node.name),
            hint="upgrade the control planes and workers; the etcd hosts keep their etcd "
                 "(kubeadm's HA etcd guide: kubeadm does not plan to support upgrades of such "
                 "hosts); nothing here changed")
    old = load_old(ctx)
    resuming = (State.load(ctx.host).data.get(STATE_KEY) or {}).get("to") == ctx.info.digest
    up = Upgrade(ctx, old, kubeconfig, drain)
    if old.digest == ctx.info.digest:
        return session.Outcome(ctx.node.name, ctx.node.role, ctx.info.name, [
            Finding(PASS, "version", "{} already runs bundle {}".format(
                ctx.node.name, ctx.info.name))], False, [])
    found = up.findings(resuming)
    failed = [f for f in found if f.level == FAIL]
    if failed and pause_when_behind and all(f.check == "order" for f in failed):
        return session.Outcome(ctx.node.name, ctx.node.role, old.name, found, False, [],
                               paused=True)
    if failed:
        raise preflight_failed(ctx.node.name, failed)
    if options.dry_run or plan_only:
        reports = session.run_steps(ctx, upgradesteps.steps(up), apply=not plan_only,
                                    progress=options.echo)
        return session.Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, False,
                               reports)
    with HostLock(ctx.host):
        begin(ctx.host, old, ctx.info)
        state = State.load(ctx.host)
        reports = session.run_steps(ctx, upgradesteps.steps(up), state, apply=True,
                                    progress=options.echo)
        finish(ctx, old)
    return session.Outcome(ctx.node.name, ctx.node.role, ctx.info.name, found, False, reports)
