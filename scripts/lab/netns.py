"""Network-namespace hosts for the e2e tests, scripts/demo and the benchmarks: N hosts
`kc-<test>-<n>`, each with `lo` up and an interface (default `eth0`) on a bridge that lives in
its own namespace `kc-<test>-br`, addresses 10.213.<k>.<10+n>/24.

Nothing touches the machine's main namespace: the veth pairs are created inside the bridge
namespace and their host ends moved straight into the host namespaces, so the test addresses
and routes exist only there. Every process a host starts is tracked, and teardown (also run by
the finalizer of tests/conftest.py's `netns_lab` fixture) kills them and every other pid left
in the namespaces, then deletes the namespaces, which deletes their links. cleanup_stale()
removes what a killed run left behind. All waits are bounded.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import List, Sequence

PREFIX = "kc-"
IP_TIMEOUT = 10.0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip ARGS` (bounded); raise with its stderr on failure when `check`."""
    proc = subprocess.run(["ip"] + list(args), capture_output=True, text=True,
                          timeout=IP_TIMEOUT)
    if check and proc.returncode != 0:
        raise RuntimeError("ip {} failed: {}".format(" ".join(args), proc.stderr.strip()))
    return proc


def namespaces() -> List[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace_pids(ns: str) -> None:
    for _ in range(20):
        pids = [int(p) for p in ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def delete_namespace(ns: str) -> None:
    """Kill every process inside `ns`, then delete it (and with it its links)."""
    _kill_namespace_pids(ns)
    ip("netns", "delete", ns, check=False)


def cleanup_stale(test: str) -> List[str]:
    """Delete leftovers of a killed run of `test` (namespaces `kc-<test>-*`); returns them."""
    prefix = "{}{}-".format(PREFIX, test)
    stale = [ns for ns in namespaces() if ns.startswith(prefix)]
    for ns in stale:
        delete_namespace(ns)
    return stale


class Host:
    """One namespace: its address, a folder for its configs and pid files, its processes."""

    def __init__(self, lab: "Lab", index: int, name: str) -> None:
        self.lab = lab
        self.index = index
        self.name = name
        self.ns = "{}{}-{}".format(PREFIX, lab.test, index)
        self.address = "10.213.{}.{}".format(lab.subnet, 10 + index)
        self.interface = lab.interface
        self.dir = lab.base / name
        self.procs = {}  # type: dict

    def argv(self, argv: Sequence[object]) -> List[str]:
        return ["ip", "netns", "exec", self.ns] + [str(a) for a in argv]

    def run(self, argv: Sequence[object], timeout: float = 30.0,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace and wait for it (bounded)."""
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError("{} on {}: exit {}\n{}{}".format(
                " ".join(map(str, argv)), self.name, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def start(self, key: str, argv: Sequence[object]) -> subprocess.Popen:
        """Start a long-running process (own session, output in <dir>/<key>.log)."""
        self.stop(key)
        log = open(str(self.dir / (key + ".log")), "ab")
        try:
            proc = subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.procs[key] = proc
        return proc

    def stop(self, key: str, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Signal the process group started as `key` and wait for it (bounded)."""
        proc = self.procs.pop(key, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=timeout)

    def log(self, key: str) -> str:
        path = self.dir / (key + ".log")
        return path.read_text(errors="replace") if path.exists() else ""

    def addresses(self) -> List[str]:
        out = self.run(["ip", "-o", "-4", "addr", "show", "dev", self.interface]).stdout
        return re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)

    def link(self, up: bool) -> None:
        ip("-n", self.ns, "link", "set", self.interface, "up" if up else "down")


class Lab:
    """N hosts on one bridge. Use as a context manager, or through the netns_lab fixture
    (tests/conftest.py)."""

    def __init__(self, test: str, names: Sequence[str], base: Path, subnet: int = 0,
                 interface: str = "eth0") -> None:
        if not re.match(r"^[a-z0-9]{1,12}$", test):
            raise ValueError("test id must be 1-12 of [a-z0-9]: {!r}".format(test))
        self.test = test
        self.base = Path(base)
        self.subnet = subnet
        self.interface = interface
        self.bridge_ns = "{}{}-br".format(PREFIX, test)
        self.hosts = [Host(self, i + 1, name) for i, name in enumerate(names)]
        self.created = []  # type: List[str]

    def __getitem__(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def setup(self) -> "Lab":
        cleanup_stale(self.test)
        self._add_ns(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for host in self.hosts:
            host.dir.mkdir(parents=True, exist_ok=True)
            self._add_ns(host.ns)
            port = "h{}".format(host.index)
            ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name",
               host.interface, "netns", host.ns)
            ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", port, "up")
            ip("-n", host.ns, "addr", "add", host.address + "/24", "dev", host.interface)
            ip("-n", host.ns, "link", "set", host.interface, "up")
        return self

    def _add_ns(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.created.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def teardown(self) -> None:
        """Stop every process and delete every namespace this lab created (idempotent)."""
        for host in self.hosts:
            for key in list(host.procs):
                host.stop(key)
        for ns in reversed(self.created):
            delete_namespace(ns)
        self.created = []
        cleanup_stale(self.test)

    def __enter__(self) -> "Lab":
        try:
            return self.setup()
        except BaseException:
            self.teardown()
            raise

    def __exit__(self, *exc: object) -> None:
        self.teardown()
