"""Pulling the primary profile's image set (v1.23.17 + flannel, linux/amd64) into a cold
cache vs `skopeo copy` of the same images one after another into docker-archives.

The mirror world's images are tiny, so this benchmark starts its own `docker-registry` on
127.0.0.1 serving images under the same canonical names, with layers scaled to about real
sizes times 1.25 (over 300 MB in all; incompressible contents in gzip tars, a base layer shared
by the kube-* images like debian-base is). The images are written once under
`work/registry` and reused.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterator

import requests
import yaml

from benchmarks.timing import Result, side_by_side
from builder.registry.mediatypes import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST

REPO = Path(__file__).resolve().parents[2]
FORMAT = "1"  # bump when the generated images change
MB = 1_000_000
SCALE = 1.25
BASE = 8 * MB  # shared by every kube-* image and etcd
# (canonical reference, own layer size in bytes, shares the base layer): sizes of the real
# compressed linux/amd64 images, rounded
IMAGES = [
    ("registry.k8s.io/kube-apiserver:v1.23.17", 30 * MB, True),
    ("registry.k8s.io/kube-controller-manager:v1.23.17", 28 * MB, True),
    ("registry.k8s.io/kube-scheduler:v1.23.17", 13 * MB, True),
    ("registry.k8s.io/kube-proxy:v1.23.17", 37 * MB, True),
    ("registry.k8s.io/pause:3.6", 300_000, False),
    ("registry.k8s.io/etcd:3.5.6-0", 95 * MB, True),
    ("registry.k8s.io/coredns/coredns:v1.8.6", 13 * MB, False),
    ("docker.io/flannel/flannel:v0.22.3", 27 * MB, False),
    ("docker.io/flannel/flannel-cni-plugin:v1.2.0", 4 * MB, False),
]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, size: int, rng: random.Random) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 1694995200
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    data = raw.getvalue()
    return gzip.compress(data, compresslevel=1, mtime=0), _digest(data)


def _link(path: Path, digest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)


def generate(root: Path) -> int:
    """distribution's filesystem storage under root/storage (registry/storage/paths.go);
    returns the total layer bytes. Reused while FORMAT is unchanged."""
    stamp = root / "complete"
    if stamp.exists() and stamp.read_text().split()[0] == FORMAT:
        return int(stamp.read_text().split()[1])
    shutil.rmtree(root, ignore_errors=True)
    v2 = root / "storage" / "docker" / "registry" / "v2"
    rng = random.Random(20230918)

    def blob(data: bytes) -> str:
        digest = _digest(data)
        path = v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return digest

    base = _layer("usr/lib/base.bin", int(BASE * SCALE), rng)
    total = 0
    for ref, size, shared in IMAGES:
        name, tag = ref.rsplit(":", 1)
        repository = name.split("/", 1)[1]
        layers = ([base] if shared else []) + [_layer("app.bin", int(size * SCALE), rng)]
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2023-09-18T00:00:00Z",
            "config": {"Entrypoint": ["/" + repository.rsplit("/", 1)[-1]]},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": blob(config)},
            "layers": [{"mediaType": DOCKER_LAYER, "size": len(gz), "digest": blob(gz)}
                       for gz, _ in layers],
        }, sort_keys=True).encode()
        manifest_digest = blob(manifest)
        repo = v2 / "repositories" / repository
        for digest in [_digest(config)] + [_digest(gz) for gz, _ in layers]:
            _link(repo / "_layers" / "sha256" / digest[7:] / "link", digest)
        _link(repo / "_manifests" / "revisions" / "sha256" / manifest_digest[7:] / "link",
              manifest_digest)
        _link(repo / "_manifests" / "tags" / tag / "current" / "link", manifest_digest)
        _link(repo / "_manifests" / "tags" / tag / "index" / "sha256" / manifest_digest[7:]
              / "link", manifest_digest)
        total += sum(len(gz) for gz, _ in layers if gz is not base[0])
    total += len(base[0])
    stamp.write_text(f"{FORMAT} {total}\n")
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed: run scripts/setup-dev")
    port = _free_port()
    config = root / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": "0.1", "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")},
                    "maintenance": {"uploadpurging": {"enabled": False},
                                    "readonly": {"enabled": True}}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench"},
    }))
    log = open(root / "registry.log", "ab")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/v2/", timeout=1, proxies={"http": None}).ok:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_registry(proc)
    raise SystemExit(f"docker-registry did not start; see {root / 'registry.log'}")


def stop_registry(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def write_preset(path: Path, url: str) -> None:
    data = yaml.safe_load((REPO / "manifests" / "mirrors" / "upstream.yaml").read_text())
    entry = {"url": url, "insecure": True}
    data["name"] = "bench"
    data["registries"] = {"registry.k8s.io": entry, "docker.io": entry}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


PULL = """
import sys
from builder.cache import Cache
from builder.inputs.mirrors import load_preset
from builder.registry.client import pull_images
from builder.registry.mediatypes import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST
pull_images(sys.argv[3:], "linux/amd64", load_preset(sys.argv[1]), Cache(sys.argv[2]))
"""


def run(work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    total = generate(work / "registry")
    proc, url = start_registry(work / "registry")
    try:
        host = url.split("://", 1)[1]
        preset = work / "preset.yaml"
        write_preset(preset, url)
        authfile = work / "auth.json"
        authfile.write_text("{}")
        cache, archives = work / "cache", work / "archives"
        refs = [ref for ref, _, _ in IMAGES]
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
               "PYTHONPATH": str(REPO)}

        def reset() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(archives, ignore_errors=True)
            archives.mkdir()
            os.sync()

        cpu: dict[str, list[float]] = {"ours": [], "peer": []}

        def ours() -> None:
            with _cpu_into(cpu["ours"]):
                subprocess.run([sys.executable, "-c", PULL, str(preset), str(cache), *refs],
                               check=True, env=env, timeout=900)

        def peer() -> None:
            with _cpu_into(cpu["peer"]):
                _skopeo_all()

        def _skopeo_all() -> None:
            for index, ref in enumerate(refs):
                source = ref.split("/", 1)[1]
                subprocess.run(
                    ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--authfile",
                     str(authfile), f"docker://{host}/{source}",
                     f"docker-archive:{archives}/{index}.tar:{ref}"],
                    check=True, env=env, timeout=900, stdout=subprocess.DEVNULL)

        ours_times, peer_times = side_by_side(runs, ours, peer, reset)
        reset()
    finally:
        stop_registry(proc)
    return [Result(
        name=f"pull the v1.23.17 + flannel image set ({total / MB:.0f} MB of layers), "
             "cold cache",
        ours="pull_images(9 refs, linux/amd64, preset, Cache(cold))",
        peer="skopeo copy docker://... docker-archive:N.tar:REF, one image after another",
        ours_seconds=ours_times, peer_seconds=peer_times, goal=0.6,
        note="both from one local docker-registry; ours verifies digests and diff IDs. CPU "
             "seconds (user + sys) per run: kubecrate [{}], skopeo [{}] (the registry's "
             "not counted: it serves both alike). When other work keeps both cores busy, "
             "these, not the connections each side keeps open, set the ratio".format(
                 ", ".join(f"{t:.2f}" for t in cpu["ours"]),
                 ", ".join(f"{t:.2f}" for t in cpu["peer"])))]


@contextlib.contextmanager
def _cpu_into(sink: list[float]) -> Iterator[None]:
    """Append the CPU seconds (user + sys) the child processes run inside used to `sink`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sink.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


if __name__ == "__main__":
    for result in run(REPO / ".cache" / "bench" / "pull", int(sys.argv[1]) if sys.argv[1:] else 1):
        print(f"{result.name}: ours {result.ours_seconds} peer {result.peer_seconds} "
              f"ratio {result.ratio:.2f}")
