"""The apiserver VIP on network-namespace control planes that run the real keepalived and
haproxy with the rendered configs, in front of scripts/lab/healthz_server.py: what
tests/e2e/test_vip_failover.py and the failover and flapping benchmarks (scripts/benchmarks/)
start, and how they read the VIP holder and a client's polls.
"""

import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from installer import lbconfig
from lab import lbsamples

HERE = Path(__file__).parent
POLL_INTERVAL = 0.1
VIP_WAIT = 20.0


def wait(predicate, timeout: float, what: str, step: float = 0.1, lab=None,
         since: float = 0.0) -> float:
    """Poll `predicate` until true (bounded); returns the seconds since `since` (default: the
    call)."""
    started = time.monotonic()
    since = since or started
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - since
        time.sleep(step)
    raise AssertionError("timed out after {:.0f}s waiting for {}{}".format(
        timeout, what, logs(lab) if lab else ""))


def logs(lab) -> str:
    text = ""
    for host in lab.hosts[:3]:
        for key in ("keepalived", "haproxy"):
            tail = "\n".join(host.log(key).splitlines()[-25:])
            text += "\n--- {} {} (last lines)\n{}".format(host.name, key, tail)
    return text


def holders(lab):
    return [h.name for h in lab.hosts[:3] if lbsamples.VIP in h.addresses()]


def settle(lab, expected, hold: float = 2.0) -> None:
    """Wait (bounded) until `expected` alone has held the VIP for `hold` seconds, so that a
    scenario starts from a stable state rather than a passing two-master moment."""
    since: List[Optional[float]] = [None]

    def stable() -> bool:
        if holders(lab) != expected:
            since[0] = None
            return False
        started = since[0] = since[0] or time.monotonic()
        return time.monotonic() - started >= hold

    wait(stable, VIP_WAIT, "{} to hold the VIP steadily".format(expected), lab=lab)


def certificate(folder: Path):
    cert, key = folder / "apiserver.crt", folder / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=kube-apiserver", "-keyout", str(key), "-out", str(cert)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


def start_apiserver(host, cert, key):
    host.start("apiserver", [sys.executable, HERE / "healthz_server.py", host.address, "6443",
                             cert, key, host.lab.base / "stall"])


PID_FILES = ("keepalived.pid", "vrrp.pid", "checkers.pid")


def _gone(pid: int) -> bool:
    """True when `pid` is no process, or one that has exited but is not yet reaped."""
    try:
        with open("/proc/{}/stat".format(pid)) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove_stale_pid_files(folder: Path) -> List[str]:
    """Remove the pid files in `folder` that name a dead or zombie process; returns their names.
    keepalived refuses to start ("daemon is already running") while a pid file names a process
    that kill(pid, 0) finds, and a zombie is found (keepalived/core/pidfile.c, process_running):
    after a SIGKILL of the whole group, the VRRP child is a zombie until init reaps it, which
    on a loaded machine can outlast the restart."""
    removed = []
    for name in PID_FILES:
        path = folder / name
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if not text.isdigit() or _gone(int(text)):
            path.unlink()
            removed.append(name)
    return removed


def start_keepalived(host):
    d = host.dir
    remove_stale_pid_files(d)
    host.start("keepalived", ["keepalived", "--dont-fork", "--log-console", "--log-detail",
                              "--vrrp", "--use-file", d / "keepalived.conf",
                              "--pid", d / "keepalived.pid", "--vrrp_pid", d / "vrrp.pid",
                              "--checkers_pid", d / "checkers.pid"])


def start_load_balancer(host, lb, vrrp=lbconfig.VRRP_V3):
    conf = lbconfig.keepalived_conf(lb, host.name, check_script=str(host.dir / "check.sh"),
                                    vrrp=vrrp)
    (host.dir / "keepalived.conf").write_text(conf)
    script = host.dir / "check.sh"
    script.write_text(lbconfig.check_script(lb, host.name))
    script.chmod(0o755)
    (host.dir / "haproxy.cfg").write_text(lbconfig.haproxy_cfg(lb))
    host.run(["haproxy", "-c", "-f", host.dir / "haproxy.cfg"])
    host.start("haproxy", ["haproxy", "-db", "-f", host.dir / "haproxy.cfg"])
    start_keepalived(host)


class Poller:
    """The client's poll of https://VIP:PORT/healthz every 100 ms, read back as outage windows."""

    def __init__(self, client, url: str, duration: float, overlap: bool = False) -> None:
        self.client = client
        client.start("poller", [sys.executable, HERE / "poller.py", url, POLL_INTERVAL,
                                duration] + (["overlap"] if overlap else []))

    def polls(self):
        """(start, ok, end) of every poll that finished, in the order they finished."""
        out = []
        for line in self.client.log("poller").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in ("0", "1"):
                out.append((float(parts[0]), parts[1] == "1", float(parts[2])))
        return out

    def samples(self):
        """(start, ok) of every finished poll, by start."""
        return sorted((start, ok) for start, ok, _end in self.polls())

    def ok_since(self, moment: float, count: int = 5) -> bool:
        recent = [ok for t, ok in self.samples() if t >= moment]
        return len(recent) >= count and all(recent[-count:])

    def outage(self, since: float) -> float:
        """Longest stretch after `since` from the last success before a failure to the next
        success (0 when no poll failed)."""
        worst, last_ok, failing = 0.0, None, False
        for moment, ok in self.samples():
            if moment < since:
                last_ok = moment if ok else last_ok
                continue
            if ok:
                if failing and last_ok is not None:
                    worst = max(worst, moment - last_ok)
                last_ok, failing = moment, False
            else:
                failing = True
        if failing:
            raise AssertionError("the endpoint never came back after {:.1f}s".format(since))
        return worst

    def unanswered(self, since: float) -> float:
        """For an `overlap` poller: the longest time without an answer around `since` and
        after it, from one answer's arrival to the next one's (about POLL_INTERVAL when
        nothing went wrong). A poll that hangs does not count, whether it then fails or is
        answered by a retransmitted SYN: what counts is when answers arrived."""
        return unanswered(self.polls(), since)


def unanswered(polls, since: float) -> float:
    """See Poller.unanswered; `polls` are (start, ok, end)."""
    answers = sorted(end for _start, ok, end in polls if ok)
    if not answers or answers[-1] <= since:
        raise AssertionError("the endpoint never answered after {:.1f}s".format(since))
    return max(later - earlier for earlier, later in zip(answers, answers[1:])
               if later > since)
