"""scripts/demo, the README's first command, run as a user runs it: it completes, prints the
cluster, the failover window and a summary, and leaves nothing running (no --keep)."""

import re
import subprocess
from pathlib import Path

import pytest
from lab.netns import namespaces
from lab.procs import naming, processes

from tests.conftest import require_root

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_demo_completes_and_leaves_nothing_running():
    require_root()
    done = subprocess.run([str(REPO / "scripts" / "demo")], cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    for node in ("cp1", "cp2", "cp3", "w1"):
        assert re.search(r"^\s+{}\s+Ready\s".format(node), out, re.M), out
    window = re.search(r"failover window: ([0-9.]+) s", out)
    assert window and float(window.group(1)) < 10, out
    assert "the VIP moved from cp1 to" in out
    assert re.search(r"^\s+[0-9.]+ s\s+total$", out, re.M)
    assert not [ns for ns in namespaces() if ns.startswith("kc-demo-")]
    assert processes(naming("/.cache/demo/")) == []
