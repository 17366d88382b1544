"""etcd-host: an etcd.external host (cluster.yaml `etcd: {external: [...]}`) set up as kubeadm's
"Set up a High Availability etcd cluster with kubeadm" does it, after the host steps that give
it the runtime, the kubelet, kubeadm and the pause and etcd images:

1. the kubelet as etcd's service manager: 20-etcd-service-manager.conf and its configuration,
   then the kubelet restarted (the guide's step 1);
2. the etcd CA: made by `kubeadm init phase certs etcd-ca` on the first etcd host, which
   writes it with an apiserver-etcd-client pair to etcd-certs.json (installer/etcdcerts.py);
   the other hosts take it from `install --etcd-certs FILE`;
3. this host's kubeadm config (kubeadmconfig.etcd_host_config), its certificates by `kubeadm
   init phase certs etcd-server|etcd-peer|etcd-healthcheck-client` signed by that CA, and
   etcd's static pod by `kubeadm init phase etcd local`.

Unlike the guide, which makes every member's certificates on the first host and copies them,
each host makes its own from the shared CA: kubeadm signs the same certificates either way,
and nothing but the one file has to be carried.
Each part checks the host first: an installed etcd host changes nothing.
"""

from functools import partial
from typing import List

from installer import etcdcerts, kubeadmconfig
from installer.format.errors import PreconditionError
from installer.render import render
from installer.steps import Action, ActionStep, Context

DROP_IN = "/etc/systemd/system/kubelet.service.d/20-etcd-service-manager.conf"
KUBELET_CONFIG = "/etc/kubernetes/kubecrate/kubelet-etcd.yaml"
ETCD_CONFIG = "/etc/kubernetes/kubecrate/kubeadm-etcd.yaml"
MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
PKI = etcdcerts.PKI
# kubeadm's phase -> the certificate it writes (cmd/kubeadm/app/phases/certs/certlist.go)
MEMBER_CERTS = (("etcd-server", "etcd/server.crt"), ("etcd-peer", "etcd/peer.crt"),
                ("etcd-healthcheck-client", "etcd/healthcheck-client.crt"))
FILES = (DROP_IN, KUBELET_CONFIG, ETCD_CONFIG, etcdcerts.FILE)  # what reset removes
# kubeadm's HA etcd guide: kubeadm does not plan to support certificate rotation or upgrades
# for these hosts, so kubecrate's renew-certs and upgrade leave them out too
RENEW_HINT = "renew its etcd certificates with `kubeadm certs renew etcd-server`, `etcd-peer` " \
    "and `etcd-healthcheck-client` `--config {}`, then restart etcd (move etcd.yaml out of " \
    "/etc/kubernetes/manifests and back); `status` there shows when they expire".format(
        ETCD_CONFIG)


def is_first(ctx: Context) -> bool:
    return ctx.node.name == ctx.cluster.etcd_hosts[0].name


def kubelet_flags(ctx: Context) -> List[str]:
    """The guide's kubelet command line past --config: the runtime's CRI endpoint (none for
    1.23's dockershim, the kubelet's default; with --container-runtime=remote before 1.24,
    where the default was docker), and the bundle's pause image as the sandbox image before
    1.27, which kubeadm's kubelet flags (kubeadm-flags.env, cmd/kubeadm/app/phases/kubelet/
    flags.go) otherwise give: the kubelet's own default names k8s.gcr.io, which an offline
    host cannot pull."""
    from installer.steps.kubeadm import settings

    k = settings(ctx)
    flags = []
    if not (ctx.info.runtime == "docker" and k.minor <= 23):
        flags += (["--container-runtime=remote"] if k.minor <= 23 else []) + [
            "--container-runtime-endpoint=" + k.cri_socket]
    if ctx.info.pause_image and k.minor <= 26:
        flags.append("--pod-infra-container-image=" + ctx.info.pause_image)
    return flags


def certs_findings(ctx: Context) -> List[str]:
    """Why this etcd host cannot go on (empty when it can): a host after the first without
    --etcd-certs and without the etcd CA, or one whose etcd CA is not the file's."""
    ca = PKI + "/etcd/ca.crt"
    given = ctx.etcd_certs
    if given is None:
        if is_first(ctx) or ctx.host.exists(ca):
            return []
        return ["{} is an etcd.external host after the first: install needs {} FILE, the "
                "etcd CA of this cluster".format(ctx.node.name, etcdcerts.OPTION)]
    clash = etcdcerts.conflicts(ctx.host.read_text, given)
    return ["{} holds another etcd CA than {}: {}".format(ctx.node.name, ctx.etcd_certs_path,
                                                          ", ".join(clash))] if clash else []


def require_certs(ctx: Context) -> None:
    problems = certs_findings(ctx)
    if problems:
        raise PreconditionError(problems[0], hint=etcdcerts.where_from(ctx.cluster))


