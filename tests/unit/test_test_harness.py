"""The test harness never hides an untested host: a missing interpreter or a namespace test
that cannot run under CI fails, with how to fix it."""

import pytest
from lab import py36
from lab.tools import LabSetupError, require_tool

from tests import conftest


def test_a_missing_python_3_6_fails_saying_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(py36, "PY36", tmp_path / "python3.6")
    with pytest.raises(LabSetupError, match=r"pyenv install 3\.6\.15") as info:
        py36.python36()
    assert "KUBECRATE_PYTHON36" in str(info.value)


def test_a_python_of_another_version_fails(monkeypatch):
    monkeypatch.setattr(py36, "PY36", py36.python27())
    with pytest.raises(LabSetupError, match="not 3.6"):
        py36.python36()


def test_namespace_tests_fail_under_ci_when_not_root(monkeypatch):
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.require_root()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest.require_root()  # on a developer's machine it may skip


def test_a_missing_tool_fails_saying_how_to_get_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabSetupError, match="kc-none is not installed: run scripts/setup-dev"):
        require_tool("kc-none")


def test_unanswered_is_the_longest_time_between_answers_around_and_after_the_event():
    from lab.viplab import unanswered

    # (start, ok, end): a poll every 0.1 s; the one at 1.0 hangs until its timeout, the one at
    # 1.1 is answered late (a retransmitted SYN), the one at 1.3 at once
    polls = [(0.8, True, 0.81), (0.9, True, 0.91), (1.0, False, 4.0), (1.1, True, 2.15),
             (1.2, False, 1.2), (1.3, True, 1.71), (1.4, True, 1.41)]
    assert unanswered(polls, since=0.95) == pytest.approx(1.41 - 0.91)
    assert unanswered(polls, since=1.8) == pytest.approx(2.15 - 1.71)
    with pytest.raises(AssertionError, match="never answered"):
        unanswered(polls, since=2.2)
