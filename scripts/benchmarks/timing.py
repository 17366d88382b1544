"""Side-by-side timing: alternate ours and the peer's run so drift hits both equally."""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Callable, NamedTuple


class Result(NamedTuple):
    name: str
    ours: str  # what we ran, as a user would type it
    peer: str
    ours_seconds: list[float]  # measurements in `unit` (seconds unless it says otherwise)
    peer_seconds: list[float]
    goal: float | None  # the ratio the issue asks for, ours/peer
    note: str = ""
    unit: str = "s"  # "s" for times; e.g. "MiB" for sizes

    @property
    def ratio(self) -> float | None:
        """ours/peer medians; None for measurements that have no peer (failover windows)."""
        if not self.peer_seconds:
            return None
        return statistics.median(self.ours_seconds) / statistics.median(self.peer_seconds)


def timed(command: list[str] | Callable[[], None], timeout: float = 900) -> float:
    start = time.perf_counter()
    if callable(command):
        command()
    else:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=timeout)
    return time.perf_counter() - start


def side_by_side(runs: int, ours, peer, before: Callable[[], None]) -> tuple[list, list]:
    """Run both `runs` times, alternating which goes first; `before` resets state (untimed)."""
    ours_times, peer_times = [], []
    for index in range(runs):
        order = [(ours, ours_times), (peer, peer_times)]
        if index % 2:
            order.reverse()
        for command, sink in order:
            before()
            sink.append(timed(command))
    return ours_times, peer_times


def rotated(runs: int, commands: list, before: Callable[[], None]) -> list[list[float]]:
    """Like side_by_side for several commands: each run starts with the next one in turn."""
    times: list[list[float]] = [[] for _ in commands]
    for index in range(runs):
        for offset in range(len(commands)):
            which = (index + offset) % len(commands)
            before()
            times[which].append(timed(commands[which]))
    return times
