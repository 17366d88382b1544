"""Run every benchmark side by side with its peer tool and rewrite docs/benchmarks.md.

    scripts/bench [--runs N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# modules here with run(work, runs) -> [Result]
BENCHMARKS = ["unpack", "archive_size", "pull", "resolve", "rpmfetch"]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    tools = []
    for tool, args in (("minisign", ["-v"]), ("tar", ["--version"])):
        try:
            out = subprocess.run([tool, *args], capture_output=True, text=True).stdout
            tools.append(out.splitlines()[0] if out else tool)
        except OSError:
            tools.append(f"{tool}: missing")
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Linux {platform.release()}; "
            f"Python {platform.python_version()}; {'; '.join(tools)}")


def render(results, runs: int) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench`; do not edit by hand. Each row runs kubecrate and a peer",
        "tool side by side on the same input, alternating which goes first, and reports medians.",
        "A ratio below 1 means kubecrate is faster (or, for sizes, smaller).",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- runs per tool: {runs}",
        "",
        "| benchmark | kubecrate | peer | kubecrate (median) | peer (median) | ratio | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        goal = f"<= {r.goal:g}x" if r.goal else ""
        ours = f"{statistics.median(r.ours_seconds):.2f} {r.unit}"
        peer = f"{statistics.median(r.peer_seconds):.2f} {r.unit}"
        lines.append(f"| {r.name} | `{r.ours}` | `{r.peer}` | {ours} | {peer} | {r.ratio:.2f}x"
                     f" | {goal} |")
    lines += ["", "Raw measurements:", ""]
    for r in results:
        ours = ", ".join(f"{t:.2f}" for t in r.ours_seconds)
        peer = ", ".join(f"{t:.2f}" for t in r.peer_seconds)
        lines.append(f"- {r.name} ({r.unit}): kubecrate [{ours}], peer [{peer}]"
                     + (f". {r.note}" if r.note else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.only or BENCHMARKS:
        print(f"==> benchmark {name} ({args.runs} runs each)", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        for result in module.run(args.work / name, args.runs):
            print(f"    {result.name}: ratio {result.ratio:.2f}x", flush=True)
            results.append(result)
    args.out.write_text(render(results, args.runs))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
