"""The install-to-unpack benchmark's own run (scripts/benchmarks/unpack.py): `install
--host-only` of w1 in CLUSTER, as the CLI runs it, cut after the unpack step, for a bundle
packed with METADATA. tests/unit/test_benchmark_commands.py runs it on a small bundle, so the
cut keeps up with the installer (scripts/bench is not part of the suite).
"""

import sys
from pathlib import Path

# What install reads from bundle.json and cluster.yaml before its unpack step.
METADATA = {"target": {"os": "centos", "release": "7", "arch": "x86_64"},
            "kubernetes_version": "v1.23.17", "runtime": "docker",
            "roles": {"worker": {"packages": []}, "control-plane": {"packages": []}}}
CLUSTER = """\
control_plane: {vip: 10.0.0.100, port: 8443}
networking: {pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}
load_balancer: {mode: services, interface: eth0, router_id: 51, auth_pass: k8sVIP42}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
"""
# `install --host-only` as the CLI runs it, cut after the unpack step: preflight's host checks
# (yum dry run, ports, modules) and the later steps are not what this row measures. What it
# does measure: cluster.yaml, the bundle read once into the staging folder, the unpack step.
INSTALL_TO_UNPACK = """
import sys
from installer import cli, session
from installer.steps import unpack
session.run_preflight = lambda ctx: []
session.all_steps = lambda *args, **kwargs: [unpack.UnpackStep()]
cli.main(sys.argv[1:])
"""


def install_to_unpack(bundle: Path, cluster: Path, pub: Path, root: Path) -> list:
    """The argv of the run."""
    return [sys.executable, "-c", INSTALL_TO_UNPACK, "install", "--host-only", "--bundle",
            str(bundle), "--cluster", str(cluster), "--node", "w1", "--key", str(pub),
            "--root", str(root)]
