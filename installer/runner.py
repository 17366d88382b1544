"""The one way the installer runs a command on a host.

argv lists only, never a shell; output captured into temporary files (so a chatty command never
blocks on a full pipe) and logged; a non-zero exit raises CommandFailed with argv and the tail
of stderr. With dry_run the runner prints what it would run instead, except for read-only
queries (`readonly=True`), which `plan` and `check()` need to see the host as it is.

Every child gets KUBECRATE_ROOT=<root>: on a real host that is "/", and the test stand-ins act
on the test root they are given (docs/testing.md).

Secrets never go on a command line (any local user reads argv in /proc): they go in 0600
files. Whatever the runner shows, logs or raises (argv, stdout, stderr) passes through
installer.format.redact first, so a token or key a command prints stays out of logs at any -v.
"""

import logging
import os
import subprocess
import tempfile
import time
from typing import BinaryIO, Callable, Dict, List, NamedTuple, Optional, Sequence, cast

from installer.format.errors import StepFailed
from installer.format.redact import redact

log = logging.getLogger(__name__)

TAIL_LINES = 15
WATCH_POLL = 1.0
DEFAULT_TIMEOUT = 1800.0  # a big `docker load` on a slow disk; every call is bounded


class CommandFailed(StepFailed):
    """A command exited non-zero (or could not start, or timed out)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str,
                 hint: Optional[str] = None) -> None:
        tail = redact("\n".join(stderr.strip().splitlines()[-TAIL_LINES:]))
        message = "command failed (exit {}): {}".format(returncode, redact(" ".join(argv)))
        if tail:
            message += "\n" + tail
        super().__init__(message, hint)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = tail


class Result(NamedTuple):
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str


class Runner:
    """Runs argv lists for one host root. `echo` receives the dry-run lines (the CLI's stdout)."""

    def __init__(self, root: str = "/", dry_run: bool = False,
                 echo: Optional[Callable[[str], None]] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.root = os.path.abspath(root)
        self.dry_run = dry_run
        self.echo = echo or (lambda line: log.info("%s", line))
        self.extra_env = dict(env or {})
        self.history: List[List[str]] = []

    def environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["KUBECRATE_ROOT"] = self.root
        env["LC_ALL"] = "C"
        return env

    def run(self, argv: Sequence[str], check: bool = True, readonly: bool = False,
            stdin: Optional[Callable[[BinaryIO], object]] = None,
            timeout: float = DEFAULT_TIMEOUT, hint: Optional[str] = None,
            watch: Optional[Callable[[], Optional[StepFailed]]] = None) -> Result:
        """Run argv. `stdin`, if given, is called with the child's stdin pipe to stream into
        it. `readonly` commands run even in dry-run mode. Raises CommandFailed when `check`.
        `watch`, if given, is called about every WATCH_POLL seconds while the command runs; a
        StepFailed it returns stops the command (SIGKILL) and is raised."""
        argv = [str(arg) for arg in argv]
        if not argv or not all(argv):
            raise ValueError("empty command or argument: {!r}".format(argv))
        if self.dry_run and not readonly:
            self.echo("would run: " + redact(" ".join(argv)))
            return Result(argv, 0, "", "")
        self.history.append(argv)
        started = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=out, stderr=err, env=self.environment(), close_fds=True,
                )
            except OSError as exc:
                if not check:
                    return Result(argv, 127, "", "cannot run {}: {}".format(argv[0], exc.strerror))
                raise CommandFailed(argv, 127, "cannot run {}: {}".format(argv[0], exc.strerror),
                                    hint or "is {} installed and on PATH?".format(argv[0]))
            try:
                pipe = proc.stdin  # a pipe whenever `stdin` is given (above)
                if stdin is not None and pipe is not None:
                    try:
                        stdin(cast(BinaryIO, pipe))
                    finally:
                        try:
                            pipe.close()
                        except BrokenPipeError:
                            pass
                returncode = self._wait(proc, timeout, watch)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise CommandFailed(argv, -9, "timed out after {:.0f}s".format(timeout), hint)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        log.debug("ran %s: exit %d in %.2fs", redact(argv), returncode,
                  time.monotonic() - started)
        if stdout.strip():
            log.debug("stdout of %s:\n%s", argv[0], redact(stdout.rstrip()))
        if stderr.strip():
            log.debug("stderr of %s:\n%s", argv[0], redact(stderr.rstrip()))
        if check and returncode != 0:
            log.error("%s failed (exit %d):\n%s", redact(" ".join(argv)), returncode,
                      redact(stderr.rstrip()))
            raise CommandFailed(argv, returncode, stderr or stdout, hint)
        return Result(argv, returncode, stdout, stderr)

    @staticmethod
    def _wait(proc: "subprocess.Popen[bytes]", timeout: float,
              watch: Optional[Callable[[], Optional[StepFailed]]]) -> int:
        if watch is None:
            return proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return proc.wait(timeout=max(0.0, min(WATCH_POLL, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
            stop = watch()
            if stop is not None:
                log.error("stopping %s: %s", proc.args, stop)
                raise stop

    def query(self, argv: Sequence[str], timeout: float = 120.0) -> Result:
        """A read-only command whose exit status is an answer, not a failure."""
        return self.run(argv, check=False, readonly=True, timeout=timeout)