def _kubelet(ctx: Context) -> List[Action]:
    host = ctx.host
    files = [(KUBELET_CONFIG, render("kubelet-etcd.yaml.j2")),
             (DROP_IN, render("20-etcd-service-manager.conf.j2", config=KUBELET_CONFIG,
                              flags=kubelet_flags(ctx)))]
    stale = [(p, t) for p, t in files if host.needs_write(p, t.encode("utf-8")) is not None]
    found = []  # the binaries step enabled the kubelet, as on every node
    if stale:
        def write() -> str:
            for path, text in stale:
                host.write(path, text)
            ctx.runner.run(["systemctl", "daemon-reload"])
            ctx.runner.run(["systemctl", "restart", "kubelet"])
            return "write {}; restart the kubelet as etcd's service manager".format(
                ", ".join(p for p, _ in stale))

        found.append(Action("write {}, restart the kubelet".format(
            ", ".join(p for p, _ in stale)), write))
    return found


def _write_pki(ctx: Context) -> str:
    """The file's part for this host (EtcdCerts.pairs), after checking nothing clashes."""
    require_certs(ctx)
    given = ctx.etcd_certs
    if given is None:  # require_certs let a host through that needs no file
        return "nothing to write"
    written = []
    for path, text, mode in given.pairs(ctx.node.is_etcd_host):
        if ctx.host.write(path, text, mode):
            written.append(path)
    return "write {} from {}".format(", ".join(written) or "nothing", ctx.etcd_certs_path)


def _kubeadm(ctx: Context, *args: str) -> None:
    ctx.runner.run(["kubeadm", "init", "phase"] + list(args), timeout=300,
                   hint="see {} and `journalctl -u kubelet`".format(ETCD_CONFIG))


def _write_certs_file(ctx: Context) -> str:
    certs = etcdcerts.of_pki(ctx.host.read_text, ctx.cluster)
    ctx.host.write(etcdcerts.FILE, etcdcerts.dump(certs), 0o600)
    return "wrote {} (mode 0600): copy it to the other etcd hosts and the first control " \
        "plane, and pass it with {}".format(ctx.host.path(etcdcerts.FILE), etcdcerts.OPTION)


def _certificates(ctx: Context, config: str) -> List[Action]:
    host = ctx.host
    found = []
    if not host.exists(PKI + "/etcd/ca.crt"):
        if ctx.etcd_certs is not None:
            found.append(Action("write the etcd CA from " + str(ctx.etcd_certs_path),
                                partial(_write_pki, ctx)))
        elif is_first(ctx):
            found.append(Action("kubeadm init phase certs etcd-ca",
                                partial(_kubeadm, ctx, "certs", "etcd-ca")))
        else:
            found.append(Action("write the etcd CA (needs {} FILE)".format(etcdcerts.OPTION),
                                partial(require_certs, ctx)))
    phases = list(MEMBER_CERTS) + ([("apiserver-etcd-client", "apiserver-etcd-client.crt")]
                                   if is_first(ctx) else [])
    for phase, cert in phases:
        if not host.exists(PKI + "/" + cert):
            found.append(Action("kubeadm init phase certs " + phase,
                                partial(_kubeadm, ctx, "certs", phase, "--config", config)))
    if is_first(ctx) and (found or not host.exists(etcdcerts.FILE)):
        found.append(Action("write " + etcdcerts.FILE, partial(_write_certs_file, ctx)))
    return found


class EtcdHostStep(ActionStep):
    name = "etcd-host"
    title = "etcd as a static pod on an etcd.external host (kubeadm's HA etcd guide)"

    def actions(self, ctx: Context) -> List[Action]:
        from installer.steps.kubeadm import settings

        members = [kubeadmconfig.NodeAddress(h.name, h.address) for h in ctx.cluster.etcd_hosts]
        config = kubeadmconfig.etcd_host_config(
            settings(ctx), kubeadmconfig.NodeAddress(ctx.node.name, ctx.node.address), members,
            # members on loopback addresses share the host's 127.0.0.1:2381 (the tests' hosts)
            metrics_on_address=ctx.node.address.startswith("127."))
        found = _kubelet(ctx)
        if ctx.host.needs_write(ETCD_CONFIG, config.encode("utf-8")) is not None:
            found.append(Action("write " + ETCD_CONFIG,
                                partial(ctx.host.write, ETCD_CONFIG, config)))
        found += _certificates(ctx, ETCD_CONFIG)
        if not ctx.host.exists(MANIFEST):
            found.append(Action("kubeadm init phase etcd local",
                                partial(_kubeadm, ctx, "etcd", "local", "--config", ETCD_CONFIG)))
        return found


def first_control_plane_files(ctx: Context) -> List[Action]:
    """On the first control plane of an etcd.external cluster: the etcd CA certificate and the
    apiserver-etcd-client pair from --etcd-certs, before kubeadm init reads them."""
    if ctx.etcd_certs is None:
        return []
    if all(ctx.host.needs_write(p, t.encode("utf-8"), m) is None
           for p, t, m in ctx.etcd_certs.pairs(False)):
        return []
    return [Action("write the etcd CA certificate and apiserver-etcd-client pair from " +
                   str(ctx.etcd_certs_path), partial(_write_pki, ctx))]
