"""The CLI edge shared by `kubecrate` and the installer: one place that turns errors into
messages and exit codes, and sets up logging for `-v`."""

import logging
import sys
from typing import Callable, Optional

import click

from installer.errors import ExitCode, KubecrateError
from installer.redact import RedactingFormatter, redact


def configure_logging(verbose: int) -> None:
    """-v shows info, -vv debug, on stderr; the package loggers only, never the root logger."""
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose > 1:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("installer", "builder"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = [handler]
        logger.propagate = False


def run(group: click.Group, argv: object = None, prog_name: Optional[str] = None) -> None:
    """Run a click group, mapping kubecrate errors to their exit codes. Never returns."""
    try:
        code = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except KubecrateError as err:
        if logging.getLogger("installer").isEnabledFor(logging.DEBUG):
            logging.getLogger("installer").exception("traceback")
        click.echo(redact(err.diagnostics()), err=True)
        sys.exit(int(err.exit_code))
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except OSError as err:
        # An I/O problem outside our checks (disk full, permissions): say which file.
        click.echo(redact("error: {}".format(err)), err=True)
        sys.exit(int(ExitCode.ERROR))
    except click.ClickException as err:
        err.show()
        sys.exit(int(ExitCode.USAGE) if isinstance(err, click.UsageError) else err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def common_options(func: Callable) -> Callable:
    """--root, --dry-run and -v, which every installer command takes (DESIGN.md)."""
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
