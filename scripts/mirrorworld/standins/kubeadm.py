"""The kubeadm stand-in: the command-line surface the installer drives (docs/testing.md)."""

import argparse
import http.client
import json
import os
import shutil
import ssl
import sys

import _kubeadm_config as config
import _kubeadm_init as kinit
import _pki
from _common import (
    STATE_DIR,
    VERSION,
    StandinError,
    go_version_struct,
    now,
    read_pid,
    rooted,
    stop_kubelet,
    stop_pid,
    version_info,
)

TRACE_HINT = "To see the stack trace of this error execute with --v=5 or higher"
RESET_DIRS = ["/etc/kubernetes/manifests", "/etc/kubernetes/pki", "/var/lib/etcd",
              "/var/lib/kubelet", "/var/lib/dockershim", "/var/run/kubernetes", "/var/lib/cni"]
RESET_FILES = ["/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf",
               "/etc/kubernetes/bootstrap-kubelet.conf", "/etc/kubernetes/controller-manager.conf",
               "/etc/kubernetes/scheduler.conf"]


def _csv(text):
    return [x.strip().lower() for x in text.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeadm", description="kubeadm stand-in " + VERSION)
    p.add_argument("--v", "-v", default="0")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("version")
    v.add_argument("-o", "--output", default="")
    c = sub.add_parser("config").add_subparsers(dest="sub", required=True)
    c = c.add_parser("images").add_subparsers(dest="sub2", required=True).add_parser("list")
    c.add_argument("--kubernetes-version")
    c.add_argument("--image-repository")
    c.add_argument("--config")
    i = sub.add_parser("init")
    i.add_argument("phase", nargs="*")
    i.add_argument("--config")
    i.add_argument("--upload-certs", action="store_true")
    i.add_argument("--certificate-key")
    i.add_argument("--skip-certificate-key-print", action="store_true")
    i.add_argument("--ignore-preflight-errors", type=_csv, default=[])
    i.add_argument("--kubeconfig", default=kinit.ADMIN_CONF)
    j = sub.add_parser("join")
    j.add_argument("endpoint", nargs="?")
    j.add_argument("--config")
    for flag in ("--token", "--discovery-token", "--certificate-key", "--node-name",
                 "--cri-socket", "--apiserver-advertise-address"):
        j.add_argument(flag)
    j.add_argument("--apiserver-bind-port", type=int)
    j.add_argument("--discovery-token-ca-cert-hash", action="append")
    j.add_argument("--discovery-token-unsafe-skip-ca-verification", action="store_true")
    j.add_argument("--control-plane", action="store_true")
    j.add_argument("--ignore-preflight-errors", type=_csv, default=[])
    t = sub.add_parser("token").add_subparsers(dest="sub", required=True)
    tc = t.add_parser("create")
    tc.add_argument("token", nargs="?")
    tc.add_argument("--config")
    # None = not given: kubeadm refuses these next to --config (mixed_flags below)
    tc.add_argument("--ttl")
    tc.add_argument("--description")
    tc.add_argument("--usages")
    tc.add_argument("--groups")
    tc.add_argument("--print-join-command", action="store_true")
    tc.add_argument("--kubeconfig", default=kinit.ADMIN_CONF)
    tl = t.add_parser("list")
    tl.add_argument("--kubeconfig", default=kinit.ADMIN_CONF)
    td = t.add_parser("delete")
    td.add_argument("tokens", nargs="+")
    td.add_argument("--kubeconfig", default=kinit.ADMIN_CONF)
    ce = sub.add_parser("certs").add_subparsers(dest="sub", required=True)
    ce.add_parser("certificate-key")
    cr = ce.add_parser("renew")
    cr.add_argument("which")
    cr.add_argument("--config")
    cr.add_argument("--kubeconfig", default=kinit.ADMIN_CONF)
    cr.add_argument("--cert-dir", default="/etc/kubernetes/pki")
    u = sub.add_parser("upgrade").add_subparsers(dest="sub", required=True)
    for name in ("plan", "apply", "node"):
        un = u.add_parser(name)
        if name == "apply":
            un.add_argument("version", nargs="?")
            un.add_argument("-y", "--yes", action="store_true")
            un.add_argument("-f", "--force", action="store_true")
        if name != "plan":  # apply.go and node.go: options.AddPatchesFlag
            un.add_argument("--patches")
        un.add_argument("--ignore-preflight-errors", type=_csv, default=[])
        un.add_argument("--kubeconfig", default=kinit.ADMIN_CONF)
        un.add_argument("--config")
    r = sub.add_parser("reset")
    r.add_argument("-f", "--force", action="store_true")
    r.add_argument("--cri-socket")
    r.add_argument("--ignore-preflight-errors", type=_csv, default=[])
    return p


def cmd_version(args) -> None:
    if args.output == "short":
        print(VERSION)
    elif args.output == "json":
        print(json.dumps({"clientVersion": version_info()}, indent=2))
    elif args.output in ("", None):
        print("kubeadm version: &" + go_version_struct())
    else:
        raise StandinError('error: invalid output format "%s"' % args.output)


def cmd_images(args) -> None:
    version, repo = args.kubernetes_version, args.image_repository
    if args.config:
        cluster = config.load(args.config).get("ClusterConfiguration") or {}
        version = version or cluster.get("kubernetesVersion")
        repo = repo or cluster.get("imageRepository")
    if not version:
        sys.stderr.write(
            'W0101 00:00:00.000000 version.go:103] could not fetch a Kubernetes version from '
            'the internet: unable to get URL "https://dl.k8s.io/release/stable-1.txt": Get '
            '"https://dl.k8s.io/release/stable-1.txt": dial tcp: lookup dl.k8s.io: no such host\n'
            "W0101 00:00:00.000000 version.go:104] falling back to the local client version: "
            "%s\n" % VERSION)
        version = VERSION
    print("\n".join(config.images(version, repo)))


def mixed_flags(args, names) -> None:
    """kubeadm's ValidateMixedArguments (cmd/kubeadm/app/apis/kubeadm/validation/
    validation.go, called by cmd/init.go newInitData and cmd/token.go's create RunE): with
    --config, only --config, --kubeconfig, --upload-certs, --dry-run, --node-name, --v,
    --print-join-command, --ignore-preflight-errors and --skip-* may be given too."""
    if not getattr(args, "config", None):
        return
    mixed = [name for name in names if getattr(args, name.replace("-", "_"), None)]
    if mixed:
        raise StandinError("can not mix '--config' with arguments [%s]" % " ".join(mixed))


def config_version(cfg: dict) -> str:
    """ClusterConfiguration.kubernetesVersion, else what kubeadm does when it is missing:
    ask dl.k8s.io for stable-1 and fall back to its own version after the lookup fails
    (cmd/kubeadm/app/util/config/initconfiguration.go SetClusterDynamicDefaults ->
    NormalizeKubernetesVersion -> util/version.go KubernetesReleaseVersion). Offline this
    is a long timeout on a real host; the stand-in prints kubeadm's warning."""
    version = (cfg.get("ClusterConfiguration") or {}).get("kubernetesVersion")
    if version:
        return str(version)
    sys.stderr.write(
        'W0101 00:00:00.000000 version.go:103] could not fetch a Kubernetes version from '
        'the internet: unable to get URL "https://dl.k8s.io/release/stable-1.txt": Get '
        '"https://dl.k8s.io/release/stable-1.txt": dial tcp: lookup dl.k8s.io: no such host\n'
        "W0101 00:00:00.000000 version.go:104] falling back to the local client version: "
        "%s\n" % VERSION)
    return VERSION


def cmd_upload_certs(args) -> None:
    # phases/init/uploadcerts.go runUploadCerts; the flags are init's (cmd/init.go), so the
    # same --config / --certificate-key refusal applies to the phase.
    mixed_flags(args, ["certificate-key"])
    cfg = config.load(args.config) if args.config else {}
    config_version(cfg)
    if not args.upload_certs:
        print("[upload-certs] Skipping phase. Please see --upload-certs")
        return
    key = args.certificate_key
    if args.config:
        key = (cfg.get("InitConfiguration") or {}).get("certificateKey")
    errors = []
    config.check_certificate_key(key, "--certificate-key", errors)
    if errors:
        raise config.ConfigError("\n".join(errors))
    kinit.upload_certs(kinit.Admin(args.kubeconfig), key or _pki.new_certificate_key(),
                       print_key=not args.skip_certificate_key_print,
                       cluster=cfg.get("ClusterConfiguration"))


def cmd_token(args) -> None:
    api = kinit.Admin(args.kubeconfig)
    if args.sub == "list":
        items = api.call("GET", "/api/v1/namespaces/kube-system/secrets")["items"]
        print("TOKEN                     TTL         EXPIRES                USAGES"
              "                   DESCRIPTION")
        for item in items:
            data = item.get("stringData") or {}
            if item.get("type") != "bootstrap.kubernetes.io/token":
                continue
            exp = data.get("expiration")
            left = "<forever>" if not exp else "%dh" % max(0, (_epoch(exp) - now()) // 3600)
            print("%s.%s   %-11s %-22s authentication,signing   %s" % (
                data["token-id"], data["token-secret"], left, exp or "<never>",
                data.get("description") or "<none>"))
        return
    if args.sub == "delete":
        for tok in args.tokens:
            tid = tok.split(".")[0]
            api.call("DELETE", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-" + tid)
            print('bootstrap token "%s" deleted' % tid)
        return
    mixed_flags(args, ["ttl", "description", "usages", "groups"])
    ttl, description = args.ttl or "24h0m0s", args.description or ""
    token = args.token or kinit.new_token()
    if args.config:
        # cmd/token.go RunCreateToken: LoadOrDefaultInitConfiguration(cfgPath, ...) reads
        # the file only, so the token, ttl and description are bootstrapTokens[0]'s (a
        # positional [token] is ignored); no bootstrapTokens: kubeadm's default, a new one.
        cfg = config.load(args.config)
        config_version(cfg)
        tokens = (cfg.get("InitConfiguration") or {}).get("bootstrapTokens") or [{}]
        first = tokens[0]
        token = first.get("token") or kinit.new_token()
        ttl, description = first.get("ttl", "24h0m0s"), first.get("description", "")
    errors = []
    config.check_token(token, "token", errors)
    if errors:
        raise config.ConfigError("\n".join(errors))
    kinit.create_token(api, token, ttl, description)
    if not args.print_join_command:
        print(token)
        return
    info = api.call("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info")
    server = _pki.read_kubeconfig_text(info["data"]["kubeconfig"])["server"]
    print("kubeadm join %s --token %s --discovery-token-ca-cert-hash %s " % (
        server.split("://", 1)[-1], token, _pki.ca_cert_hash(api.kc["ca"])))


def _epoch(text):
    from _common import parse_rfc3339

    return parse_rfc3339(text)


def _remove_etcd_member() -> None:
    """kubeadm reset's remove-etcd-member phase (cmd/kubeadm/app/cmd/phases/reset/
    removeetcdmember.go): where a real etcd runs, this node's member (found by its peer URL)
    leaves the cluster; a failure is a warning, as kubeadm's."""
    import json
    import subprocess

    import _etcdpod
    from kubelet import manifest_flags

    etcdctl, manifest = _etcdpod.binary("etcdctl"), rooted(kinit.MANIFESTS + "/etcd.yaml")
    if not etcdctl or not os.path.exists(manifest):
        return
    try:
        flags = manifest_flags(manifest)
        peer = flags["initial-advertise-peer-urls"]
        peers = [p.split("=", 1)[1] for p in flags["initial-cluster"].split(",")]
        pki = _pki.pki_path("")
        base = [etcdctl, "--endpoints=" + ",".join(
            p.replace(":2380", ":2379") for p in peers),
            "--cacert=" + pki + "etcd/ca.crt", "--cert=" + pki + "apiserver-etcd-client.crt",
            "--key=" + pki + "apiserver-etcd-client.key", "--dial-timeout=3s",
            "--command-timeout=10s"]
        listed = subprocess.run(base + ["member", "list", "-w", "json"], capture_output=True,
                                text=True, timeout=60)
        if listed.returncode != 0:
            raise StandinError(listed.stderr.strip()[-300:])
        mine = [m for m in json.loads(listed.stdout).get("members") or []
                if peer in (m.get("peerURLs") or [])]
        for member in mine:
            gone = subprocess.run(base + ["member", "remove", "%x" % member["ID"]],
                                  capture_output=True, text=True, timeout=60)
            if gone.returncode != 0:
                raise StandinError(gone.stderr.strip()[-300:])
            print("[reset] Removed etcd member %x (%s)" % (member["ID"], peer))
    except (StandinError, OSError, KeyError, ValueError, subprocess.TimeoutExpired) as exc:
        print("[reset] Failed to remove etcd member: %s, please manually remove this etcd "
              "member using etcdctl" % exc)


def cmd_reset(args) -> None:
    if not args.force:
        print("[reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' "
              "will be reverted.\n[reset] Are you sure you want to proceed? [y/N]: ", end="")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise StandinError("aborted reset operation")
    print("[reset] Reading configuration from the cluster...")
    manifest = rooted("/etc/kubernetes/manifests/kube-apiserver.yaml")
    if os.path.exists(manifest) and os.path.exists(rooted(kinit.ADMIN_CONF)):
        try:
            from kubelet import manifest_flags

            flags = manifest_flags(manifest)
            member = "%s:%s" % (flags["advertise-address"], flags["secure-port"])
            kinit.Admin().call("DELETE", "/kubecrate/v1/members/" + member)
            print("[reset] Removing info for node from the ConfigMap \"kubeadm-config\" in the "
                  '"kube-system" Namespace\n[reset] Removed member %s of the etcd cluster' % member)
        except Exception as exc:  # best effort, as kubeadm's
            print("[reset] WARNING: failed to remove etcd member: %s" % exc)
    _remove_etcd_member()
    print("[preflight] Running pre-flight checks\n[reset] Stopping the kubelet service")
    stop_kubelet()
    print('[reset] Unmounting mounted directories in "/var/lib/kubelet"\n'
          "[reset] Removing all containers")
    # "Removing all containers": every static pod the kubelet stand-in runs (the apiserver,
    # and keepalived/haproxy in static-pods mode, which would otherwise keep the VIP, and the
    # real etcd where one runs).
    names, state = ["kube-apiserver", "etcd"], rooted(STATE_DIR)
    if os.path.isdir(state):
        names += sorted(f[:-4] for f in os.listdir(state)
                        if f.startswith("pod-") and f.endswith(".pid"))
    for name in names:
        pid = read_pid(name)
        if pid:
            stop_pid(pid)
    print("[reset] Deleting contents of directories: %s" % RESET_DIRS)
    for folder in RESET_DIRS:
        path = rooted(folder)
        for entry in os.listdir(path) if os.path.isdir(path) else []:
            full = os.path.join(path, entry)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
    print("[reset] Deleting files: %s" % RESET_FILES)
    for name in RESET_FILES:
        if os.path.lexists(rooted(name)):
            os.unlink(rooted(name))
    print("\nThe reset process does not clean CNI configuration. To do so, you must remove "
          "/etc/cni/net.d\n\nThe reset process does not reset or clean up iptables rules or IPVS "
          'tables.\nIf you wish to reset iptables, you must do so manually by using the "iptables"'
          " command.\n\nIf your cluster was setup to utilize IPVS, run ipvsadm --clear (or "
          "similar)\nto reset your system's IPVS tables.\n\nThe reset process does not clean your "
          "kubeconfig files and you must remove them manually.\nPlease, check the contents of the "
          "$HOME/.kube/config file.")


# cmd/kubeadm/app/cmd/util/cmdutil.go, ValidateMixedArguments / isAllowedFlag: with --config,
# every other flag that was set is refused except these and the skip-* ones.
MIXABLE = {"config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name",
           "kubeconfig-dir", "upload-certs", "print-join-command", "rootfs", "v", "log-file"}


def mixed_argv(argv: list) -> list:
    """The flags set on argv that real kubeadm refuses beside --config (in argv order): init
    and join, whatever they set; mixed_flags() above checks named flags of other commands."""
    names = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--")]
    if "config" not in names:
        return []
    return [n for n in dict.fromkeys(names) if n not in MIXABLE and not n.startswith("skip-")]


def cmd_certs_renew(args) -> None:
    """`kubeadm certs renew all` (cmd/kubeadm/app/cmd/certs.go, newCmdCertsRenewal and
    renewCert): every kubeadm-managed leaf certificate and the client
    certificates of admin.conf, controller-manager.conf and scheduler.conf are issued again by
    the local CA, one year from now; the CAs are not; the running components keep the old ones
    until restarted, which kubeadm says and leaves to the operator."""
    if args.which != "all":
        raise StandinError("the stand-in supports only `certs renew all`, not %r" % args.which)
    if args.cert_dir != "/etc/kubernetes/pki":
        raise StandinError("the stand-in supports only the default --cert-dir")
    print("[renew] Reading configuration from the cluster...")
    print("[renew] FYI: You can look at this config file with 'kubectl -n kube-system get cm "
          "kubeadm-config -o yaml'")
    print()
    for line in _pki.renew_all():
        print(line)
    print()
    print("Done renewing certificates. You must restart the kube-apiserver, "
          "kube-controller-manager, kube-scheduler and etcd, so that they can use the new "
          "certificates.")


def run(args) -> None:
    if args.cmd == "version":
        cmd_version(args)
    elif args.cmd == "config":
        cmd_images(args)
    elif args.cmd == "init":
        if args.phase == ["phase", "upload-certs"]:
            cmd_upload_certs(args)
        elif len(args.phase) == 3 and args.phase[:2] == ["phase", "certs"] or \
                args.phase == ["phase", "etcd", "local"]:
            import _kubeadm_phases as phases

            cfg = config.load(args.config) if args.config else {}
            if args.phase[1] == "certs":
                phases.certs(args.phase[2], cfg)
            else:
                phases.etcd_local(cfg)
        elif args.phase:
            raise StandinError("the stand-in supports only `init phase upload-certs`, `certs "
                               "<etcd certificate>` and `etcd local`, not %r"
                               % " ".join(args.phase))
        else:
            if not args.config:
                raise StandinError("the stand-in needs `kubeadm init --config FILE`")
            print(kinit.init(args.config, args.upload_certs, args.ignore_preflight_errors))
    elif args.cmd == "join":
        import _kubeadm_join

        print(_kubeadm_join.join(args))
    elif args.cmd == "token":
        cmd_token(args)
    elif args.cmd == "certs" and args.sub == "renew":
        cmd_certs_renew(args)
    elif args.cmd == "certs":
        print(_pki.new_certificate_key())
    elif args.cmd == "reset":
        cmd_reset(args)
    elif args.cmd == "upgrade":
        import _kubeadm_upgrade

        if args.config:
            raise StandinError("the stand-in takes no --config for `kubeadm upgrade`")
        _kubeadm_upgrade.run(args)


def main(argv: list) -> int:
    args = parser().parse_args(argv)
    try:
        mixed = mixed_argv(argv) if args.cmd in ("init", "join") else []
        if mixed:
            raise StandinError("can not mix '--config' with arguments [%s]" % " ".join(mixed))
        run(args)
    except kinit.PhaseError as exc:
        sys.stdout.flush()
        sys.stderr.write("%s\n%s\n" % (exc, TRACE_HINT))
        return 1
    except StandinError as exc:
        sys.stdout.flush()
        sys.stderr.write("%s\n" % exc)
        return 1
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        sys.stdout.flush()
        sys.stderr.write("error: %s: %s\n%s\n" % (type(exc).__name__, exc, TRACE_HINT))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
