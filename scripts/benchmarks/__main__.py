"""Run every benchmark side by side with its peer tool and rewrite docs/benchmarks.md.

    scripts/bench [--runs N] [--only NAME ...] [--duration SECONDS]

Without arguments every benchmark runs, in one invocation, each as many times as its module's
RUNS says (default 5; the WAN downloads and the 10-minute flapping run are long, so they run
once, the installed cluster's failover three times); `--runs N` runs every one N times instead.
Results are kept per benchmark in docs/benchmarks.json, so `--only` re-measures the named
ones and keeps the others' last figures (each row says when and where it was measured, in
which invocation, and the machine's 1-minute load average sampled while it ran: other work on
the 2 cores slows both sides). `--duration` shortens the flapping run (default 600 s) for a
trial.
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
import sys
import threading
from pathlib import Path

from benchmarks.timing import Result

REPO = Path(__file__).resolve().parents[2]
# modules here with run(work, runs) -> [Result]
BENCHMARKS = ["unpack", "archive_size", "pull", "resolve", "rpmfetch", "netfetch",
              "netfetch_images", "rebuild", "failover", "failover_installed", "flapping",
              "upgrade", "fleet"]
DEFAULT_RUNS = 5
LOAD_EVERY = 5.0  # seconds between load-average samples


class LoadSampler:
    """The 1-minute load average every LOAD_EVERY seconds while a benchmark runs (a thread that
    only reads /proc/loadavg, so it adds no load of its own worth counting)."""

    def __init__(self) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(LOAD_EVERY):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        s = self.samples
        return (f"{s[0]:.1f} at the start, {s[-1]:.1f} at the end, mean "
                f"{statistics.mean(s):.1f}, max {max(s):.1f} ({len(s)} samples)")


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
    measured = sorted({(r["date"], r["machine"]) for r in records.values()})
    for date, where in measured:
        names = ", ".join(f"{n} ({r['runs']} runs per tool)" for n, r in sorted(records.items())
                          if (r["date"], r["machine"]) == (date, where))
        lines.append(f"- measured {date} on {where}: {names}")
    invocations = sorted({r.get("invocation", "") for r in records.values()})
    if len(invocations) == 1 and invocations[0]:
        lines.append(f"- every row comes from one run of `scripts/bench`, {invocations[0]}")
    else:
        for invocation in invocations:
            names = ", ".join(n for n, r in sorted(records.items())
                              if r.get("invocation", "") == invocation)
            lines.append(f"- {names}: " + (f"run of `scripts/bench` {invocation}" if invocation
                                           else "an earlier run, time not recorded"))
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
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per tool for every benchmark [default: each module's RUNS]")
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
    started = datetime.datetime.now(datetime.timezone.utc)
    names = args.only or BENCHMARKS
    done, failed = [], []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        runs = args.runs or getattr(module, "RUNS", DEFAULT_RUNS)
        print(f"==> benchmark {name} ({runs} runs each)", flush=True)
        extra = {"duration": args.duration} if name == "flapping" else {}
        try:
            with LoadSampler() as sampler:
                results = module.run(args.work / name, runs, **extra)
        except Exception as err:  # one broken benchmark must not cost the others' figures
            print(f"    FAILED: {name}: {type(err).__name__}: {err}", flush=True)
            failed.append(name)
            continue
        done.append(name)
        load = sampler.summary()
        for result in results:
            figure = (f"ratio {result.ratio:.2f}x" if result.ratio is not None else
                      f"median {statistics.median(result.ours_seconds):.2f} {result.unit}")
            print(f"    {result.name}: {figure}", flush=True)
        records[name] = {"date": datetime.date.today().isoformat(), "machine": where,
                         "runs": runs, "load": load,
                         "invocation": f"started {started:%Y-%m-%d %H:%M} UTC, unfinished",
                         "results": [r._asdict() for r in results]}
        store.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    ended = datetime.datetime.now(datetime.timezone.utc)
    invocation = (f"started {started:%Y-%m-%d %H:%M} UTC, ended {ended:%H:%M} UTC"
                  f" ({' '.join(['--only', *names]) if args.only else 'every benchmark'}"
                  + (f"; failed, figures from an earlier run: {', '.join(failed)}" if failed
                     else "") + ")")
    for name in done:
        records[name]["invocation"] = invocation
    store.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    args.out.write_text(render(records))
    print(f"wrote {args.out}")
    if failed:
        sys.exit(f"benchmarks that failed (their rows keep earlier figures): {', '.join(failed)}")


if __name__ == "__main__":
    main()
