"""Every installer run leaves a log the operator can send: under --root,
0600, with debug detail whatever -v said, the failure and the exit code, secrets redacted."""

import logging
import os
import stat

import pytest

from installer import cli, joinfile, runlog
from installer.format.errors import ExitCode
from installer.format.redact import MASK


def installer(capfd, *args):
    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    return done.value.code, capfd.readouterr().err


def logs(root):
    folder = root / "var/log/kubecrate"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_failing_run_writes_a_0600_log_and_names_it(tmp_path, capfd):
    code, err = installer(capfd, "join-info", "--root", str(tmp_path))
    assert code == ExitCode.PRECONDITION
    [log] = logs(tmp_path)
    assert log.name.startswith("join-info-") and log.name.endswith("Z.log")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert err.endswith("log of this run: {}\n".format(log))
    text = log.read_text()
    assert "command: python3 -m installer join-info --root {}".format(tmp_path) in text
    assert "Traceback" in text and "error: {}/etc/kubernetes/admin.conf is missing".format(
        tmp_path) in text
    assert text.endswith("exit code 4\n")


def test_a_successful_run_logs_debug_detail_without_minus_v(tmp_path, capfd):
    code, err = installer(capfd, "status", "--root", str(tmp_path))
    assert code == 0 and "log of this run" not in err
    [log] = logs(tmp_path)
    assert log.name.startswith("status-") and log.read_text().endswith("exit code 0\n")


def test_dry_run_writes_no_log(tmp_path, capfd):
    installer(capfd, "reset", "--dry-run", "--root", str(tmp_path))
    assert logs(tmp_path) == []


def test_the_log_is_redacted_by_the_same_helper(tmp_path):
    token, key = joinfile.new_token(), joinfile.new_certificate_key()
    path = runlog.start(str(tmp_path), "install", ["install", "--token", token], "1")
    try:
        logging.getLogger("installer.test").debug("joining with %s and %s", token, key)
        runlog.note("kubeadm said --certificate-key " + key)
    finally:
        runlog.stop(0)
    text = open(path).read()
    assert token not in text and key not in text and token[:6] + "." + MASK in text
    assert "joining with" in text and text.count(MASK) >= 3


def test_only_the_newest_logs_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "KEEP", 3)
    for _ in range(5):
        runlog.start(str(tmp_path), "verify", ["verify"], "1")
        runlog.stop(0)
    assert len(logs(tmp_path)) == 3 and os.listdir(str(tmp_path / "var/log/kubecrate"))
