"""kubeadm: `init` on the first control-plane node, `join` everywhere else (docs/cluster.md).

First node: the installer generates the bootstrap token and the certificate key itself
(installer/joinfile.py), renders the v1beta3 init config (installer/kubeadmconfig.py: pinned
kubernetesVersion, the bundle's imageRepository, controlPlaneEndpoint, advertiseAddress and
node-ip = the node address, criSocket exactly /var/run/dockershim.sock for 1.23 with Docker),
runs `kubeadm init --config F --upload-certs`, computes the CA cert hash with openssl through
the runner and writes join.yaml (0600) - nothing parses kubeadm's output. Other nodes run
`kubeadm join --config F` from `install --join join.yaml`: control-plane nodes with the
certificate key, then their load balancer; workers without. Control-plane nodes get
/root/.kube/config.

join.yaml lives at JOIN_FILE on every control-plane node (the first node's own, the others' the
one they joined with); `join-info` refreshes it (refresh_join).
"""

import contextlib
import datetime
import logging
import os
from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from installer import joinfile, kubeadmconfig
from installer.atomic import replace_file
from installer.format.cluster import kubeadm_settings
from installer.format.errors import PreconditionError
from installer.format.lbspec import Kubeadm
from installer.host import Host
from installer.runner import Runner
from installer.steps import Action, ActionStep, Context, clones, parity
from installer.steps.loadbalancer import ADMIN_CONF, bring_up, is_first, joined

STATE_DIR = "/etc/kubernetes/kubecrate"
INIT_CONFIG = STATE_DIR + "/kubeadm-init.yaml"
JOIN_CONFIG = STATE_DIR + "/kubeadm-join.yaml"
JOIN_FILE = STATE_DIR + "/join.yaml"
REFRESH_CONFIG = STATE_DIR + "/kubeadm-refresh.yaml"  # join-info's secrets for kubeadm, 0600
CA_CERT = "/etc/kubernetes/pki/ca.crt"
ROOT_KUBECONFIG = "/root/.kube/config"
log = logging.getLogger(__name__)
CLOCK_ENV = "KUBECRATE_FAKE_NOW"  # the tests' clock, shared with the kubeadm stand-ins
KUBEADM_TIMEOUT = 900.0
# join-info renews what expires within these margins, so a join started now still works.
TOKEN_MARGIN = datetime.timedelta(hours=1)
CERTIFICATE_KEY_MARGIN = datetime.timedelta(minutes=10)


def now() -> datetime.datetime:
    """UTC now, naive, whole seconds; $KUBECRATE_FAKE_NOW (epoch seconds) overrides it so
    that the installer and the stand-ins judge expiry by one clock (docs/testing.md)."""
    fake = os.environ.get(CLOCK_ENV)
    if fake:
        return datetime.datetime.utcfromtimestamp(int(float(fake)))
    return joinfile.utcnow()


def bundle_image_repository(ctx: Context) -> str:
    """The repository of the bundle's kube-apiserver image: what kubeadm must pull from."""
    for image in ctx.info.images:
        repository, _, name = image.reference.rpartition("/")
        if name.startswith("kube-apiserver:") and repository:
            return repository
    return "registry.k8s.io"


def settings(ctx: Context) -> Kubeadm:
    return kubeadm_settings(ctx.cluster, ctx.info.kubernetes_version,
                            bundle_image_repository(ctx), ctx.info.runtime)


def node_address(ctx: Context) -> kubeadmconfig.NodeAddress:
    return kubeadmconfig.NodeAddress(ctx.node.name, ctx.node.address)


def bundle_server(ctx: Context) -> str:
    """Where this (the first control-plane) node serves the bundle: its own address."""
    from installer.bundlefetch import PORT

    return "{}:{}".format(ctx.node.address, PORT)


def ca_cert_hash(host: Host, runner: Runner) -> str:
    return joinfile.ca_cert_hash(runner, host.path(CA_CERT))


