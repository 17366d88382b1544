"""The options and start-up every installer command shares (installer/cli.py and the commands
of installer/clicare.py, clifleet.py, cliupgrade.py): --root/--dry-run/-v, --json, the run log,
the program's name, and the printing of a run's steps (install, upgrade, plan); the host
commands' --bundle/--cluster/--node/--key and the keys --key or the .pyz trusts."""

import os
import pkgutil
import sys
from typing import Callable, Optional

import click

from installer import __version__, runlog
from installer.format import minisig
from installer.format.clikit import configure_logging
from installer.format.errors import UsageError

_ARGV = []  # type: list  # this run's arguments, for the run log (set by cli.main)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def common_options(func: Callable) -> Callable:
    """--root, --dry-run and -v, which every installer command takes."""
    func = click.option("-v", "--verbose", count=True, help="More diagnostics (-vv: debug).")(func)
    func = click.option(
        "--dry-run", is_flag=True, help="Print the commands instead of running them."
    )(func)
    func = click.option(
        "--root",
        default="/",
        show_default=True,
        type=click.Path(file_okay=False),
        help="Read and write every host file under this folder (like rpm --root).",
    )(func)
    return func


def _begin(verbose: int, root: str, dry_run: bool) -> None:
    """Logging for -v, and (unless --dry-run) this run's log file under ROOT/var/log/kubecrate
    (installer/runlog.py)."""
    configure_logging(verbose)
    if not dry_run:
        context = click.get_current_context()
        runlog.start(root, context.info_name, [_prog_name()] + _ARGV, __version__)


def _prog_name() -> str:
    """What the user typed: the .pyz's file name, or `python3 -m installer` in a checkout."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv else ""
    return invoked if invoked.endswith(".pyz") else "python3 -m installer"


def _print_outcome(outcome, dry_run: bool, unchanged: str, changed: str) -> None:
    """install's and upgrade's steps, then "nothing to change: NODE (ROLE)<unchanged>" or
    "made|would make N change(s) on NODE (ROLE)<changed>" (each phrase names the bundle)."""
    _print_steps(outcome.steps, "unchanged")
    where = "{} ({})".format(outcome.node, outcome.role)
    if outcome.changes == 0:
        click.echo("nothing to change: {}{}".format(where, unchanged.format(outcome.bundle)))
    else:
        click.echo("{} {} change(s) on {}{}".format("would make" if dry_run else "made",
                                                     outcome.changes, where,
                                                     changed.format(outcome.bundle)))


def _print_steps(steps, clean: str, start: int = 1) -> None:
    for number, step in enumerate(steps, start):
        click.echo("  {}. {}: {}".format(number, step.name,
                                         "{} change(s)".format(len(step.changes))
                                         if step.changes else clean))
        for change in step.changes:
            click.echo("       - " + change)


# ------------------------------------------------------------------ host commands' options

EMBEDDED_KEY = "trusted.pub"  # written into the package by the zipapp build
RETIRING_KEYS = "trusted-retiring.json"  # written too when the build rotated the key


def trusted_key(path: Optional[str]) -> minisig.Trust:
    """The key named by --key, else the keys embedded in this installer: the builder's, and
    after a key rotation the previous one until its expiry date (docs/security.md)."""
    if path:
        return minisig.load_public_key(path)
    data = _from_package(EMBEDDED_KEY)
    if data is None:
        raise UsageError(
            "no --key given and this installer has no embedded public key",
            hint="pass --key kubecrate.pub (the builder's public key)",
        )
    current = minisig.TrustedKey(minisig.parse_public_key(data.decode("utf-8"), "embedded key"))
    retiring = _from_package(RETIRING_KEYS)
    if retiring is None:
        return minisig.Keyring((current,))
    return minisig.Keyring((current,) + minisig.parse_retiring(
        retiring.decode("utf-8"), "embedded " + RETIRING_KEYS))


def _from_package(name: str) -> Optional[bytes]:
    try:
        return pkgutil.get_data("installer", name)
    except OSError:
        return None


key_option = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="minisign public key (.pub) to trust instead of the embedded one.",
)
bundle_option = click.option("--bundle", "bundle_path", required=True, type=click.Path(),
                             help="The signed bundle tar, or its cache folder "
                             "(ROOT/var/lib/kubecrate/bundles/<digest>) without the tar.")
# preflight, plan, install: a joining node may leave the bundle to its join.yaml
joinable_bundle_option = click.option(
    "--bundle", "bundle_path", type=click.Path(),
    help="The signed bundle tar, or its cache folder (ROOT/var/lib/kubecrate/bundles/<digest>) "
         "without the tar [default with --join: fetched from the first control-plane node's "
         "bundle server that join.yaml names, pinned by its CA hash].")
cluster_option = click.option("--cluster", "cluster_path", required=True,
                              type=click.Path(dir_okay=False), help="cluster.yaml.")
node_option = click.option("--node", "node_name", help="This host's node name in cluster.yaml "
                           "[default: found by the host's addresses].")


def _options(bundle_path, cluster_path, key_path, root, node_name, dry_run, join_path=None,
             join_out=None, host_only=False, etcd_certs=None):
    from installer.session import Options

    return Options(bundle_path, cluster_path, trusted_key(key_path), root, node_name, dry_run,
                   lambda line: click.echo(line, err=True), join_path, join_out, host_only,
                   etcd_certs)
