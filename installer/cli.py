"""kubecrate-installer command line: parse, call one core function, map errors to exit codes."""

import contextlib
import sys
from typing import Iterator, Optional, Sequence

import click

from installer import (
    __version__,
    clicare,
    clietcd,
    clifleet,
    cliimages,
    cliupgrade,
    runlog,
    textlocale,
)
from installer.bundlecache import cache_root
from installer.cliopts import (
    _ARGV,
    _begin,
    _options,
    _print_outcome,
    _print_steps,
    _prog_name,
    cluster_option,
    common_options,
    joinable_bundle_option,
    json_option,
    key_option,
    node_option,
    trusted_key,
)
from installer.format import bundle, minisig
from installer.format.clikit import configure_logging, run
from installer.format.delta import read_plan
from installer.format.errors import EXIT_CODES_HELP, ExitCode, UsageError
from installer.hostfiles import naming_full_disk
from installer.source import BundleSource, open_source

HELP = (
    """Install a kubecrate bundle on this host.

\b
Typical use on an isolated host:
  kubecrate-installer.pyz verify  k8s.tar
  kubecrate-installer.pyz unpack  k8s.tar
  kubecrate-installer.pyz install --bundle k8s.tar --cluster cluster.yaml

The signature X.tar.minisig must sit next to X.tar. The builder's public key is embedded in
the .pyz; --key overrides it. Wherever a bundle tar is taken, its cache folder
(/var/lib/kubecrate/bundles/<digest>, kept by unpack and install) is taken too: a reinstall
needs no tar.

"""
    + EXIT_CODES_HELP
)

def _embedded_keyring() -> Optional[minisig.Keyring]:
    """The embedded keys, or None in a checkout (no embedded key)."""
    try:
        trust = trusted_key(None)
    except UsageError:
        return None
    return trust if isinstance(trust, minisig.Keyring) else None


signature_option = click.option(
    "--signature",
    "signature_path",
    type=click.Path(dir_okay=False),
    help="Signature file [default: BUNDLE.minisig].",
)


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubecrate-installer")
def cli() -> None:
    pass


@cli.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@key_option
@signature_option
@common_options
def verify_cmd(bundle_path, key_path, signature_path, root, dry_run, verbose):
    """Check BUNDLE, a bundle tar or a cache folder (ROOT/var/lib/kubecrate/bundles/<digest>):
    its signature and every file against bundle.json, in one read.

    Writes nothing. Exit code 3 names what failed: the signature, or the file with its
    expected and actual digest.
    """
    _begin(verbose, root, dry_run)
    source = open_source(bundle_path, signature_path)
    key = trusted_key(key_path)
    with _progress_bar(source, "verify") as progress:
        checked = source.verify(key, progress)
    _report(checked, "verified")


@cli.command("unpack")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@key_option
@signature_option
@common_options
def unpack_cmd(bundle_path, key_path, signature_path, root, dry_run, verbose):
    """Verify BUNDLE and extract it into ROOT/var/lib/kubecrate/bundles/<digest>/.

    The bundle is read once: hashed for its signature while every member is checked and
    written into a staging folder beside the cache, which is renamed into place only when the
    signature and every member matched. A bundle already in the cache is checked file by file
    instead, and not extracted again.
    """
    _begin(verbose, root, dry_run)
    if dry_run:
        click.echo("would unpack {} into {}".format(bundle_path, cache_root(root)))
        return
    source = open_source(bundle_path, signature_path)
    key = trusted_key(key_path)
    with _progress_bar(source, "unpack") as progress, \
            naming_full_disk(cache_root(root), "unpacking " + bundle_path):
        staged = source.stage(key, root, progress)
        reused = staged.in_cache
        try:
            directory = staged.commit()
        finally:
            staged.discard()
    _report(staged.bundle, "already unpacked" if reused else "unpacked")
    click.echo(directory)


