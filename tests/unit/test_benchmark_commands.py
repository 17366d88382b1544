"""The benchmarks' own commands still run against this checkout: `scripts/bench` is not part of
the suite, and its install row once stopped at a TypeError (its cut-down install replaced
session.all_steps with a one-argument function after all_steps took a second), so the row kept
figures of an older run."""

import subprocess

from lab import unpackrun as unpack
from lab.bundles import REPO, make_key, make_source, pack_source


def test_the_install_rows_cut_down_install_unpacks_a_bundle(tmp_path):
    key, _, public = make_key(tmp_path / "keys")
    bundle = pack_source(make_source(tmp_path / "src"), tmp_path / "k8s.tar", key,
                         metadata=unpack.METADATA).path
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(unpack.CLUSTER)
    root = tmp_path / "root"
    done = subprocess.run(unpack.install_to_unpack(bundle, cluster, public, root), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    cached = list((root / "var/lib/kubecrate/bundles").iterdir())
    assert len(cached) == 1 and (cached[0] / "bin/kubeadm").is_file(), cached
