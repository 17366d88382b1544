"""Private container runtimes for the integration tests and the benchmarks: Docker 20.10 (Debian
`docker.io`) and containerd 1.6 (Debian `containerd`), each with its own root, state and socket
under a short /tmp folder, never the host's, and stopped and removed after the session.

    with private_dockerd() as d: ...  # or, in a test, the fixtures of
                                      # tests/integration/conftest.py:
    def test_x(dockerd, containerd):
        dockerd.run("load", "-i", archive)
        containerd.ctr("images", "import", archive)

No systemd here: the daemons are started directly, with every wait bounded. Docker runs with
vfs storage and no bridge or iptables, so it touches neither the host's network nor its mounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Type, TypeVar

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
COMMAND_TIMEOUT = 300
# Debian's docker.io client; /usr/local/bin may hold a newer one that would hide 20.10's view.
DOCKER_CLIENT = "/usr/bin/docker"


class DaemonError(RuntimeError):
    """A daemon did not start, or a client command failed; the message has the log tail."""


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise DaemonError(f"{name} is not installed: run scripts/setup-dev")
    return path


@dataclass
class Daemon:
    name: str
    folder: Path
    socket: Path
    process: subprocess.Popen
    log: Path
    client: List[str]  # argv prefix that talks to this daemon

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run the client with `args`; on failure the message carries the daemon's log tail."""
        argv = [*self.client, *map(str, args)]
        kw.setdefault("capture_output", True)
        kw.setdefault("timeout", COMMAND_TIMEOUT)
        done = subprocess.run(argv, **kw)
        if check and done.returncode != 0:
            err = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) \
                else done.stderr
            raise DaemonError(f"{argv} failed ({done.returncode}): {err}\n"
                              f"{self.name} log:\n{self.log_tail()}")
        return done

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _wait_socket(daemon: Daemon, probe: List[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise DaemonError(f"{daemon.name} exited ({daemon.process.returncode}) at start:\n"
                        f"{daemon.log_tail()}")
        if daemon.socket.exists():
            done = subprocess.run(probe, capture_output=True, timeout=10)
            if done.returncode == 0:
                return
        time.sleep(0.2)
    raise DaemonError(f"{daemon.name} did not answer on {daemon.socket} within "
                      f"{START_TIMEOUT:.0f} s:\n{daemon.log_tail()}")


def _stop(daemon: Daemon) -> None:
    process = daemon.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _cleanup(folder: Path) -> None:
    # containerd's overlayfs snapshotter may leave a mount behind if a test died mid-unpack.
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        mounts = []
    for line in reversed(mounts):
        target = line.split()[1]
        if target.startswith(str(folder) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


D = TypeVar("D", bound=Daemon)


@contextlib.contextmanager
def _running(kind: Type[D], name: str, folder: Path, socket: Path, argv: List[str],
             client: List[str]) -> Iterator[D]:
    """Run the daemon `argv` (its output in FOLDER/NAME.log) until `CLIENT version` answers
    on `socket`; stop it and remove `folder` on exit."""
    log = folder / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    daemon = kind(name, folder, socket, process, log, client)
    try:
        _wait_socket(daemon, [*client, "version"])
        yield daemon
    finally:
        _stop(daemon)
        _cleanup(folder)


@contextlib.contextmanager
def private_dockerd() -> Iterator[Daemon]:
    """Start a private Docker 20.10 daemon; stop it and remove its folder on exit."""
    binary = _tool("dockerd")
    if not os.path.exists(DOCKER_CLIENT):
        raise DaemonError(f"{DOCKER_CLIENT} (Debian docker.io) is missing: run scripts/setup-dev")
    folder = Path(tempfile.mkdtemp(prefix="kc-dockerd-", dir="/tmp"))
    socket = folder / "docker.sock"
    config = folder / "daemon.json"
    config.write_text("{}\n")  # never the host's /etc/docker/daemon.json
    argv = [binary, "--config-file", str(config), "--storage-driver=vfs", "--iptables=false",
            "--ip6tables=false", "--bridge=none", "--data-root", str(folder / "data"),
            "--exec-root", str(folder / "exec"), "-H", f"unix://{socket}",
            "--pidfile", str(folder / "docker.pid")]
    client = [DOCKER_CLIENT, "-H", f"unix://{socket}"]
    with _running(Daemon, "dockerd", folder, socket, argv, client) as daemon:
        yield daemon


CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
# Nothing here needs the CRI plugin or these snapshotters, and they cannot start in a test box.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"""


@dataclass
class Containerd(Daemon):
    def ctr(self, *args: str, namespace: str = "k8s.io", **kw) -> subprocess.CompletedProcess:
        return self.run("-n", namespace, *args, **kw)

    def references(self, namespace: str = "k8s.io") -> List[str]:
        done = self.ctr("images", "ls", "-q", namespace=namespace, text=True)
        return sorted(done.stdout.split())


@contextlib.contextmanager
def private_containerd(host_config: Optional[Path] = None) -> Iterator[Containerd]:
    """Start a private containerd 1.6; stop it and remove its folder on exit. With
    `host_config` (a config.toml the installer wrote, CRI plugin and all) it runs on that file,
    only its root, state and socket moved into the private folder by containerd's own
    --root/--state/--address flags."""
    binary = _tool("containerd")
    ctr = _tool("ctr")
    folder = Path(tempfile.mkdtemp(prefix="kc-ctrd-", dir="/tmp"))
    socket = folder / "containerd.sock"
    config = folder / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(root=folder / "root", state=folder / "state",
                                               socket=socket))
    argv = [binary, "--config", str(config)]
    if host_config is not None:
        argv = [binary, "--config", str(host_config), "--root", str(folder / "root"),
                "--state", str(folder / "state"), "--address", str(socket)]
    client = [ctr, "-a", str(socket)]
    with _running(Containerd, "containerd", folder, socket, argv, client) as daemon:
        yield daemon


def docker_images(daemon: Daemon) -> dict:
    """{reference as docker prints it: image ID} for every tagged image in `daemon`."""
    done = daemon.run("images", "--no-trunc", "--format", "{{json .}}", text=True)
    out = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        if row["Tag"] != "<none>":
            out[f"{row['Repository']}:{row['Tag']}"] = row["ID"]
    return out
