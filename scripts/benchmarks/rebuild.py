"""Warm rebuild vs cold build of the primary recipe (k8s-1.23.17-el7), with real-sized images.

RPMs and binaries come from the mirror world (scripts/mirror-world up, its own run folder),
registry.k8s.io's images from the pull benchmark's docker-registry, which has them at about
real sizes (benchmarks/pull.py), so staging, packing and linting weigh what they do on a real
build; docker.io's (flannel, haproxy, keepalived) are the world's small ones. Both sides run
`kubecrate build` with the same lock and a warm download cache: the peer into an empty output
folder (everything is staged, packed, linted), ours into the folder that already holds that
build's outputs. The outputs of both are checked to be byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from benchmarks import pull
from benchmarks.timing import Result, side_by_side

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv" / "bin"
RECIPE = REPO / "manifests" / "k8s-1.23.17-el7.yaml"


def _world(command: str, run: Path) -> None:
    env = {**os.environ, "KUBECRATE_MW_RUN": str(run)}
    subprocess.run([str(REPO / "scripts" / "mirror-world"), command], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run(work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "mirror-world-run"
    _world("up", run_dir)
    registry = None
    try:
        pull.generate(work.parent / "pull" / "registry")
        registry, url = pull.start_registry(work.parent / "pull" / "registry")
        world = json.loads((run_dir / "state.json").read_text())["presets"]["default"]
        preset = yaml.safe_load(Path(world).read_text())
        preset["name"] = "bench-rebuild"  # docker.io stays the world's: haproxy, keepalived
        preset["registries"]["registry.k8s.io"] = {"url": url, "insecure": True}
        preset_path = work / "preset.yaml"
        preset_path.write_text(yaml.safe_dump(preset, sort_keys=False))
        keys = work / "keys"
        if not (keys / "kubecrate.key").exists():
            subprocess.run([VENV / "kubecrate", "keygen", "--out", keys], check=True,
                           capture_output=True)
        lock, cache = work / "bench.lock", work / "cache"
        lock.unlink(missing_ok=True)
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

        def build(out: Path) -> None:
            done = subprocess.run([VENV / "kubecrate", "build", RECIPE, "--mirrors", preset_path,
                                   "--key", keys / "kubecrate.key", "--out", out, "--lock", lock,
                                   "--cache", cache], capture_output=True, text=True, env=env,
                                  timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"kubecrate build failed: {done.stderr[-3000:]}")

        warm, cold = work / "warm", work / "cold"
        shutil.rmtree(warm, ignore_errors=True)
        build(warm)  # locks, fills the cache and writes the outputs the warm side keeps
        images = sum(p.stat().st_size for p in (cache / "sha256").rglob("*") if p.is_file()
                     and p.stat().st_size > 1 << 20)

        def reset() -> None:
            shutil.rmtree(cold, ignore_errors=True)

        ours_times, peer_times = side_by_side(runs, lambda: build(warm), lambda: build(cold),
                                              reset)
        build(cold)
        if _digests(warm) != _digests(cold):
            raise RuntimeError("the warm rebuild's outputs differ from the cold build's")
        bundle = next(warm.glob("*.tar")).stat().st_size
    finally:
        if registry is not None:
            pull.stop_registry(registry)
        _world("down", run_dir)
    return [Result(
        name=f"rebuild the primary recipe from an unchanged lock ({bundle / 2**20:.0f} MiB "
             f"bundle, {images / 2**20:.0f} MiB of cached blobs over 1 MiB)",
        ours="kubecrate build RECIPE --out OUT (OUT holds this lock's verified outputs)",
        peer="kubecrate build RECIPE --out EMPTY (same lock, warm download cache)",
        ours_seconds=ours_times, peer_seconds=peer_times, goal=0.15,
        note="outputs byte-identical; ours verifies both files' BLAKE2b and signatures")]


if __name__ == "__main__":
    for result in run(REPO / ".cache" / "bench" / "rebuild", 1):
        print(f"{result.name}: ours {result.ours_seconds} cold {result.peer_seconds} "
              f"ratio {result.ratio:.2f}")
