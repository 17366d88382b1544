"""`status` judges a host installed when its recorded install completed, also on a host an
older installer set up, before steps such as registry and bundle-server existed: it says
which of this installer's steps have not run there and that re-running install adds them."""

import json

from click.testing import CliRunner

from installer import cli, session
from installer.host import Host
from installer.state import State

# The steps an installer from before the registry and bundle-server steps recorded.
OLDER = ("preflight", "unpack", "host-prep", "local-repo", "time", "runtime", "images",
         "binaries", "loadbalancer", "kubeadm", "cni")


def _state(root, steps, role="control-plane"):
    records = {name: {"inputs": "0123456789abcdef", "changes": 1, "at": 1700000000 + i}
               for i, name in enumerate(steps)}
    path = root / "var/lib/kubecrate/state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "bundle": "d" * 64, "bundle_name": "k8s",
                                "node": "cp1", "role": role, "steps": records}))


def test_a_host_an_older_installer_installed_is_installed_and_told_what_is_new(tmp_path):
    _state(tmp_path, OLDER)
    status = session.status(str(tmp_path))
    assert status["installed"] is True
    assert status["steps_not_run"] == ["registry", "bundle-server"]
    out = CliRunner().invoke(cli.cli, ["status", "--root", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "installed: yes" in out.output
    assert "not run here yet (added since this host's install): registry, bundle-server; " \
        "re-run `install` to add them" in " ".join(out.output.split())


def test_an_install_that_stopped_before_its_last_step_is_partly_installed(tmp_path):
    _state(tmp_path, OLDER[:-1])  # killed before cni
    assert session.status(str(tmp_path))["installed"] is False
    out = CliRunner().invoke(cli.cli, ["status", "--root", str(tmp_path)])
    assert "installed: host prepared" in out.output and "not run here yet" not in out.output


def test_this_installers_install_counts_only_once_it_completed(tmp_path):
    # Killed after cni, before bundle-server: the old rule would let it pass; the completion
    # record install writes at its end decides.
    from installer import installrecord

    _state(tmp_path, OLDER + ("registry",))
    state = State.load(Host(str(tmp_path)))
    installrecord.started(state)
    assert session.status(str(tmp_path))["installed"] is False
    state.record("bundle-server", "0123456789abcdef", 0)
    installrecord.completed(state, [n for n in session.steps_of("control-plane")
                                    if n != "preflight"])
    status = session.status(str(tmp_path))
    assert status["installed"] is True and status["steps_not_run"] == []
