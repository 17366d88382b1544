"""The endpoint's longest outage while `upgrade --bundle` takes the EL9 static-pods cluster of
tests/e2e/test_ha_static_pods.py (three control planes and a worker on network-namespace hosts)
from k8s-1.30-el9-containerd to k8s-1.31-el9-containerd, w1 polling https://VIP:8443/healthz
every 100 ms throughout; and the same test's calico leg, a control plane and a worker installed
at 1.31 and walked to 1.33 in two kubeadm steps by one bundle carrying 1.31 and 1.32, w1 polling
the same way (until 2026-12-04 the leg started at 1.30 and took three steps). Each run is
that e2e test (a whole install, then the upgrade), which writes its figures to
$KUBECRATE_UPGRADE_REPORT; run it under the e2e lock:

    flock /tmp/kubecrate-e2e.lock scripts/bench --only upgrade --runs 1

Or take the figures of e2e runs already made (each run the test with
KUBECRATE_UPGRADE_REPORT=FILE set): KUBECRATE_UPGRADE_REPORTS=FILE[,FILE...] scripts/bench
--only upgrade, which then runs nothing itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.timing import Result

REPO = Path(__file__).resolve().parents[2]
TEST = "tests/e2e/test_ha_static_pods.py::test_static_pods_three_control_planes_and_a_worker"
RUNS = 1  # scripts/bench's default: a run is a whole e2e test (an install, then the upgrade)


def run(work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    outages, seconds, walk_outages, walk_seconds = [], [], [], []
    made = [Path(p) for p in os.environ.get("KUBECRATE_UPGRADE_REPORTS", "").split(",") if p]
    for report in made:
        _take(json.loads(report.read_text()), outages, seconds, walk_outages, walk_seconds)
    for number in range(0 if made else max(1, runs)):
        report = work / "upgrade-{}.json".format(number)
        report.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", TEST], cwd=REPO,
                              env=dict(os.environ, KUBECRATE_UPGRADE_REPORT=str(report)),
                              capture_output=True, text=True, timeout=3600)
        output = work / "pytest-{}.log".format(number)
        output.write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not report.exists():
            raise RuntimeError("{} failed; its output: {}".format(TEST, output))
        _take(json.loads(report.read_text()), outages, seconds, walk_outages, walk_seconds)
    return [
        Result(name="upgrade v1.30.14 -> v1.31.14 (3 control planes + 1 worker, static-pods "
                    "load balancer): longest outage of https://VIP:8443/healthz",
               ours="upgrade --bundle k8s-1.31-el9-containerd.tar on cp1, cp2, cp3, w1 in turn; "
                    "w1 polls every 100 ms", peer="", ours_seconds=outages, peer_seconds=[],
               goal=None, note="bounded at 15 s in the test; cp3's run is killed once and "
                               "resumed" + ("; figures of an e2e run made before (its "
                                            "KUBECRATE_UPGRADE_REPORT)" if made else "")),
        Result(name="upgrade v1.30.14 -> v1.31.14 of the 4 nodes, wall time (refusals and "
                    "plan included)",
               ours="the same four upgrade runs, one after another", peer="",
               ours_seconds=seconds, peer_seconds=[], goal=None),
        Result(name="walk v1.31.14 -> v1.33.7 in two steps (1 control plane + 1 worker, "
                    "static-pods load balancer, calico): longest outage of "
                    "https://VIP:8443/healthz",
               ours="upgrade --bundle of the 1.33 bundle carrying 1.31 and 1.32 on cp1, w1, "
                    "cp1, w1; w1 polls every 100 ms", peer="",
               ours_seconds=walk_outages, peer_seconds=[], goal=None,
               note="bounded at 15 s in the test; with one control plane, its apiserver's "
                    "restart at each step is an outage"),
        Result(name="walk v1.31.14 -> v1.33.7 of the 2 nodes, wall time",
               ours="the same four upgrade runs, one after another (--no-drain)", peer="",
               ours_seconds=walk_seconds, peer_seconds=[], goal=None),
    ]


def _take(figures: dict, *lists: list) -> None:
    """One report's figures into outages, seconds, walk_outages, walk_seconds (a report made
    before the walk leg existed has none of the walk's)."""
    for name, into in zip(("outage", "seconds", "walk_outage", "walk_seconds"), lists):
        if name in figures:
            into.append(figures[name])
