"""The project `fleet export` writes is one the real ansible-core (2.14-2.16, from the test
extra) accepts: the playbook passes --syntax-check and the inventory has the roles as groups."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.installer.test_fleet_export import export, kit  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def ansible(tool, out, *args):
    return subprocess.run([str(BIN / tool)] + list(args), cwd=str(out), capture_output=True,
                          text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "ANSIBLE_HOME": str(out / ".ansible"),
                               "ANSIBLE_LOCAL_TEMP": str(out / ".ansible/tmp")})


def test_ansible_core_accepts_the_exported_project(tmp_path, capfd, kit):  # noqa: F811
    code, printed = export(capfd, kit, tmp_path / "p")
    assert code == 0, printed.err
    out = tmp_path / "p"
    version = ansible("ansible-playbook", out, "--version")
    assert version.stdout.startswith(("ansible-playbook [core 2.14", "ansible-playbook [core 2.15",
                                      "ansible-playbook [core 2.16")), version.stdout
    checked = ansible("ansible-playbook", out, "--syntax-check", "site.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = ansible("ansible-inventory", out, "--list")
    assert listed.returncode == 0, listed.stderr
    groups = json.loads(listed.stdout)
    assert groups["control_plane"]["hosts"] == ["cp1", "cp2"]
    assert groups["worker"]["hosts"] == ["w1", "w2"]
    assert groups["first_control_plane"]["hosts"] == ["cp1"]