def write_join(host: Host, info: joinfile.JoinInfo, out: Optional[str] = None) -> List[str]:
    """join.yaml at JOIN_FILE under the root, and at `out` (a path of the caller) if given."""
    done = []
    if host.write(JOIN_FILE, joinfile.dump(info), joinfile.FILE_MODE) or not out:
        done.append("wrote join material to {} (mode 0600)".format(host.path(JOIN_FILE)))
    if out and os.path.abspath(out) != host.path(JOIN_FILE):
        joinfile.write(out, info)
        done.append("wrote join material to {} (mode 0600)".format(os.path.abspath(out)))
    return done


def read_join(host: Host) -> Optional[joinfile.JoinInfo]:
    text = host.read_text(JOIN_FILE)
    return joinfile.parse(text, host.path(JOIN_FILE)) if text else None


def refresh_join(host: Host, runner: Runner, endpoint: str, moment: datetime.datetime,
                 kubernetes_version: str, cri_socket: Optional[str] = None,
                 etcd_endpoints: Sequence[str] = ()) -> Tuple[joinfile.JoinInfo, List[str]]:
    """Join material valid from `moment`: the recorded token and certificate key where they
    still have their margin, else a new token (`kubeadm token create`) and a re-upload of the
    certificates under a new key (`kubeadm init phase upload-certs`). The new secrets reach
    kubeadm only in a 0600 --config file (REFRESH_CONFIG), never on its command line."""
    old = read_join(host)
    kubeconfig = ["--kubeconfig", ADMIN_CONF]
    done = []
    if old and old.endpoint == endpoint and not old.token_expired(moment + TOKEN_MARGIN):
        token, token_expires = old.token, old.token_expires
    else:
        token = joinfile.new_token()
        token_expires = joinfile.format_time(moment + joinfile.TOKEN_TTL)
        config = kubeadmconfig.refresh_config(kubernetes_version, token=token,
                                              cri_socket=cri_socket)
        with secret_config(host, runner, config) as path:
            runner.run(["kubeadm", "token", "create", "--config", path] + kubeconfig,
                       timeout=KUBEADM_TIMEOUT)
        done.append("created bootstrap token {}.* (expires {})".format(token[:6], token_expires))
    if old and old.endpoint == endpoint and \
            not old.certificate_key_expired(moment + CERTIFICATE_KEY_MARGIN):
        key, key_expires = old.certificate_key, old.certificate_key_expires
    else:
        key = joinfile.new_certificate_key()
        key_expires = joinfile.format_time(moment + joinfile.CERTIFICATE_KEY_TTL)
        config = kubeadmconfig.refresh_config(kubernetes_version, certificate_key=key,
                                              cri_socket=cri_socket,
                                              etcd_endpoints=etcd_endpoints)
        with secret_config(host, runner, config) as path:
            # kubeadm prints the key unless told not to (phases/init/uploadcerts.go)
            runner.run(["kubeadm", "init", "phase", "upload-certs", "--upload-certs",
                        "--config", path, "--skip-certificate-key-print"] + kubeconfig,
                       timeout=KUBEADM_TIMEOUT)
        done.append("re-uploaded the control-plane certificates under a new key (expires "
                    "{})".format(key_expires))
    bundle = parity.cluster_bundle(runner, ADMIN_CONF) if not runner.dry_run else None
    info = joinfile.JoinInfo(endpoint, token, token_expires, ca_cert_hash(host, runner), key,
                             key_expires, bundle, old.bundle_server if old else None)
    joinfile.validate(info)
    return info, done


@contextlib.contextmanager
def secret_config(host: Host, runner: Runner, text: str) -> Iterator[str]:
    """REFRESH_CONFIG holding `text`, mode 0600 from its first byte, for one kubeadm command;
    removed afterwards whatever happened. Yields the host path to pass to kubeadm."""
    if runner.dry_run:
        yield REFRESH_CONFIG
        return
    path = host.path(REFRESH_CONFIG)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    data = text.encode("utf-8")
    replace_file(path, lambda handle: handle.write(data), 0o600)
    try:
        yield REFRESH_CONFIG
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def kubeconfig_for_root(ctx: Context) -> List[Action]:
    """/root/.kube/config = admin.conf on control-plane nodes (kubectl works for root)."""
    admin = ctx.host.read_bytes(ADMIN_CONF)
    if not ctx.node.is_control_plane or admin is None:
        return []
    if ctx.host.needs_write(ROOT_KUBECONFIG, admin, 0o600) is None:
        return []
    return [Action("write " + ROOT_KUBECONFIG,
                   partial(ctx.host.write, ROOT_KUBECONFIG, admin, 0o600))]


