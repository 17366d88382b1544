"""The network-namespace harness itself: hosts reach each other, the main namespace never sees
the test addresses, and teardown / cleanup_stale leave no namespace and no process behind."""

import os
import subprocess
import sys

import pytest
from lab import netns

from tests.conftest import require_root

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_lab_connects_hosts_and_cleans_up(tmp_path):
    require_root()
    with netns.Lab("nstest", ["a", "b"], tmp_path, subnet=7) as lab:
        a, b = lab["a"], lab["b"]
        assert (a.address, b.address) == ("10.213.7.11", "10.213.7.12")
        assert a.addresses() == ["10.213.7.11"]
        b.start("http", [sys.executable, "-m", "http.server", "--bind", b.address, "8080"])
        a.start("http", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8080"])
        for url in ("http://{}:8080/".format(b.address), "http://127.0.0.1:8080/"):  # lo is up
            fetch = ["curl", "--silent", "--fail", "--noproxy", "*", "--max-time", "2",
                     "--retry", "20", "--retry-connrefused", "--retry-delay", "0", url]
            a.run(fetch, timeout=60)
        assert b.run(["curl", "--silent", "--max-time", "1", "http://127.0.0.1:8080/"],
                     check=False).returncode != 0  # b's lo is b's own
        main = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        assert "10.213.7." not in main
        sleeper = b.start("sleep", ["sleep", "300"])
        # A grandchild in its own session survives a process-group kill; teardown finds it
        # through `ip netns pids`.
        b.run(["sh", "-c", "setsid sleep 301 >/dev/null 2>&1 &"])
        namespaces = set(lab.created)
    assert not namespaces & set(netns.namespaces())
    assert not _alive(sleeper.pid) or sleeper.poll() is not None
    assert "sleep 301" not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                             text=True).stdout


def test_cleanup_stale_removes_a_killed_runs_leftovers():
    require_root()
    netns.ip("netns", "add", "kc-nsstale-1")
    netns.ip("netns", "add", "kc-nsstale-br")
    assert sorted(netns.cleanup_stale("nsstale")) == ["kc-nsstale-1", "kc-nsstale-br"]
    assert not [ns for ns in netns.namespaces() if ns.startswith("kc-nsstale-")]
