"""The VIP lab restarts keepalived after a SIGKILL of its group: pid files naming a zombie (the
VRRP child not yet reaped) must not stop it, or the restarted node never holds the VIP again
(seen in scripts/bench's failover drills at a load of 20: "daemon is already running")."""

import os
import subprocess
import time

from lab import viplab


class _Host:
    def __init__(self, folder):
        self.dir = folder
        self.pid_files_at_start = None

    def start(self, key, argv):
        self.pid_files_at_start = sorted(p.name for p in self.dir.glob("*.pid"))


def _zombie():
    child = subprocess.Popen(["true"])
    for _ in range(100):  # exited but not reaped: state Z
        with open("/proc/{}/stat".format(child.pid)) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return child
        time.sleep(0.05)
    raise AssertionError("the child never became a zombie")


def test_a_restart_removes_pid_files_of_dead_and_zombie_processes_only(tmp_path):
    child = _zombie()
    try:
        (tmp_path / "vrrp.pid").write_text("{}\n".format(child.pid))
        (tmp_path / "checkers.pid").write_text("not a pid\n")
        (tmp_path / "keepalived.pid").write_text("{}\n".format(os.getpid()))  # alive: kept
        host = _Host(tmp_path)
        viplab.start_keepalived(host)
        assert host.pid_files_at_start == ["keepalived.pid"]
    finally:
        child.wait()
