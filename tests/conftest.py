"""Shared fixtures. Integration fixtures that start real local services live next to their tests
or in tests/integration/conftest.py; everything binds 127.0.0.1 or a test network namespace."""

import os
import shutil

import pytest

pytest_plugins = ["tests.mirror_world"]


def require_tool(name: str) -> str:
    """Path of a real tool that scripts/setup-dev installs; fail (not skip) when it is missing,
    so that a broken setup never passes silently."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/setup-dev")
    return path


@pytest.fixture
def source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    return 1700000000


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    # Tests talk to 127.0.0.1 only; a proxy from the environment must never see that traffic.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("KUBECRATE_TEST", "1")
