"""Run every benchmark side by side with its peer tool and rewrite docs/benchmarks.md.

    scripts/bench [--runs N] [--only NAME ...] [--duration SECONDS]

Results are kept per benchmark in docs/benchmarks.json, so `--only` re-measures the named
ones and keeps the others' last figures (each row says when and where it was measured, and
the machine's load average before and after it: other work on the 2 cores slows both sides).
`--duration` shortens the flapping run (default 600 s) for a trial.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

from benchmarks.timing import Result

REPO = Path(__file__).resolve().parents[2]
# modules here with run(work, runs) -> [Result]
BENCHMARKS = ["unpack", "archive_size", "pull", "resolve", "rpmfetch", "netfetch",
              "netfetch_images", "rebuild", "failover", "failover_installed", "flapping"]


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


def render(records: dict) -> str:
    """records: benchmark module -> {"date", "machine", "runs", "results": [Result fields]}."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench` from docs/benchmarks.json; do not edit by hand. Each row runs",
        "kubecrate and a peer tool side by side on the same input, alternating which goes first,",
        "and reports medians. A ratio below 1 means kubecrate is faster (or, for sizes, smaller).",
        "",
    ]
    measured = sorted({(r["date"], r["machine"], r["runs"]) for r in records.values()})
    for date, where, runs in measured:
        names = ", ".join(n for n, r in sorted(records.items())
                          if (r["date"], r["machine"], r["runs"]) == (date, where, runs))
        lines.append(f"- {names}: measured {date} on {where}; {runs} runs per tool")
    loads = [f"{name} {r['load']}" for name, r in sorted(records.items()) if r.get("load")]
    if loads:
        lines.append("- load on the machine while measuring (1-minute load average, other work "
                     "included): " + "; ".join(loads))
    lines += [
        "",
        "| benchmark | kubecrate | peer | kubecrate (median) | peer (median) | ratio | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    results = [Result(**fields) for name in BENCHMARKS if name in records
               for fields in records[name]["results"]]
    for r in results:
        goal = f"<= {r.goal:g}x" if r.goal else ""
        ours = f"{statistics.median(r.ours_seconds):.2f} {r.unit}"
        if r.ratio is None:  # a measurement with no peer tool to compare with
            goal = f"<= {r.goal:g} {r.unit}" if r.goal is not None else ""
            lines.append(f"| {r.name} | `{r.ours}` | (none) | {ours} | | | {goal} |")
            continue
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
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of the flapping run (the issue asks for 600)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.out.with_suffix(".json")
    records = json.loads(store.read_text()) if store.exists() else {}
    where = machine()
    for name in args.only or BENCHMARKS:
        print(f"==> benchmark {name} ({args.runs} runs each)", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        load_before = os.getloadavg()[0]
        extra = {"duration": args.duration} if name == "flapping" else {}
        results = module.run(args.work / name, args.runs, **extra)
        load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        for result in results:
            figure = (f"ratio {result.ratio:.2f}x" if result.ratio is not None else
                      f"median {statistics.median(result.ours_seconds):.2f} {result.unit}")
            print(f"    {result.name}: {figure}", flush=True)
        records[name] = {"date": datetime.date.today().isoformat(), "machine": where,
                         "runs": args.runs, "load": load,
                         "results": [r._asdict() for r in results]}
        store.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    args.out.write_text(render(records))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
