"""Generated inputs for benchmarks, shaped like real bundles and cached between runs."""

from __future__ import annotations

import os
import random
from pathlib import Path

# A v1.23.17 + Docker bundle is roughly: ~70 RPMs (30 KB - 40 MB), kube binaries of 40-120 MB,
# one image archive of ~700 MB of gzip layers, a few small files. Contents are random bytes
# because the real payload is already compressed.
SHAPE = (
    [("repo/Packages/pkg-%02d.rpm" % i, 30_000 + i * 37_000) for i in range(60)]
    + [("repo/Packages/docker-ce-%d.rpm" % i, 24_000_000) for i in range(2)]
    + [("repo/Packages/containerd.io.rpm", 34_000_000)]
    + [("bin/kubeadm", 45_000_000), ("bin/kubelet", 118_000_000), ("bin/kubectl", 46_000_000)]
    + [("bin/crictl.tar.gz", 18_000_000), ("bin/cni-plugins.tgz", 36_000_000)]
    + [("images/images.tar", 760_000_000)]
    + [("repo/repodata/primary.xml.gz", 40_000), ("addons/kube-flannel.yml", 5_000)]
)


def bundle_source(folder: Path) -> Path:
    """Create (once) a source tree of about 1.1 GiB of incompressible data."""
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    rng = random.Random(1723)
    block = rng.randbytes(1 << 20)
    for relpath, size in SHAPE:
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            left = size
            while left > 0:
                # rotate the block so no two MiB are equal (no accidental dedup or compression)
                shift = rng.randrange(len(block))
                chunk = (block[shift:] + block[:shift])[: min(left, len(block))]
                out.write(chunk)
                left -= len(chunk)
        if relpath.startswith("bin/kube"):
            os.chmod(path, 0o755)
    stamp.touch()
    return folder


def total_size() -> int:
    return sum(size for _, size in SHAPE)
