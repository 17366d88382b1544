"""Installer unpack of a ~1.1 GiB bundle vs `minisign -V` followed by `tar xf` (the manual way),
and `install` up to the end of its unpack step against the same peer.

Both read the same file from the page cache and write the same bytes; kubecrate reads the
bundle once, hashing it with BLAKE2b for the signature and every member with SHA-256 against
bundle.json, writes the members with O_DIRECT where the file system takes it, and fsyncs every
file before the cache folder is renamed into place (tar does none of this). Each run's
CPU seconds are recorded too: on a busy machine they, not the wall time on idle cores, set
the pace.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lab.unpackrun import CLUSTER, METADATA, install_to_unpack

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
        metadata = work / "metadata.json"
        metadata.write_text(json.dumps(METADATA))
        subprocess.run([VENV / "kubecrate", "pack", source, "--out", bundle, "--key",
                        keys / "kubecrate.key", "--metadata", metadata], check=True,
                       capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
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
    cpu: dict[str, list[float]] = {"ours": [], "peer": [], "install": [], "install peer": []}
    ours = _counted([sys.executable, "-m", "installer", "unpack", str(bundle), "--key", str(pub),
                     "--root", str(ours_root)], cpu["ours"])
    peer_argv = ["sh", "-c",
                 f"minisign -Vqm '{bundle}' -p '{pub}' && tar xf '{bundle}' -C '{peer_root}'"]
    ours_times, peer_times = side_by_side(runs, ours, _counted(peer_argv, cpu["peer"]), reset)
    cluster = work / "cluster.yaml"
    cluster.write_text(CLUSTER)
    install = _counted(install_to_unpack(bundle, cluster, pub, ours_root), cpu["install"])
    install_times, install_peer_times = side_by_side(runs, install,
                                                     _counted(peer_argv, cpu["install peer"]),
                                                     reset)
    reset()
    blake2b, sha256 = _hash_seconds(bundle)
    size_gib = os.path.getsize(bundle) / 2**30
    note = ("Kubecrate fsyncs the whole cache folder before its rename (a crash must not "
            "leave a cache that looks complete) and hashes every member with SHA-256 besides "
            "the BLAKE2b of the whole file; tar does neither. With other work on the 2 cores the "
            "kernel shares them out per session (autogroup), so there the CPU seconds decide, "
            "not how many cores each side keeps busy. CPU seconds (user + sys) per run: {}")

    def cpu_note(ours_key: str, peer_key: str) -> str:
        return note.format("kubecrate [{}], peer [{}]".format(
            ", ".join(f"{t:.2f}" for t in cpu[ours_key]),
            ", ".join(f"{t:.2f}" for t in cpu[peer_key]))) + floor

    peer_cpu = statistics.median(cpu["peer"])
    floor = (f". The two hashes alone, over the bundle in the page cache on one core: BLAKE2b-512 "
             f"{blake2b:.2f} s (the signature's; minisign computes it too) + SHA-256 "
             f"{sha256:.2f} s (every member's; tar computes none) = {blake2b + sha256:.2f} CPU "
             f"seconds before any read or write, against the peer's median {peer_cpu:.2f} for "
             "everything: what is left for ours to read, parse and write is the difference")

    return [Result(
        name=f"unpack a {size_gib:.2f} GiB bundle ({total_size() / 2**30:.2f} GiB of files)",
        ours="python3 -m installer unpack X.tar --key K --root R",
        peer="minisign -V -m X.tar -p K && tar xf X.tar -C R",
        ours_seconds=ours_times, peer_seconds=peer_times, goal=1.0,
        note=cpu_note("ours", "peer")),
        Result(
        name=f"install up to the end of unpack, {size_gib:.2f} GiB bundle (one read)",
        ours="python3 -m installer install --host-only --bundle X.tar ... (preflight checks "
             "and later steps cut)",
        peer="minisign -V -m X.tar -p K && tar xf X.tar -C R",
        ours_seconds=install_times, peer_seconds=install_peer_times, goal=1.0,
        note=cpu_note("install", "install peer"))]


def _hash_seconds(bundle: Path) -> tuple[float, float]:
    """CPU seconds of BLAKE2b-512 and of SHA-256 over the whole bundle, in this process, with
    the bundle in the page cache (read once beforehand, untimed)."""
    seconds = []
    for make in (hashlib.blake2b, hashlib.sha256):
        with open(bundle, "rb", buffering=0) as handle:
            digest = make()
            spent = 0.0
            for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023
                start = time.thread_time()
                digest.update(block)
                spent += time.thread_time() - start
        seconds.append(spent)
    return seconds[0], seconds[1]


def _counted(argv: list, sink: list):
    """A command for side_by_side that also appends the CPU seconds (user + sys) it and its
    children used to `sink`."""
    def command() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=900)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sink.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return command
