"""Finding and killing the processes a test started, by their command lines (bounded)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable, List, Tuple

Matcher = Callable[[List[str]], bool]


def processes(match: Matcher, zombies: bool = False) -> List[Tuple[int, List[str]]]:
    """(pid, argv) of every process whose argv satisfies `match`; zombies (already dead, only
    not yet reaped: PID 1 here does not reap) are left out unless asked for."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if argv and (zombies or state != "Z") and match(argv):
            found.append((int(proc.name), argv))
    return found


def kill(match: Matcher, rounds: int = 20) -> List[int]:
    """SIGKILL the matching processes until none is left (daemons may respawn children), at
    most `rounds` times 0.1 s; returns the pids killed."""
    killed: List[int] = []
    for _ in range(rounds):
        found = processes(match)
        if not found:
            break
        for pid, _argv in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return killed


def naming(text: str) -> Matcher:
    """A matcher for processes whose command line contains `text`."""
    return lambda argv: text in " ".join(argv)


def kill_standins(root: object) -> List[int]:
    """Kill the stand-in daemons of one host root (they carry `--kubecrate-root=ROOT`,
    docs/testing.md)."""
    return kill(naming("--kubecrate-root={}".format(root)))
