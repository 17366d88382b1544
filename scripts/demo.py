"""kubecrate's demo, stage by stage, on the local mirror world.

What exists today runs here: the mirror world, a signing key, a bundle of the release binaries
packed and signed, checked by the stock minisign and by the installer, and unpacked into a host
root. The build, HA install and failover stages join as they land.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
WORK = REPO / ".cache" / "demo"
VERSION = "v1.23.17"


class Demo:
    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    def stage(self, title: str, func, *args):
        print(f"==> {title}", flush=True)
        start = time.monotonic()
        result = func(*args)
        elapsed = time.monotonic() - start
        self.timings.append((title, elapsed))
        print(f"    done in {elapsed:.1f} s", flush=True)
        return result


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)


def mirror_world(command: str) -> None:
    """The demo's own world instance (its own run folder, the shared warm cache), so that it
    never stops a world someone else's tests are using."""
    env = {**os.environ, "KUBECRATE_MW_RUN": str(WORK / "mirror-world-run")}
    run(REPO / "scripts" / "mirror-world", command, env=env)


def keygen() -> Path:
    keys = WORK / "keys"
    if not (keys / "kubecrate.key").exists():
        run(VENV / "kubecrate", "keygen", "--out", keys)
    return keys


def stage_bundle(www: Path) -> Path:
    """Until `kubecrate build` lands: the release binaries of the primary profile."""
    source = WORK / "staging"
    shutil.rmtree(source, ignore_errors=True)
    release = www / "dl.k8s.io" / "release" / VERSION / "bin" / "linux" / "amd64"
    (source / "bin").mkdir(parents=True)
    for name in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy2(release / name, source / "bin" / name)
    return source


def pack(source: Path, keys: Path) -> Path:
    bundle = WORK / "bundles" / f"k8s-{VERSION[1:]}-demo.tar"
    run(VENV / "kubecrate", "pack", source, "--out", bundle, "--key", keys / "kubecrate.key",
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return bundle


def verify(bundle: Path, keys: Path) -> None:
    run("minisign", "-Vm", bundle, "-p", keys / "kubecrate.pub")
    run(VENV / "python", "-m", "installer", "verify", bundle, "--key", keys / "kubecrate.pub")


def unpack(bundle: Path, keys: Path) -> Path:
    root = WORK / "host-1"
    out = run(VENV / "python", "-m", "installer", "unpack", bundle, "--key",
              keys / "kubecrate.pub", "--root", root, stdout=subprocess.PIPE)
    folder = Path(out.stdout.strip())
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            print(f"    {path.relative_to(root)}")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the mirror world running")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    demo = Demo()
    started = time.monotonic()
    try:
        demo.stage("start the local mirror world", mirror_world, "up")
        www = REPO / ".cache" / "mirror-world" / "www"
        if os.environ.get("KUBECRATE_MW_CACHE"):
            www = Path(os.environ["KUBECRATE_MW_CACHE"]) / "www"
        keys = demo.stage("create a signing key (kubecrate keygen)", keygen)
        source = demo.stage("collect the release binaries", stage_bundle, www)
        bundle = demo.stage("pack and sign the bundle (kubecrate pack)", pack, source, keys)
        demo.stage("verify it with the stock minisign and the installer", verify, bundle, keys)
        shutil.rmtree(WORK / "host-1", ignore_errors=True)
        demo.stage("unpack it into a host root (installer unpack)", unpack, bundle, keys)
    finally:
        if not args.keep:
            demo.stage("stop the mirror world", mirror_world, "down")
    print("\nsummary")
    for title, elapsed in demo.timings:
        print(f"  {elapsed:6.1f} s  {title}")
    print(f"  {time.monotonic() - started:6.1f} s  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
