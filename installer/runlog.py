"""The log of one installer run, for the operator to send (docs/troubleshooting.md).

Every installer command (except with --dry-run) writes <root>/var/log/kubecrate/<command>-
<UTC time>.log: everything the installer and builder loggers say at debug level, whatever -v
was given, the traceback of a failure and the exit code, all through the same redaction as
the terminal (installer.format.redact). The folder is 0700 and the files 0600: they name hosts,
paths and commands. The newest KEEP logs per command are kept.
"""

import errno
import logging
import os
import platform
import time
import traceback
from typing import Any, Dict, Optional, Sequence

from installer.format.redact import RedactingFormatter, redact

LOG_DIR = "/var/log/kubecrate"
KEEP = 50
LOGGERS = ("installer", "builder")

log = logging.getLogger(__name__)
_current: Dict[str, Any] = {}  # "handler", "path"


def start(root: str, command: str, argv: Sequence[str], version: str) -> Optional[str]:
    """Open this run's log file and attach it to the package loggers; returns its path, or
    None (with an info message) when the folder cannot be written, e.g. as a normal user."""
    stop()
    folder = os.path.join(os.path.abspath(root), LOG_DIR.lstrip("/"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path, handle = _create(folder, "{}-{}".format(command, stamp))
    except OSError as err:
        log.info("no log file for this run: cannot write %s: %s", folder, err.strerror)
        return None
    handler = logging.StreamHandler(handle)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(RedactingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    _current.update(handler=handler, path=path)
    note("kubecrate-installer {} on Python {} ({}), uid {}\ncommand: {}".format(
        version, platform.python_version(), platform.platform(), os.getuid(),
        " ".join(argv)))
    _prune(folder, command)
    return path


def _create(folder: str, base: str):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for attempt in range(100):
        path = os.path.join(folder, base + ("-{}".format(attempt) if attempt else "") + ".log")
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as err:
            if err.errno == errno.EEXIST:
                continue
            raise
        return path, os.fdopen(fd, "w", encoding="utf-8")
    raise OSError(errno.EEXIST, "too many logs in the same second", folder)


def _prune(folder: str, command: str) -> None:
    try:
        mine = sorted(n for n in os.listdir(folder)
                      if n.startswith(command + "-") and n.endswith(".log"))
        for name in mine[:-KEEP]:
            os.unlink(os.path.join(folder, name))
    except OSError:
        pass


def path() -> Optional[str]:
    """The current run's log file, if one is open."""
    return _current.get("path")


def note(text: str) -> None:
    """Write `text` (redacted) into the log file only."""
    handler = _current.get("handler")
    if handler is not None:
        handler.acquire()
        try:
            handler.stream.write(redact(text).rstrip("\n") + "\n")
            handler.flush()
        finally:
            handler.release()


def note_exception(error: BaseException) -> None:
    note("".join(traceback.format_exception(type(error), error, error.__traceback__)))


def stop(exit_code: Optional[int] = None) -> None:
    """Record the exit code and close the file (a no-op when none is open)."""
    handler = _current.pop("handler", None)
    _current.pop("path", None)
    if handler is None:
        return
    if exit_code is not None:
        handler.stream.write("exit code {}\n".format(exit_code))
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
    handler.stream.close()
