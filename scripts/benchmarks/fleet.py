"""Fleet install time through Ansible (docs/fleet.md), no peer tool: `fleet export` +
`ansible-playbook site.yml` from a control-node namespace over real sshd to 6 hosts (3 control
planes, 3 workers) and to 12 hosts (3 control planes, 9 workers), on the lab of
tests/e2e/fleetlab.py (the e2e test's hosts). Needs root. Each run is a whole cluster install:
RUNS (one) per size unless --runs asks for more. Also timed: the second run on the installed
12-host fleet (changed=0), the cost of Ansible walking the fleet with nothing to do.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lab import fleetlab
from lab.netns import Lab, cleanup_stale

from benchmarks.failover import built_cluster_inputs  # puts the repository on sys.path
from benchmarks.timing import Result

LAB = "fleetbench"  # namespaces kc-fleetbench-*
SUBNET = 43
SIZES = (3, 9)  # workers beside the 3 control planes: 6 and 12 hosts
RUNS = 1  # scripts/bench's default: each run installs both fleets (about 10 min)


def _install(work: Path, built: Path, core: Path, workers: int) -> tuple[float, float]:
    """(seconds of the install run, seconds of the re-run) on a fresh lab."""
    cleanup_stale(LAB)
    shutil.rmtree(work / "hosts", ignore_errors=True)
    names = fleetlab.names(workers) + ["ctl"]
    with Lab(LAB, names, work / "hosts", SUBNET) as lab:
        fleet = fleetlab.Fleet(lab, core, work / "shiv", SUBNET, work / "hosts" / "fleet")
        fleet.start_sshd()
        out = work / "hosts" / "project"
        done = fleet.export(built, out)
        if done.returncode != 0:
            raise RuntimeError("fleet export: " + done.stderr)
        fleet.host_vars(out)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            run = fleet.playbook(out, timeout=3600)
            times.append(time.perf_counter() - start)
            if run.returncode != 0:
                raise RuntimeError("ansible-playbook: " + run.stdout[-4000:] + run.stderr)
        changed = {h: c["changed"] for h, c in fleetlab.recap(run.stdout).items()}
        if any(changed.values()):
            raise RuntimeError("the second run changed something: {}".format(changed))
    return times[0], times[1]


def run(work: Path, runs: int) -> list[Result]:
    installs = {workers: [] for workers in SIZES}  # type: dict
    reruns = []
    with built_cluster_inputs(work) as (built, core_root):
        for _ in range(max(1, runs)):  # each run installs both fleets
            for workers in SIZES:
                first, second = _install(work, built, core_root, workers)
                installs[workers].append(first)
                if workers == SIZES[-1]:
                    reruns.append(second)
    results = [Result(
        name=f"fleet install, {3 + workers} namespace hosts (3 control planes, {workers} "
             "workers) through Ansible",
        ours="fleet export; ansible-playbook site.yml (forks 10, workers in one batch)",
        peer="", ours_seconds=installs[workers], peer_seconds=[], goal=None,
        note="real sshd per host, CPython 3.6.15 as the hosts' interpreter, ansible-core 2.16; "
             "control planes join one at a time, workers at once")
        for workers in SIZES]
    results.append(Result(
        name=f"fleet re-run on the installed {3 + SIZES[-1]} hosts (changed=0)",
        ours="ansible-playbook site.yml", peer="", ours_seconds=reruns, peer_seconds=[],
        goal=None))
    return results
