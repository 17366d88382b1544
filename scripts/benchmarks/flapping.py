"""No spurious VIP move: the VRRPv3 / 0.2 s lab of scripts/lab/viplab.py (via
benchmarks.failover.vip_lab) runs for `duration` seconds (10 minutes in the recorded run) with
the VIP holder's CPU saturated (busy loops in its namespace, two per core: on this machine every
host shares the same cores, so all of them are starved alike) and every apiserver's /healthz
held for 1.9 s, as a busy etcd's check does. A client polls https://VIP:8443/version every
100 ms.

Counted: VIP moves (the holder seen every 0.2 s), failed polls, check-script failures in
keepalived's log and haproxy servers marked DOWN. The goal is zero of each. Needs root.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lab import lbsamples, viplab

from benchmarks.failover import vip_lab
from benchmarks.timing import Result

RUNS = 1  # scripts/bench's default: one run of `duration` seconds (10 minutes)

STALL = 1.9
BURN = "while True: pass"


def _failures(lab) -> int:
    """keepalived's lines about the check script failing, on the three control planes."""
    return sum(1 for host in lab.hosts[:3] for line in host.log("keepalived").splitlines()
               if "kubecrate_apiserver" in line and ("failed" in line or "returning 1" in line))


def _downs(lab) -> int:
    return sum(host.log("haproxy").count(" is DOWN") for host in lab.hosts[:3])


def run(work: Path, runs: int, duration: float = 600.0) -> list[Result]:
    lab, lb, _cert = vip_lab(work / "viplab")
    try:
        cp1 = lab["cp1"]
        (lab.base / "stall").write_text(str(STALL))
        burners = 2 * (os.cpu_count() or 1)
        for index in range(burners):
            cp1.start(f"burn{index}", [sys.executable, "-c", BURN])
        failures_before, downs_before = _failures(lab), _downs(lab)
        url = f"https://{lbsamples.VIP}:{lb.port}/version"
        poller = viplab.Poller(lab["client"], url, duration + 5)
        start = time.monotonic()
        moves, holder, samples = 0, ["cp1"], 0
        while time.monotonic() - start < duration:
            now = viplab.holders(lab)
            if now != holder:
                moves += 1
                holder = now
            samples += 1
            time.sleep(0.2)
        polls = [ok for at, ok in poller.samples() if at >= start]
        for index in range(burners):
            cp1.stop(f"burn{index}")
        lab["client"].stop("poller")
        script_failures = _failures(lab) - failures_before
        down = _downs(lab) - downs_before
    finally:
        lab.teardown()
    failed = polls.count(False)
    minutes = duration / 60
    where = (f"{burners} busy loops in cp1's namespace, every /healthz held {STALL} s, "
             f"{minutes:g} min")
    note = (f"{samples} holder samples, {len(polls)} polls ({failed} failed), "
            f"{script_failures} check-script failure lines, {down} haproxy DOWN events")
    ours = "rendered keepalived (VRRPv3, 0.2 s) + haproxy, 3 control planes"
    return [
        Result(name=f"flapping: VIP moves, {where}", ours=ours, peer="",
               ours_seconds=[float(moves)], peer_seconds=[], goal=0.0, unit="moves",
               note=note),
        Result(name=f"flapping: failed polls of https://VIP:8443/version, {where}", ours=ours,
               peer="", ours_seconds=[float(failed)], peer_seconds=[], goal=0.0,
               unit="polls", note=note),
    ]
