"""The image set of the WAN download benchmark (benchmarks/netfetch.py): pull_images vs
sequential curl and skopeo copy over 50 ms RTT / 100 Mbit/s / 0.1% loss. Needs root."""

from __future__ import annotations

from pathlib import Path

from benchmarks.netfetch import run_images
from benchmarks.timing import Result

RUNS = 1  # scripts/bench's default: a run is three tools over the slow link, 2.5 min


def run(work: Path, runs: int) -> list[Result]:
    return run_images(work, runs)
