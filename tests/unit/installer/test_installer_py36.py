"""The installer runs on CentOS 7's Python 3.6: vermin proves no newer syntax or stdlib use."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_installer_needs_nothing_newer_than_python_3_6():
    vermin = Path(sys.executable).with_name("vermin")
    result = subprocess.run([str(vermin), "--no-tips", "--violations", "-t=3.6-",
                             str(REPO / "installer")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
