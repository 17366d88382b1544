"""The session-scoped `mirror_world` fixture (registered in tests/conftest.py).

It reuses a running world when `KUBECRATE_MW_STATE` points at one (start it once with
`scripts/mirror-world up` and `eval "$(scripts/mirror-world env)"` to keep test runs fast), or
when the default run folder already holds a running world; otherwise it runs
`scripts/mirror-world up` before the session and `down` after it.

    def test_something(mirror_world):
        preset = load_preset(mirror_world.preset)
        requests.get(mirror_world.url("dl.k8s.io/release/v1.23.17/bin/linux/amd64/kubeadm"))
        mirror_world.registries["registry.k8s.io"]       # http://127.0.0.1:PORT
        mirror_world.state["registry"]["instances"]["auth"]["ca"]
"""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from mirrorworld import world

REPO = Path(__file__).resolve().parents[1]
UP_TIMEOUT = 900  # a cold start builds RPMs and images; warm starts take seconds


@dataclass(frozen=True)
class MirrorWorld:
    state_path: Path
    state: Dict[str, Any]

    @property
    def base_url(self) -> str:
        """nginx serving www/: vault.centos.org/..., download.docker.com/..., dl.k8s.io/..."""
        return self.state["nginx"]["url"]

    @property
    def www(self) -> Path:
        return Path(self.state["www"])

    @property
    def registries(self) -> Dict[str, str]:
        """Registry URL by instance: registry.k8s.io, docker.io, aliyun, auth, token."""
        return {name: e["url"] for name, e in self.state["registry"]["instances"].items()}

    @property
    def preset(self) -> Path:
        """The world's mirror preset: canonical registry paths, test GPG fingerprints."""
        return Path(self.state["presets"]["default"])

    @property
    def preset_aliyun(self) -> Path:
        """The same, with registry.k8s.io pulled from the google_containers namespace."""
        return Path(self.state["presets"]["aliyun"])

    @property
    def preset_el8(self) -> Path:
        """The EL8/EL9 slice: CentOS 8.5 baseos/appstream (modular), Stream 9 c9s-baseos."""
        return Path(self.state["presets"]["el8"])

    @property
    def preset_el9(self) -> Path:
        """Rocky 9.4 baseos/appstream, docker-ce centos/9, pkgs.k8s.io v1.30 (kubernetes)."""
        return Path(self.state["presets"]["el9"])

    @property
    def preset_aliyun_el9(self) -> Path:
        """The EL9 repos with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-el9"])

    @property
    def preset_el9_131(self) -> Path:
        """Rocky 9.4 baseos/appstream, docker-ce centos/9, pkgs.k8s.io v1.31 (kubernetes)."""
        return Path(self.state["presets"]["el9-1.31"])

    @property
    def preset_aliyun_el9_131(self) -> Path:
        """The same with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-el9-1.31"])

    @property
    def preset_el9_132(self) -> Path:
        """Rocky 9.4 baseos/appstream, docker-ce centos/9, pkgs.k8s.io v1.32 (kubernetes)."""
        return Path(self.state["presets"]["el9-1.32"])

    @property
    def preset_aliyun_el9_132(self) -> Path:
        """The same with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-el9-1.32"])

    @property
    def preset_el9_133(self) -> Path:
        """Rocky 9.4 baseos/appstream, docker-ce centos/9, pkgs.k8s.io v1.33 (kubernetes)."""
        return Path(self.state["presets"]["el9-1.33"])

    @property
    def preset_aliyun_el9_133(self) -> Path:
        """The same with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-el9-1.33"])

    @property
    def preset_el9_aarch64(self) -> Path:
        """Rocky 9.4 and docker-ce centos/9 aarch64 trees, pkgs.k8s.io v1.30 (multi-arch)."""
        return Path(self.state["presets"]["el9-aarch64"])

    @property
    def preset_aliyun_el9_aarch64(self) -> Path:
        """The same with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-el9-aarch64"])

    @property
    def preset_rocky8(self) -> Path:
        """Rocky 8.9 baseos/appstream (modular), docker-ce centos/8, pkgs.k8s.io v1.30."""
        return Path(self.state["presets"]["rocky8"])

    @property
    def preset_aliyun_rocky8(self) -> Path:
        """The Rocky 8 repos with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-rocky8"])

    @property
    def preset_aliyun_el8(self) -> Path:
        """The EL8 slice with the Aliyun-shaped registry and DaoCloud-shaped binaries."""
        return Path(self.state["presets"]["aliyun-el8"])

    @property
    def access_log(self) -> Path:
        """nginx's access log, for counting requests (warm builds download nothing)."""
        return Path(self.state["nginx"]["access_log"])

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


def _cli(command: str, env: Dict[str, str], timeout: int) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "mirror-world"), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/mirror-world {command} failed ({done.returncode}):\n{done.stderr}")


def _load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def _running(path: Path) -> bool:
    try:
        return world.is_running(_load(path))
    except (OSError, ValueError, KeyError):
        return False


@pytest.fixture(scope="session")
def mirror_world() -> Iterator[MirrorWorld]:
    given = os.environ.get("KUBECRATE_MW_STATE")
    if given and _running(Path(given)):
        yield MirrorWorld(Path(given), _load(Path(given)))
        return
    paths = world.Paths.from_env()
    if _running(paths.state):
        yield MirrorWorld(paths.state, _load(paths.state))  # someone else's: leave it running
        return
    proxies = ("http_", "https_", "HTTP_", "HTTPS_", "all_proxy", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(proxies)}
    _cli("up", env, UP_TIMEOUT)
    try:
        yield MirrorWorld(paths.state, _load(paths.state))
    finally:
        _cli("down", env, 120)