def selinux_patches(ctx: Context) -> Optional[str]:
    """With `selinux: enforcing`, write kubeadm's patches that run its static pods as spc_t
    (installer/kubeadmconfig.py) and return their folder for the config; else None."""
    if not ctx.cluster.enforcing:
        return None
    for path, content in kubeadmconfig.selinux_patches():
        ctx.host.write(path, content, 0o644)
    return kubeadmconfig.SELINUX_PATCHES_DIR


def init(ctx: Context) -> str:
    lb = ctx.cluster.load_balancer
    token, key, moment = joinfile.new_token(), joinfile.new_certificate_key(), now()
    endpoint = ctx.cluster.endpoint
    sans = [san for san in (endpoint.vip, endpoint.dns_name) if san]
    config = kubeadmconfig.init_config(settings(ctx), node_address(ctx), token, key,
                                       lb.apiserver_port, sans, selinux_patches(ctx),
                                       ctx.cluster.etcd_endpoints)
    ctx.host.write(INIT_CONFIG, config, 0o600)
    extra: Dict[str, Any] = {}  # no watch at all unless there is a VIP to watch
    if lb.mode == "static-pods" and not ctx.runner.dry_run:
        from installer.steps.vipwatch import VipWatch  # keepalived starts inside init

        extra["watch"] = VipWatch(ctx)
    ctx.runner.run(["kubeadm", "init", "--config", INIT_CONFIG, "--upload-certs"],
                   timeout=KUBEADM_TIMEOUT,
                   hint="see `journalctl -u kubelet`; `reset` undoes a half-done init", **extra)
    if ctx.runner.dry_run:
        return "kubeadm init, then write join.yaml"
    parity.record(ctx, ADMIN_CONF)
    info = joinfile.JoinInfo(str(endpoint), token,
                             joinfile.format_time(moment + joinfile.TOKEN_TTL),
                             ca_cert_hash(ctx.host, ctx.runner), key,
                             joinfile.format_time(moment + joinfile.CERTIFICATE_KEY_TTL),
                             ctx.info.digest, bundle_server(ctx))
    written = write_join(ctx.host, info, ctx.join_out)
    return "kubeadm init as the first control-plane node of {}; {}".format(
        endpoint, "; ".join(written))


def join(ctx: Context) -> str:
    info = ctx.join_info()
    control_plane = ctx.node.is_control_plane
    config = kubeadmconfig.join_config(settings(ctx), node_address(ctx), info, control_plane,
                                       ctx.cluster.load_balancer.apiserver_port,
                                       selinux_patches(ctx) if control_plane else None)
    log.info("%s", clones.refuse_clone(ctx))  # a cloned VM is refused before it registers
    ctx.host.write(JOIN_CONFIG, config, 0o600)
    ctx.runner.run(["kubeadm", "join", "--config", JOIN_CONFIG], timeout=KUBEADM_TIMEOUT,
                   hint="if the token or certificate key expired, run `join-info` on a "
                        "control-plane node and re-run install with the new join.yaml")
    what = "kubeadm join {} as a {}".format(info.endpoint, ctx.node.role)
    if not control_plane:
        return what
    ctx.host.write(JOIN_FILE, joinfile.dump(info), joinfile.FILE_MODE)
    if not ctx.cluster.load_balancer.on_control_planes:
        return what
    # Only now: kubeadm join refuses a non-empty manifests folder, and VRRP on a node
    # without a local apiserver would only pull the VIP away from a working one.
    done = [action.do() for action in bring_up(ctx)]
    return what + "; then its load balancer ({} change(s))".format(len(done))


