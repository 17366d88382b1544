"""Size of the bundle's one image archive vs the sum of per-image `docker save` files.

The images are synthetic but shaped like the v1.23.17 + flannel + keepalived/haproxy set: the
kube control-plane images share a distroless-like base, gzip layers of the published sizes
(scaled), with contents about as compressible as Go binaries. Our archive is written by
builder/registry/image_archive.py; the peer is `docker save IMAGE` (Docker 20.10, private
daemon) once per image, the way per-image tarballs are usually shipped. This row reports sizes
in MiB, not seconds; the ratio is ours/peer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import sys
import tarfile
from pathlib import Path

from benchmarks.timing import Result

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # builder/ of this checkout

from lab.runtimes import private_dockerd  # noqa: E402

from builder.cache import Cache  # noqa: E402
from builder.registry.image_archive import write_archive  # noqa: E402
from builder.registry.images import PulledImage  # noqa: E402
from builder.registry.mediatypes import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST  # noqa: E402

MIB = 1 << 20
# (reference, base layers it shares, own layer sizes in MB of gzip): published v1.23.17-era
# compressed sizes, rounded.
BASES = {"distroless": [0.8, 1.8], "debian": [27.0], "alpine": [2.8]}
IMAGES = [
    ("registry.k8s.io/kube-apiserver:v1.23.17", "distroless", [30.0]),
    ("registry.k8s.io/kube-controller-manager:v1.23.17", "distroless", [28.0]),
    ("registry.k8s.io/kube-scheduler:v1.23.17", "distroless", [13.0]),
    ("registry.k8s.io/kube-proxy:v1.23.17", "distroless", [8.0, 30.0]),
    ("registry.k8s.io/pause:3.6", None, [0.3]),
    ("registry.k8s.io/etcd:3.5.6-0", "distroless", [16.0, 62.0]),
    ("registry.k8s.io/coredns/coredns:v1.8.6", "distroless", [12.0]),
    ("docker.io/flannel/flannel:v0.22.3", "alpine", [8.0, 17.0]),
    ("docker.io/flannel/flannel-cni-plugin:v1.2.0", "alpine", [1.2]),
    ("docker.io/osixia/keepalived:2.0.20", "alpine", [4.0, 11.0]),
    ("docker.io/library/haproxy:2.8", "debian", [12.0]),
]


def _layer(rng: random.Random, megabytes: float) -> tuple[bytes, bytes]:
    """(gzip bytes, uncompressed tar) of about `megabytes` compressed, ~2.3x compressible."""
    target = int(megabytes * MIB * 2.3)
    chunks, size = [], 0
    while size < target:
        chunks.append(rng.randbytes(4096) + bytes(5300))  # noise then zeros, like binaries
        size += 9396
    data = b"".join(chunks)[:target]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"usr/local/bin/payload-{rng.randrange(1 << 30)}")
        info.size, info.mode, info.mtime = len(data), 0o755, 1694995200
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0), raw.getvalue()


def _images(cache: Cache) -> list[PulledImage]:
    rng = random.Random(5)
    bases = {name: [_layer(rng, mb) for mb in sizes] for name, sizes in BASES.items()}
    out = []
    for ref, base, sizes in IMAGES:
        layers = (bases[base] if base else []) + [_layer(rng, mb) for mb in sizes]
        digests = [cache.put_bytes(gz) for gz, _ in layers]
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [
                                 "sha256:" + hashlib.sha256(tar).hexdigest()
                                 for _, tar in layers]}}).encode()
        config_digest = cache.put_bytes(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG,
                       "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": DOCKER_LAYER, "size": len(gz), "digest": d}
                       for (gz, _), d in zip(layers, digests)]}).encode()
        out.append(PulledImage(ref, "linux/amd64", cache.put_bytes(manifest), DOCKER_MANIFEST,
                               config_digest, tuple(digests), (DOCKER_LAYER,) * len(layers),
                               tuple(len(gz) for gz, _ in layers)))
    return out


def run(work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    cache = Cache(work / "cache")
    images = _images(cache)
    archive = write_archive(images, cache, work / "images.tar", mtime=1700000000)
    saves = work / "saves"
    saves.mkdir(exist_ok=True)
    peer = 0
    with private_dockerd() as dockerd:
        dockerd.run("load", "-i", archive.path)
        for index, image in enumerate(images):
            out = saves / f"{index:02d}.tar"
            dockerd.run("save", "-o", out, image.reference)
            peer += out.stat().st_size
            out.unlink()
    layer_mib = sum(size for im in images for size in im.layer_sizes) / MIB
    return [Result(
        name=(f"image archive size ({len(images)} images, "
              f"{layer_mib:.0f} MiB of gzip layers counted per image)"),
        ours="builder.registry.image_archive.write_archive (one tar, blobs once, gzip layers)",
        peer="docker save -o X.tar IMAGE, once per image (Docker 20.10)",
        ours_seconds=[archive.size / MIB], peer_seconds=[peer / MIB], goal=None, unit="MiB",
        note=(f"sizes, not times (measured once; --runs does not apply): ours "
              f"{archive.size / MIB:.1f} MiB, sum of docker save files {peer / MIB:.1f} MiB"))]
