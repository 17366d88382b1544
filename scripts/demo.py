"""kubecrate's demo, end to end, on the local mirror world (nothing leaves this machine).

Builds the primary bundle (Kubernetes v1.23.17, Docker 20.10.24, CentOS 7.9) with `kubecrate
build`, installs a three-control-plane + one-worker cluster with the .pyz on network-namespace
hosts (real keepalived and haproxy in front of the kube stand-ins, docs/testing.md), prints the
cluster's status, takes the VIP holder off the network and prints how long the endpoint was
unreachable. Everything is cleaned up at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from lab import halab  # noqa: E402 (after the path set-up above)
from lab.netns import Lab, cleanup_stale  # noqa: E402

VENV = REPO / ".venv" / "bin"
WORK = REPO / ".cache" / "demo"
WORLD_RUN = WORK / "mirror-world-run"
RECIPE = REPO / "manifests" / "k8s-1.23.17-el7.yaml"
LAB = "demo"
SUBNET = 7


class Stages:
    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    def run(self, title: str, func, *args):
        print(f"==> {title}", flush=True)
        start = time.monotonic()
        result = func(*args)
        elapsed = time.monotonic() - start
        self.timings.append((title, elapsed))
        print(f"    ({elapsed:.1f} s)", flush=True)
        return result


def sh(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)


def mirror_world(command: str) -> dict:
    """The demo's own world instance (own run folder, shared warm cache), so it never stops a
    world someone else's tests are using."""
    sh(REPO / "scripts" / "mirror-world", command,
       env={**os.environ, "KUBECRATE_MW_RUN": str(WORLD_RUN)})
    state = WORLD_RUN / "state.json"
    return json.loads(state.read_text()) if command == "up" else {}


def keygen() -> Path:
    keys = WORK / "keys"
    if not (keys / "kubecrate.key").exists():
        sh(VENV / "kubecrate", "keygen", "--out", keys, stdout=subprocess.DEVNULL)
    return keys


def build(preset: str, keys: Path) -> Path:
    out = WORK / "bundles"
    sh(VENV / "kubecrate", "build", RECIPE, "--mirrors", preset, "--key",
       keys / "kubecrate.key", "--out", out, "--lock", WORK / "k8s-1.23.17-el7.lock")
    return out


def verify(out: Path, keys: Path) -> None:
    for name in (halab.NAME + ".tar", "kubecrate-installer.pyz"):
        sh("minisign", "-Vqm", out / name, "-p", keys / "kubecrate.pub")
        print(f"    minisign: {name} OK")


def make_lab(core: Path) -> tuple[Lab, dict]:
    cleanup_stale(LAB)
    folder = WORK / "hosts"
    shutil.rmtree(folder, ignore_errors=True)
    lab = Lab(LAB, halab.NAMES, folder, SUBNET).setup()
    nodes = halab.prepare(lab, core, WORK / "shiv", SUBNET)
    for node in nodes.values():
        print(f"    {node.name}: {node.host.address} (netns {node.host.ns})")
    return lab, nodes


def check(done: subprocess.CompletedProcess, node) -> None:
    if done.returncode != 0:
        raise SystemExit(f"install failed on {node.name} (exit {done.returncode}):\n"
                         f"{done.stdout}{done.stderr}{node.logs()}")


def install_first(nodes: dict, out: Path) -> Path:
    join = WORK / "join.yaml"
    join.unlink(missing_ok=True)
    done = nodes["cp1"].install(out, "--join-out", join)
    check(done, nodes["cp1"])
    for line in done.stdout.splitlines():
        if "VIP" in line or "kubeadm init" in line or "join.yaml" in line:
            print("    " + line.strip())
    return join


def join_others(nodes: dict, out: Path, join: Path) -> None:
    for name in ("cp2", "cp3", "w1"):
        check(nodes[name].install(out, "--join", join), nodes[name])
        print(f"    {name} joined")


def status(nodes: dict, out: Path) -> None:
    rows = halab.get_nodes(nodes["w1"], nodes["cp1"])
    print(f"    kubectl get nodes (through the VIP {halab.vip(SUBNET)}:{halab.LB_PORT}):")
    for row in rows:
        print("      " + "  ".join(row))
    done = nodes["cp1"].pyz(out, "status", "--root", nodes["cp1"].root)
    for line in (done.stdout or done.stderr).splitlines():
        print("    " + line)


def drill(nodes: dict) -> float:
    print(f"    {halab.DRILLS['link-down']}; w1 polls https://VIP:{halab.LB_PORT}/healthz "
          "every 100 ms")
    old, new, window = halab.failover_drill(nodes, "w1", SUBNET)
    print(f"    the VIP moved from {old} to {new}; the endpoint was unreachable for "
          f"{window:.1f} s")
    return window


def down() -> None:
    removed = cleanup_stale(LAB)
    print(f"removed {len(removed)} demo namespaces")
    mirror_world("down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true",
                        help="leave the hosts and the mirror world running (undo with --down)")
    parser.add_argument("--down", action="store_true",
                        help="stop what an earlier --keep left running, then exit")
    args = parser.parse_args()
    if args.down:
        down()
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    stages, lab, window = Stages(), None, None
    started = time.monotonic()
    try:
        state = stages.run("start the local mirror world", mirror_world, "up")
        keys = stages.run("create a signing key (kubecrate keygen)", keygen)
        out = stages.run("build the primary bundle (kubecrate build)", build,
                         state["presets"]["default"], keys)
        stages.run("check the bundle and the .pyz with the stock minisign", verify, out, keys)
        core = stages.run("make a minimal CentOS 7 root (@core, real dnf)", halab.core_root,
                          Path(_fresh(WORK / "core")))
        lab, nodes = stages.run("create four network-namespace hosts", make_lab, core)
        join = stages.run("install cp1: VIP first, then kubeadm init", install_first, nodes, out)
        stages.run("join cp2, cp3 and w1 with join.yaml", join_others, nodes, out, join)
        stages.run("cluster status", status, nodes, out)
        window = stages.run("failover drill", drill, nodes)
    finally:
        if not args.keep:
            if lab is not None:
                stages.run("remove the hosts", lab.teardown)
            stages.run("stop the mirror world", mirror_world, "down")
    print("\nsummary")
    for title, elapsed in stages.timings:
        print(f"  {elapsed:6.1f} s  {title}")
    print(f"  {time.monotonic() - started:6.1f} s  total")
    if window is not None:
        print(f"  failover window: {window:.1f} s")
    if args.keep:
        print("  left running (--keep); stop everything with: scripts/demo --down")
    return 0


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


if __name__ == "__main__":
    sys.exit(main())
