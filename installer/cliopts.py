"""The options and start-up every installer command shares (installer/cli.py and the commands
of installer/clicare.py, clifleet.py, cliupgrade.py): --root/--dry-run/-v, --json, the run log,
the program's name, and the printing of a run's steps (install, upgrade, plan)."""

import os
import sys
from typing import Callable

import click

from installer import __version__, runlog
from installer.format.clikit import configure_logging

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
