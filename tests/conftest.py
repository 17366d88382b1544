"""Shared fixtures. The lab they set up (hosts, namespaces, runtimes) is scripts/lab/, which
scripts/ uses too; integration fixtures that start real local services live next to their
tests or in tests/integration/conftest.py; everything binds 127.0.0.1 or a test network
namespace."""

import os
from typing import Optional, Sequence

import pytest
from lab.netns import Lab
from lab.tools import require_tool

pytest_plugins = ["tests.mirror_world"]


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


def require_root() -> None:
    """Network namespaces need root and iproute2. Under CI (CI=true) a host that cannot run
    them FAILS the test: a green run must never hide that the e2e tests did not run."""
    require_tool("ip")  # fails (never skips) when scripts/setup-dev did not install it
    if os.geteuid() != 0:
        message = "network-namespace tests need root (scripts/test runs them as root)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI=true, so this is a failure, not a skip")
        pytest.skip(message)


@pytest.fixture
def netns_lab(request, tmp_path):
    """Factory: netns_lab(test_id, names, subnet=0) -> a set-up lab.netns.Lab, torn down at
    test end."""
    require_root()
    labs = []  # type: List[Lab]

    def make(test: str, names: Sequence[str], subnet: int = 0,
             interface: Optional[str] = None) -> Lab:
        lab = Lab(test, names, tmp_path / test, subnet, interface or "eth0")
        labs.append(lab)
        lab.setup()
        return lab

    def finish() -> None:
        for lab in labs:
            lab.teardown()

    request.addfinalizer(finish)
    return make
