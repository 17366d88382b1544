"""Installer unpack of a ~1.1 GiB bundle vs `minisign -V` followed by `tar xf` (the manual way).

Both read the same file from the page cache and write the same bytes; kubecrate additionally
hashes every member with SHA-256 and re-hashes the raw bytes with BLAKE2b.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.fixtures import bundle_source, total_size
from benchmarks.timing import Result, side_by_side

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv" / "bin"


def run(work: Path, runs: int) -> list[Result]:
    source = bundle_source(work / "bundle-src")
    keys = work / "keys"
    if not (keys / "kubecrate.key").exists():
        subprocess.run([VENV / "kubecrate", "keygen", "--out", keys], check=True,
                       capture_output=True)
    bundle = work / "bench.tar"
    if not bundle.exists():
        subprocess.run([VENV / "kubecrate", "pack", source, "--out", bundle, "--key",
                        keys / "kubecrate.key"], check=True, capture_output=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    ours_root, peer_root = work / "root-ours", work / "root-peer"

    def reset() -> None:
        shutil.rmtree(ours_root, ignore_errors=True)
        shutil.rmtree(peer_root, ignore_errors=True)
        peer_root.mkdir()
        os.sync()  # no write-back of the previous run billed to the next one
        time.sleep(1)  # nor the TRIMs that deleting it queues (ext4 mounted with discard)
        with open(bundle, "rb") as handle:  # both start with the bundle in the page cache
            while handle.read(1 << 24):
                pass

    pub = keys / "kubecrate.pub"
    ours = [sys.executable, "-m", "installer", "unpack", str(bundle), "--key", str(pub),
            "--root", str(ours_root)]
    peer = ["sh", "-c",
            f"minisign -Vqm '{bundle}' -p '{pub}' && tar xf '{bundle}' -C '{peer_root}'"]
    ours_times, peer_times = side_by_side(runs, ours, peer, reset)
    reset()
    size_gib = os.path.getsize(bundle) / 2**30
    return [Result(
        name=f"unpack a {size_gib:.2f} GiB bundle ({total_size() / 2**30:.2f} GiB of files)",
        ours="python3 -m installer unpack X.tar --key K --root R",
        peer="minisign -V -m X.tar -p K && tar xf X.tar -C R",
        ours_seconds=ours_times, peer_seconds=peer_times, goal=1.25)]