class KubeadmStep(ActionStep):
    name = "kubeadm"
    title = "kubeadm init (first control-plane node) or join (--join join.yaml)"

    def actions(self, ctx: Context) -> List[Action]:
        host = ctx.host
        if is_first(ctx):
            if not host.exists(ADMIN_CONF):
                from installer.steps.etcdhost import first_control_plane_files

                return first_control_plane_files(ctx) + [Action(
                    "kubeadm init --upload-certs as the first control-plane node, then write "
                    "join.yaml", partial(init, ctx))]
            found = kubeconfig_for_root(ctx)
            if not host.exists(JOIN_FILE) and not ctx.runner.dry_run:
                found.append(Action("write join.yaml (init finished without it)",
                                    partial(self._rewrite_join, ctx)))
            return found
        if joined(ctx):
            return kubeconfig_for_root(ctx)
        if ctx.join is None:
            return [Action("kubeadm join as a {} (needs --join join.yaml)".format(
                ctx.node.role), partial(require_join, ctx))]
        return [Action("kubeadm join {} as a {}{}".format(
            ctx.join.endpoint, ctx.node.role,
            ", then its load balancer" if ctx.node.is_control_plane and
            ctx.cluster.load_balancer.on_control_planes else ""), partial(join, ctx))
        ] + ([Action("write " + ROOT_KUBECONFIG, lambda: None)]
             if ctx.node.is_control_plane else [])

    def _rewrite_join(self, ctx: Context) -> str:
        k = settings(ctx)
        info, done = refresh_join(ctx.host, ctx.runner, str(ctx.cluster.endpoint), now(),
                                  k.kubernetes_version, k.cri_socket, ctx.cluster.etcd_endpoints)
        return "; ".join(done + write_join(ctx.host, info, ctx.join_out))

    def apply(self, ctx: Context) -> List[str]:
        done = super().apply(ctx)
        # a join just wrote admin.conf on a control-plane node: the placeholder above
        later = kubeconfig_for_root(ctx)
        for action in later:
            action.do()
        return [line for line in done if line != "write " + ROOT_KUBECONFIG] + \
            [action.what for action in later]


def require_join(ctx: Context, source: str = "join.yaml") -> None:
    """Raise PreconditionError (exit 4) unless this node has what it needs to join."""
    for level, message, fix in join_findings(ctx, source):
        if level == "fail":
            raise PreconditionError(message, hint=fix)


def join_findings(ctx: Context, source: str = "join.yaml") -> List[Tuple[str, str, str]]:
    """(level, message, fix) about join.yaml (the file `source`) for this node: none on the
    first control-plane node or a node that already joined; else whether --join was given,
    and its endpoint, CA hash and expiry (token; certificate key for a control-plane node)."""
    if is_first(ctx) or joined(ctx):
        return []
    refresh = "run `kubecrate-installer.pyz join-info --out join.yaml` on a control-plane " \
              "node and pass the new file with --join"
    info = ctx.join
    if info is None:
        return [("fail", "{} joins an existing cluster: install needs --join join.yaml".format(
            ctx.node.name), "install the first control-plane node ({}) first; it writes "
            "join.yaml (or use --host-only to prepare this host now)".format(
                ctx.cluster.load_balancer.peers[0].name))]
    moment = now()
    found = []
    if info.endpoint != str(ctx.cluster.endpoint):
        found.append(("fail", "{} is for the endpoint {} but cluster.yaml's is "
                      "{}".format(source, info.endpoint, ctx.cluster.endpoint),
                      "use the join.yaml of this cluster"))
    if info.token_expired(moment):
        found.append(("fail", "{}: the bootstrap token expired at {}".format(
            source, info.token_expires), refresh))
    if ctx.node.is_control_plane and info.certificate_key_expired(moment):
        found.append(("fail", "{}: the certificate key {} (the uploaded certificates "
                      "are deleted 2 h after the upload)".format(source,
                          "expired at " + str(info.certificate_key_expires)
                          if info.certificate_key else "is missing"), refresh))
    found += parity.findings(ctx, info.bundle, source)
    if not found:
        found.append(("pass", "{}: token valid until {}{}".format(
            source, info.token_expires,
            ", certificate key until " + str(info.certificate_key_expires)
            if ctx.node.is_control_plane else ""), ""))
    return found
