"""VIP failover windows, no peer tool (the windows themselves are the result). Needs root.

- The installed CentOS 7 cluster (scripts/lab/halab.py, the same install as the e2e test and the
  demo): keepalived renders the VRRPv2 / 1 s profile that CentOS 7's keepalived 1.3.5 needs.
  How long https://VIP:8443/healthz is unreachable when (a) the VIP holder's keepalived,
  haproxy and apiserver are killed, (b) its link goes down, and when the node comes back.
- The VRRPv3 / 0.2 s profile (keepalived >= 1.3.7: EL8, EL9, the static-pod image) on the lab
  of scripts/lab/viplab.py: three control planes with the rendered configs, a client polling
  https://VIP:8443/version every 100 ms (overlapping polls, so that a hanging one does not
  hold the next back); the same two drills, `runs` times each. The goals
  (docs/load-balancer.md): under 1 s for a killed holder, under 1.5 s for a silent loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import halab, lbsamples, viplab  # noqa: E402
from lab.netns import Lab, cleanup_stale  # noqa: E402

from benchmarks.timing import Result  # noqa: E402
from installer import lbconfig  # noqa: E402

VENV = REPO / ".venv" / "bin"
SUBNET = 9
LAB = "bench"


def _world(command: str, run: Path) -> None:
    env = {**os.environ, "KUBECRATE_MW_RUN": str(run)}
    subprocess.run([str(REPO / "scripts" / "mirror-world"), command], check=True, env=env,
                   stdout=subprocess.DEVNULL)


DIRECT = "bfo"  # namespaces kc-bfo-*
GOALS = {"kill": 1.0, "link-down": 1.5}


def vip_lab(work: Path, vrrp=lbconfig.VRRP_V3) -> tuple[Lab, object, tuple]:
    """A started viplab (three control planes with the rendered configs, a client) with cp1
    holding the VIP, its load balancer settings and the apiservers' (cert, key). The caller
    tears the lab down."""
    cleanup_stale(DIRECT)
    shutil.rmtree(work, ignore_errors=True)
    lab = Lab(DIRECT, ["cp1", "cp2", "cp3", "client"], work, 0)
    lab.setup()
    try:
        lb = lbsamples.load_balancer()
        cert, key = viplab.certificate(lab.base)
        for host in lab.hosts[:3]:
            viplab.start_apiserver(host, cert, key)
        for host in lab.hosts[:3]:
            viplab.start_load_balancer(host, lb, vrrp)
        viplab.settle(lab, ["cp1"])
    except BaseException:
        lab.teardown()
        raise
    return lab, lb, (cert, key)


def _direct_windows(work: Path, runs: int) -> dict[str, list[float]]:
    """Kill and link-down drills on cp1, `runs` times each, cp1 restored in between."""
    windows = {how: [] for how in GOALS}
    lab, lb, cert = vip_lab(work)
    try:
        cp1, cp2 = lab["cp1"], lab["cp2"]
        url = f"https://{lbsamples.VIP}:{lb.port}/version"
        for _ in range(runs):
            for how in GOALS:
                viplab.settle(lab, ["cp1"], hold=3.0)
                (lab["client"].dir / "poller.log").unlink(missing_ok=True)  # this drill's only
                # a poll every 100 ms whatever the earlier ones do: the window is read from
                # when answers arrived, to 0.1 s, not in steps of a hanging poll's timeout
                poller = viplab.Poller(lab["client"], url, 30, overlap=True)
                viplab.wait(lambda: poller.ok_since(0), 10, "the first polls")  # noqa: B023
                start = time.monotonic()
                if how == "kill":
                    for key in ("keepalived", "haproxy", "apiserver"):
                        cp1.stop(key)
                else:
                    cp1.link(up=False)
                viplab.wait(lambda: lbsamples.VIP in cp2.addresses(), viplab.VIP_WAIT,
                            "cp2 to take the VIP", lab=lab)
                viplab.wait(lambda: poller.ok_since(start, 10), 15,  # noqa: B023
                            "the endpoint to answer again")
                windows[how].append(poller.unanswered(start))
                lab["client"].stop("poller")
                if how == "kill":
                    viplab.start_apiserver(cp1, *cert)
                    viplab.start_load_balancer(cp1, lb)
                else:
                    cp1.link(up=True)
    finally:
        lab.teardown()
    return windows


def run(work: Path, runs: int) -> list[Result]:
    """The VRRPv3 lab's windows; the installed CentOS 7 cluster's are failover_installed."""
    direct = _direct_windows(work / "viplab", runs)
    return [Result(
        name=f"VIP failover, VRRPv3 at 0.2 s: {halab.DRILLS[how]}; endpoint unreachable",
        ours="rendered keepalived (VRRPv3 profile) + haproxy, 3 control planes, a client starts "
             "a poll every 100 ms (overlapping, 3 s each)", peer="", ours_seconds=direct[how],
        peer_seconds=[], goal=GOALS[how],
        note="the goal of docs/load-balancer.md; keepalived 2.2.7, haproxy 2.6; the longest "
             "time between two answers' arrivals once the drill began (about 0.1 s when "
             "nothing fails)")
        for how in GOALS]


@contextlib.contextmanager
def built_cluster_inputs(work: Path) -> Iterator[tuple[Path, Path]]:
    """The mirror world up for the duration, the primary bundle and .pyz built from it, and a
    fresh CentOS 7 @core root: yields (the build's out folder, the root)."""
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "mirror-world-run"
    _world("up", run_dir)
    try:
        preset = json.loads((run_dir / "state.json").read_text())["presets"]["default"]
        keys = work / "keys"
        if not (keys / "kubecrate.key").exists():
            subprocess.run([VENV / "kubecrate", "keygen", "--out", keys], check=True,
                           capture_output=True)
        out = work / "out"
        subprocess.run([VENV / "kubecrate", "build", REPO / "manifests" / f"{halab.NAME}.yaml",
                        "--mirrors", preset, "--key", keys / "kubecrate.key", "--out", out,
                        "--lock", work / "bench.lock"], check=True, capture_output=True)
        core = work / "core"
        shutil.rmtree(core, ignore_errors=True)
        yield out, halab.core_root(core)
    finally:
        _world("down", run_dir)


def installed(work: Path, runs: int) -> list[Result]:
    with built_cluster_inputs(work) as (out, core_root):
        windows = {f"{how}{phase}": [] for how in halab.DRILLS for phase in ("", "-back")}
        for _ in range(max(1, runs // 2)):  # each run is a whole cluster install: keep it few
            cleanup_stale(LAB)
            shutil.rmtree(work / "hosts", ignore_errors=True)
            with Lab(LAB, halab.NAMES, work / "hosts", SUBNET) as lab:
                nodes = halab.prepare(lab, core_root, work / "shiv", SUBNET)
                join = work / "join.yaml"
                join.unlink(missing_ok=True)
                for node in nodes.values():
                    extra = ("--join-out", join) if node.name == "cp1" else ("--join", join)
                    done = node.install(out, *extra)
                    if done.returncode != 0:
                        raise RuntimeError(f"{node.name}: {done.stdout}{done.stderr}")
                for how in halab.DRILLS:
                    old, _new, window = halab.failover_drill(nodes, "w1", SUBNET, how)
                    _holder, back = halab.bring_back(nodes, "w1", SUBNET, old, how)
                    windows[how].append(window)
                    windows[how + "-back"].append(back)
    results = []
    for how, text in halab.DRILLS.items():
        results.append(Result(
            name=f"VIP failover, installed CentOS 7 cluster (VRRPv2 at 1 s): {text}; "
                 "endpoint unreachable",
            ours="installer-rendered keepalived + haproxy, 3 control planes, w1 polls every 100 ms",
            peer="", ours_seconds=windows[how], peer_seconds=[], goal=None,
            note="the bound is polling succeeding again within 15 s; keepalived 1.3.5 "
                 "allows no faster VRRP here (docs/load-balancer.md)"))
        results.append(Result(
            name=f"VIP failover: node back after '{how}'; endpoint unreachable",
            ours="link up / systemctl restart keepalived haproxy kubelet",
            peer="", ours_seconds=windows[how + "-back"], peer_seconds=[], goal=None))
    return results
