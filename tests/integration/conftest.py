"""Fixtures for the integration tests: private container runtimes and test hosts, made by the
lab (scripts/lab/runtimes.py, scripts/lab/hostworld.py) once per session or per test."""

from pathlib import Path
from typing import Iterator

import pytest
from lab import hostworld
from lab.runtimes import Containerd, Daemon, DaemonError, private_containerd, private_dockerd


def _daemon(start) -> Iterator:
    """The daemon `start()` runs for the session; a daemon that does not come up FAILS the
    test with the lab's message (never a skip)."""
    try:
        with start() as daemon:
            yield daemon
    except DaemonError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Daemon]:
    """A private Docker 20.10 daemon; `dockerd.run("load", "-i", path)` talks to it."""
    yield from _daemon(private_dockerd)


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """A private containerd 1.6; `containerd.ctr("images", "import", path)` talks to it."""
    yield from _daemon(private_containerd)


@pytest.fixture(scope="session")
def host_bundle(tmp_path_factory) -> hostworld.HostBundle:
    return hostworld.build_host_bundle(tmp_path_factory.mktemp("host-bundle"))


@pytest.fixture(scope="session")
def core_root(host_bundle, tmp_path_factory) -> Path:
    """A pristine `@core` root, installed once and copied per test."""
    return hostworld.install_core(tmp_path_factory.mktemp("core") / "root", host_bundle)


@pytest.fixture(scope="session")
def installer_pyz(tmp_path_factory) -> Path:
    """The installer .pyz built from this checkout, with a throwaway key (pass --key)."""
    return hostworld.build_installer_pyz(tmp_path_factory.mktemp("installer-pyz"))


@pytest.fixture
def test_host(core_root, host_bundle, dockerd, tmp_path) -> hostworld.TestHost:
    host = hostworld.make_host(tmp_path, core_root,
                               KUBECRATE_TEST_DOCKER_HOST=f"unix://{dockerd.socket}")
    for image in dockerd.run("images", "-q", text=True).stdout.split():
        dockerd.run("rmi", "-f", image, check=False)
    return host


@pytest.fixture(scope="session")
def el_builds(mirror_world, tmp_path_factory) -> dict:
    """Every EL8/EL9 recipe built and linted once (tests/integration/elbuilds.py)."""
    from tests.integration import elbuilds

    return elbuilds.build_all(mirror_world, tmp_path_factory.mktemp("el8"))
