"""The test harness never hides an untested host: a missing interpreter or a namespace test
that cannot run under CI fails, with how to fix it."""

import pytest

from tests import py36
from tests.e2e import netns


def test_a_missing_python_3_6_fails_saying_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(py36, "PY36", tmp_path / "python3.6")
    with pytest.raises(pytest.fail.Exception, match=r"pyenv install 3\.6\.15") as info:
        py36.python36()
    assert "KUBECRATE_PYTHON36" in str(info.value)


def test_a_python_of_another_version_fails(monkeypatch):
    monkeypatch.setattr(py36, "PY36", py36.python27())
    with pytest.raises(pytest.fail.Exception, match="not 3.6"):
        py36.python36()


def test_namespace_tests_fail_under_ci_when_not_root(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        netns.require_root()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        netns.require_root()  # on a developer's machine it may skip
