"""The CLI edge shared by `kubecrate` and the installer: one place that turns errors into
messages and exit codes, and sets up logging for `-v`.

It lives in installer/format/ with the error root because the two CLIs share one exit-code
table (README.md): the same error gives the same message and code in either. What only the
installer has (its run log on the host, installer/runlog.py) is handed in by the installer."""

import logging
import sys
from typing import Any, Optional

import click

from installer.format.errors import ExitCode, KubecrateError
from installer.format.redact import RedactingFormatter, redact

_VERBOSITY = {"level": 0}


class NoRunLog:
    """The run log of a CLI that keeps none (the builder): installer/runlog.py's interface."""

    @staticmethod
    def path() -> Optional[str]:
        return None

    @staticmethod
    def note(text: str) -> None:
        pass

    @staticmethod
    def note_exception(error: BaseException) -> None:
        pass

    @staticmethod
    def stop(exit_code: Optional[int] = None) -> None:
        pass


def configure_logging(verbose: int) -> None:
    """-v shows info, -vv debug, on stderr; the package loggers only, never the root logger.
    The loggers themselves pass everything, so that the installer's run log file
    (installer/runlog.py) gets debug detail whatever -v says."""
    _VERBOSITY["level"] = verbose
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose > 1:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("installer", "builder"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.handlers[:] = [handler]
        logger.propagate = False


def run(group: click.Group, argv: object = None, prog_name: Optional[str] = None,
        runlog: Any = NoRunLog) -> None:
    """Run a click group, mapping kubecrate errors to their exit codes. Never returns. A run
    log (`runlog`: the installer passes installer/runlog.py), if a command opened one, gets
    the outcome and is named on failure."""
    code = _outcome(group, argv, prog_name, runlog)
    if code != 0 and runlog.path():
        click.echo("log of this run: " + runlog.path(), err=True)
    runlog.stop(code)
    sys.exit(code)


def _outcome(group: click.Group, argv: object, prog_name: Optional[str], runlog: Any) -> int:
    try:
        code = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except KubecrateError as err:
        if _VERBOSITY["level"] > 1:
            logging.getLogger("installer").exception("traceback")
        else:
            runlog.note_exception(err)
        runlog.note(err.diagnostics())
        click.echo(redact(err.diagnostics()), err=True)
        return int(err.exit_code)
    except click.exceptions.Abort:
        runlog.note("interrupted")
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        runlog.note("interrupted")
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except OSError as err:
        # An I/O problem outside our checks (disk full, permissions): say which file.
        runlog.note_exception(err)
        click.echo(redact("error: {}".format(err)), err=True)
        return int(ExitCode.ERROR)
    except click.ClickException as err:
        err.show()
        return int(ExitCode.USAGE) if isinstance(err, click.UsageError) else err.exit_code
    return code if isinstance(code, int) else 0