@contextlib.contextmanager
def _progress_bar(source: BundleSource, what: str) -> Iterator:
    """A byte bar on a TTY (a tar is read once), else nothing (and no tqdm to import)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=source.size(), unit="B", unit_scale=True, desc=what, leave=False) as bar:
        yield bar.update


# ------------------------------------------------------------------ host commands

host_only_option = click.option(
    "--host-only", "host_only", is_flag=True,
    help="Only the host steps (through binaries): prepare this host now, join it later.")
join_option = click.option("--join", "join_path", type=click.Path(dir_okay=False),
                           help="join.yaml from the first control-plane node (or join-info): "
                           "every node but the first joins with it.")
etcd_certs_option = click.option(
    "--etcd-certs", "etcd_certs", type=click.Path(dir_okay=False),
    help="etcd.external: the etcd-certs.json the first etcd host's install wrote "
    "(ROOT/etc/kubernetes/kubecrate/etcd-certs.json there, mode 0600): the other etcd hosts "
    "and the first control-plane node take the etcd CA from it.")


@cli.command("preflight")
@joinable_bundle_option
@cluster_option
@node_option
@join_option
@etcd_certs_option
@key_option
@json_option
@common_options
def preflight_cmd(bundle_path, cluster_path, node_name, join_path, etcd_certs, key_path, as_json,
                  root, dry_run, verbose):
    """Check this host against the bundle and its role; changes nothing. Exit 4 on failure."""
    from installer import session
    from installer.steps.preflight import describe

    _begin(verbose, root, dry_run)
    outcome = session.preflight(_options(bundle_path, cluster_path, key_path, root, node_name,
                                         True, join_path, etcd_certs=etcd_certs))
    if as_json:
        click.echo(session.to_json(outcome))
        return
    click.echo("preflight for {} ({}), bundle {}:".format(outcome.node, outcome.role,
                                                          outcome.bundle))
    for line in describe(outcome.findings):
        click.echo("  " + line)


@cli.command("plan")
@joinable_bundle_option
@cluster_option
@node_option
@join_option
@etcd_certs_option
@host_only_option
@cliupgrade.no_drain_option
@cliupgrade.kubeconfig_option
@key_option
@json_option
@common_options
def plan_cmd(bundle_path, cluster_path, node_name, join_path, etcd_certs, host_only, no_drain,
             kubeconfig, key_path, as_json, root, dry_run, verbose):
    """Print the steps this host would run and what each would change; changes nothing. On a
    node that runs a cluster of an older bundle: the steps of `upgrade --bundle` (--no-drain
    and --kubeconfig as for upgrade)."""
    from installer import session
    from installer.steps.preflight import describe

    _begin(verbose, root, dry_run)
    outcome = session.plan(_options(bundle_path, cluster_path, key_path, root, node_name, True,
                                    join_path, host_only=host_only, etcd_certs=etcd_certs),
                           not no_drain, kubeconfig)
    if as_json:
        click.echo(session.to_json(outcome))
        return
    click.echo("plan for {} ({}), bundle {}:".format(outcome.node, outcome.role, outcome.bundle))
    click.echo("  1. preflight: passed")
    for line in describe(outcome.findings, verbose=False):
        click.echo("       " + line)
    _print_steps(outcome.steps, "nothing to change", start=2)


@cli.command("install")
@joinable_bundle_option
@cluster_option
@node_option
@join_option
@click.option("--join-out", "join_out", type=click.Path(dir_okay=False),
              help="First control-plane node: also write join.yaml here [always written to "
              "ROOT/etc/kubernetes/kubecrate/join.yaml].")
@etcd_certs_option
@host_only_option
@key_option
@json_option
@common_options
def install_cmd(bundle_path, cluster_path, node_name, join_path, join_out, etcd_certs, host_only,
                key_path, as_json, root, dry_run, verbose):
    """Install everything this host's role needs; safe to re-run (it resumes, and an installed
    host changes nothing).

    The first control-plane node in cluster.yaml brings up its load balancer, runs kubeadm init
    and writes join.yaml (mode 0600; its path is printed). Every other node joins with
    --join join.yaml; an expired join.yaml fails with exit 4 (run join-info on a control-plane
    node for a fresh one). On the control-plane node whose install completes the cluster, the
    smoke check of `status --check` runs last; when it fails, exit 5.

    An etcd.external host gets etcd as a static pod (kubeadm's HA etcd guide). The first one
    makes the etcd CA and writes etcd-certs.json (mode 0600); the other etcd hosts and then
    the first control-plane node install with --etcd-certs FILE.
    """
    from installer import session

    _begin(verbose, root, dry_run)
    outcome = session.install(_options(bundle_path, cluster_path, key_path, root, node_name,
                                       dry_run, join_path, join_out, host_only, etcd_certs))
    if as_json:
        click.echo(session.to_json(outcome))
        return _smoke_verdict(outcome)
    _print_outcome(outcome, dry_run, " already has bundle {} installed", " from bundle {}")
    _echo_smoke(*outcome.smoke)
    return _smoke_verdict(outcome)


def _smoke_verdict(outcome) -> Optional[int]:
    """Exit 5 when the smoke check at the end of install failed: the install itself is done
    (a re-run changes nothing), the cluster is not yet usable."""
    lines, passed, _note = outcome.smoke
    if not lines or passed:
        return None
    from installer.smoke import failed

    what = "; ".join(line[len("FAIL "):] for line in failed(lines))
    click.echo("install finished on {}, but the smoke check FAILED: {}. Fix what it names, "
               "then run `{} status --check` on a control-plane node.".format(
                   outcome.node, what, _prog_name()), err=True)
    return int(ExitCode.STEP_FAILED)


def _echo_smoke(lines, passed, note) -> None:
    """The smoke check's lines (installer/smoke.py), or why it did not run here."""
    if lines:
        click.echo("smoke check: " + ("passed" if passed else "FAILED"))
        for line in lines:
            click.echo("  " + line)
    if note:
        click.echo("smoke check: " + note)


@cli.command("status")
@click.option("--check", "check", is_flag=True,
              help="Also check the cluster (control-plane node): every node Ready, CoreDNS "
              "answers kubernetes.default from every node, each node reaches the next one's "
              "pod network; exit 5 when a check fails.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Also write the full report (what --json prints) to this file, for an "
              "auditor to keep or to diff between hosts.")
@json_option
@common_options
def status_cmd(check, report_path, as_json, root, dry_run, verbose):
    """What is installed on this host, from which bundle: the steps done, the signer of the
    bundle, the role's packages as rpm reports them, the images in the runtime, what preflight
    found, and when each certificate expires (a warning from 30 days on)."""
    import json

    from installer import session

    _begin(verbose, root, dry_run)
    if check:
        lines, passed, note = session.smoke(root)
        if as_json:
            click.echo(json.dumps({"passed": passed and not note, "checks": lines,
                                   "note": note}, indent=1, sort_keys=True))
        else:
            _echo_smoke(lines, passed, note)
        if note or not passed:
            return int(ExitCode.STEP_FAILED)
        return
    result = session.status(root)
    keyring = _embedded_keyring()
    if keyring is not None:  # an auditor sees which keys this installer accepts, and until when
        result["installer_keys"] = [
            {"key_id": k.key.id_hex, "expires": k.expires.isoformat() if k.expires else None}
            for k in keyring.keys]
    if report_path:
        from installer import report

        report.write(report_path, result)
        click.echo("wrote the report to {}".format(report_path), err=True)
    if as_json:
        click.echo(json.dumps(result, indent=1, sort_keys=True))
        return
    if not result.get("bundle"):
        click.echo("nothing installed by kubecrate under {}".format(root))
        return
    click.echo("node {} ({}), bundle {} ({})".format(result.get("node"), result.get("role"),
                                                     result.get("bundle_name"), result["bundle"]))
    for key in result.get("installer_keys", []):
        click.echo("this installer trusts key {}{}".format(
            key["key_id"], " (retiring: refused from {})".format(key["expires"])
            if key["expires"] else ""))
    click.echo("installed: {}".format("yes" if result["installed"] else
                                      "host prepared" if result["prepared"] else "partly"))
    for name, record in sorted(result.get("steps", {}).items(), key=lambda i: i[1]["at"]):
        click.echo("  {}: done, {} change(s)".format(name, record.get("changes", 0)))
    if result.get("steps_not_run"):
        click.echo("  not run here yet (added since this host's install): {}; re-run "
                   "`install` to add them".format(", ".join(result["steps_not_run"])))
    for name, moment in sorted(result.get("expiry", {}).items()):
        if not name.endswith("_certificate"):  # listed with every certificate below
            click.echo("{} expires {}".format(name.replace("_", " "), moment))
    if result.get("certificates"):
        from installer.certs import WARN_DAYS

        click.echo("certificates (warning under {} days):".format(WARN_DAYS))
        for item in result["certificates"]:
            click.echo("  {:<26} {}  {:>5} day(s){}{}".format(
                item["name"], item["expires"], item["days_left"],
                "  CA" if item["authority"] else "", "  WARNING" if item["warning"] else ""))
    _echo_etcd(result.get("etcd"))
    for line in result.get("warnings", []):
        click.echo(line, err=True)


def _echo_etcd(etcd) -> None:
    """status: each etcd member's database size and the alarms (installer/etcdmembers.py)."""
    if not etcd:
        return
    if "etcd_host" in etcd:
        click.echo("{}: an etcd.external host (etcd as a static pod, no Kubernetes node)"
                   .format(etcd["etcd_host"]))
    if etcd.get("error"):
        click.echo("etcd: not answering: " + etcd["error"])
        return
    if "etcd_host" in etcd:
        click.echo("etcd members (health):")
        for member in etcd["members"]:
            click.echo("  {:<12} {:<28} {}".format(member["name"], member["endpoint"], (
                "healthy" if member["healthy"] else "UNHEALTHY: " + member["error"])))
        return
    click.echo("etcd members (database size, in use):")
    for member in etcd["members"]:
        click.echo("  {:<12} {:<28} {:>10}  {:>10}{}".format(
            member["name"], member["endpoint"], member["db_size_human"],
            member["db_size_in_use_human"], "  leader" if member["leader"] else ""))
    for endpoint in etcd["not_answering"]:
        click.echo("  {:<12} {:<28} not answering".format("?", endpoint))
    for alarm in etcd["alarms"]:
        click.echo("etcd ALARM {} on member {} ({}): run `etcd-defrag`".format(
            alarm["alarm"], alarm["name"], alarm["member"]))


@cli.command("renew-certs")
@common_options
def renew_certs_cmd(root, dry_run, verbose):
    """On a control-plane node: renew every kubeadm certificate (a year from now; the CAs keep
    their ten years), restart the control-plane static pods so they load them, wait for the
    apiserver, and refresh /root/.kube/config. Run it on each control-plane node in turn,
    before `status` warns (30 days); the VIP moves to another node while this one restarts.
    Where they run, the registry's serving certificate is issued again and kubecrate-registry
    and kubecrate-bundle-server are restarted (the latter issues its own at start).
    """
    from installer import session

    _begin(verbose, root, dry_run)
    for change in session.renew_certs(root, dry_run, lambda line: click.echo(line, err=True)):
        click.echo(("would: " if dry_run else "") + change)


@cli.command("reset")
@click.option("--host", "host_too", is_flag=True,
              help="Also undo the host preparation (files back to their kept originals).")
@common_options
def reset_cmd(host_too, root, dry_run, verbose):
    """Undo the cluster on this host: kubeadm reset -f, the load balancer stopped, CNI config
    and kubeconfigs removed, the registry and the bundle server stopped and their units,
    configs and certificates removed. With --host, the host preparation too. The bundle cache
    stays, so install rebuilds the node without copying the bundle again.

    Like kubeadm reset, this leaves iptables and IPVS rules alone: flush them by hand if the
    host is not rejoining (`iptables -F; iptables -t nat -F; ipvsadm --clear`).
    """
    from installer import reset

    _begin(verbose, root, dry_run)
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if host_too:
        changes = reset.reset_host(root, dry_run, echo)
    else:
        changes = reset.reset_cluster(root, dry_run, echo)
    for change in changes:
        click.echo(("would " if dry_run else "") + change)
    click.echo("{} change(s){}".format(len(changes), " to make" if dry_run else ""))


@cli.command("join-info")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Also write join.yaml here [always ROOT/etc/kubernetes/kubecrate/join.yaml].")
@common_options
def join_info_cmd(out, root, dry_run, verbose):
    """On a control-plane node: write fresh join material (join.yaml, mode 0600) for
    `install --join`. A new bootstrap token is created and the control-plane certificates are
    re-uploaded under a new key when the recorded ones expired (24 h and 2 h)."""
    from installer import session

    _begin(verbose, root, dry_run)
    info, changes = session.join_info(root, out, dry_run, lambda line: click.echo(line, err=True))
    for change in changes:
        click.echo(change)
    click.echo("endpoint {}, token valid until {}, certificate key valid until {}".format(
        info.endpoint, info.token_expires, info.certificate_key_expires))


def _report(checked: bundle.Bundle, verb: str) -> None:
    click.echo(
        "{} {}: {} files, bundle.json sha256 {}, signed by key {}".format(
            verb,
            checked.manifest.name,
            len(checked.manifest.files),
            checked.manifest_sha256,
            minisig.key_id_hex(checked.signature.key_id),
        ),
        err=True,
    )
    click.echo("trusted comment: " + checked.signature.trusted_comment, err=True)
    plan = read_plan(checked.manifest)
    if plan is not None:  # `verify` of a delta: its own members only
        click.echo("a delta bundle: {} from base {} (bundle.json sha256 {})".format(
            plan.result_name, plan.base_name, plan.base_sha256), err=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    _ARGV[:] = list(argv) if argv is not None else sys.argv[1:]
    # Before click runs: click 8.0.4 on Python 3.6 refuses an ASCII locale (textlocale).
    if textlocale.ensure_utf8() is None and textlocale.preferred_is_ascii():
        textlocale.allow_ascii_click()
    configure_logging(0)
    run(cli, argv, prog_name=_prog_name(), runlog=runlog)


# Day-2 housekeeping commands live in installer/clicare.py.
cli.add_command(clicare.collect_logs_cmd)
cli.add_command(clicare.cache_group)
# etcd backup/restore/defrag, remove-node: installer/clietcd.py; fleet export: clifleet.py.
for _command in (clietcd.etcd_backup_cmd, clietcd.etcd_restore_cmd, clietcd.etcd_defrag_cmd,
                 clietcd.remove_node_cmd, clifleet.fleet_group, clifleet.serve_bundle_cmd,
                 clifleet.fetch_bundle_cmd):
    cli.add_command(_command)
cli.add_command(cliupgrade.upgrade_cmd)  # `upgrade --bundle`: installer/cliupgrade.py
cli.add_command(cliimages.images_group)  # `images push`: installer/cliimages.py
