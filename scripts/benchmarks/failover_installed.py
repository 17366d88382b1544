"""VIP failover windows of the installed CentOS 7 cluster (VRRPv2 at 1 s), apart from the
VRRPv3 lab's (benchmarks/failover.py) because each run is a whole cluster install."""

from __future__ import annotations

from pathlib import Path

from benchmarks.failover import installed
from benchmarks.timing import Result

RUNS = 6  # scripts/bench's default: installed() makes runs // 2 cluster installs, three


def run(work: Path, runs: int) -> list[Result]:
    return installed(work, runs)
