"""The apiserver VIP on three network-namespace control-plane hosts running the real keepalived
and haproxy with the rendered configs, in front of a minimal HTTPS /healthz apiserver; a fourth
namespace is the client. keepalived is Debian's 2.2.7, so the configs speak VRRPv3 with 0.2 s
adverts (lbconfig.VRRP_V3, what keepalived >= 1.3.7 gets). Measures how long
https://VIP:8443/version is unreachable while every apiserver's /healthz is slow (a busy etcd),
when the VIP holder's keepalived stops, when an apiserver dies, when the first node comes back,
when the holder is killed and when its link goes down.
"""

import time

import pytest
from lab import lbsamples
from lab.tools import require_tool
from lab.viplab import (
    VIP_WAIT,
    Poller,
    certificate,
    holders,
    logs,
    settle,
    start_apiserver,
    start_keepalived,
    start_load_balancer,
    wait,
)

from installer import lbconfig

pytestmark = pytest.mark.e2e

WINDOW_BOUND = 10.0  # any scenario without a goal of its own
# VRRPv3 at 0.2 s adverts: a backup waits 0.65 s after the last advert. Measured here: a killed
# holder 0.6-0.8 s, a lost link 0.6-1.6 s (a poll to the lost host fails only after its 0.5 s
# timeout, so that window moves in 0.5 s steps). The bounds leave room for a loaded machine and
# still fail VRRPv2 at 1 s adverts (2.8-3.3 s); the goals (1 s killed, 1.5 s link down) are
# measured by scripts/bench (docs/benchmarks.md).
KILLED_BOUND = 1.5
LINK_DOWN_BOUND = 2.5
STALL = 1.9  # seconds a busy etcd's check may hold /healthz (its timeout is 2 s)


def test_vip_failover(netns_lab, capsys):
    for tool in ("keepalived", "haproxy", "curl", "openssl", "ip"):
        require_tool(tool)
    lab = netns_lab("vip", ["cp1", "cp2", "cp3", "client"])
    lb = lbsamples.load_balancer()
    assert [h.address for h in lab.hosts[:3]] == [p.address for p in lb.peers]
    cert, key = certificate(lab.base)
    cps, client = lab.hosts[:3], lab["client"]
    for host in cps:
        start_apiserver(host, cert, key)
    for host in cps:
        start_load_balancer(host, lb)
    settle(lab, ["cp1"])  # the first node holds the VIP first, and alone
    url = "https://{}:{}/version".format(lbsamples.VIP, lb.port)
    curl = client.run(["curl", "--silent", "--fail", "--insecure", "--max-time", "5", url])
    assert curl.stdout == "ok"

    poller = Poller(client, url, 140)
    wait(lambda: poller.ok_since(0), 10, "the client's first successful polls")
    report = {}

    # (0) every apiserver is busy: /healthz takes 1.9 s (etcd's check). Neither keepalived's
    # check script nor haproxy's checks may call that a failure: no VIP move, no failed poll.
    start = time.monotonic()
    (lab.base / "stall").write_text(str(STALL))
    moves = []
    while time.monotonic() - start < 9.0:
        if holders(lab) != ["cp1"]:
            moves.append(holders(lab))
        time.sleep(0.2)
    (lab.base / "stall").unlink()
    assert not moves, "the VIP moved while the apiservers were slow: {}{}".format(
        moves, logs(lab))
    report["every /healthz slow ({} s)".format(STALL)] = (0.0, poller.outage(start))
    assert report["every /healthz slow ({} s)".format(STALL)][1] == 0.0, logs(lab)
    time.sleep(2 * lbconfig.CHECK.interval)  # the last slow checks finish

    # (1) the VIP holder's keepalived stops: cp2 (next priority) takes the VIP.
    start = time.monotonic()
    cps[0].stop("keepalived", sig=15)
    moved = wait(lambda: holders(lab) == ["cp2"], VIP_WAIT, "the VIP to move to cp2",
                  lab=lab, since=start)
    wait(lambda: poller.ok_since(start + moved), 15, "the endpoint after keepalived stopped")
    report["keepalived stopped on cp1"] = (moved, poller.outage(start))

    settle(lab, ["cp2"])

    # (2) the new holder's apiserver dies: its check script fails within 3 s, its priority
    # drops below cp3's, and cp3 takes the VIP.
    start = time.monotonic()
    cps[1].stop("apiserver")
    moved = wait(lambda: holders(lab) == ["cp3"], VIP_WAIT, "the VIP to move to cp3",
                  lab=lab, since=start)
    wait(lambda: poller.ok_since(start + moved), 15, "the endpoint after cp2's apiserver died")
    report["apiserver killed on cp2"] = (moved, poller.outage(start))

    settle(lab, ["cp3"])

    # (3) cp1's keepalived comes back: with the highest priority and a healthy apiserver it
    # takes the VIP back, without breaking the endpoint for long.
    start = time.monotonic()
    start_keepalived(cps[0])
    moved = wait(lambda: holders(lab) == ["cp1"], VIP_WAIT, "cp1 to take the VIP back",
                  lab=lab, since=start)
    wait(lambda: poller.ok_since(start + moved), 15, "the endpoint after cp1 came back")
    report["keepalived restarted on cp1"] = (moved, poller.outage(start))

    # (4) everything on the holder dies at once (SIGKILL keepalived, haproxy, apiserver): the
    # VIP stays configured on cp1's dead stack, but cp2 (healthy again) stops hearing adverts
    # and takes over.
    start_apiserver(cps[1], cert, key)
    settle(lab, ["cp1"], hold=3.0)  # also lets cp2's check rise again (rise 2, interval 1)
    start = time.monotonic()
    for key in ("keepalived", "haproxy", "apiserver"):
        cps[0].stop(key)
    moved = wait(lambda: lbsamples.VIP in cps[1].addresses(), VIP_WAIT, "cp2 to take the VIP",
                  lab=lab, since=start)
    wait(lambda: poller.ok_since(start + moved), 15, "the endpoint after cp1 was killed")
    report["cp1 killed (keepalived, haproxy, apiserver)"] = (moved, poller.outage(start))

    settle(lab, ["cp1", "cp2"])  # cp1's dead stack keeps its copy of the VIP

    # (5) the holder's link goes down: cp3 takes over from cp2.
    start = time.monotonic()
    cps[1].link(up=False)
    moved = wait(lambda: lbsamples.VIP in cps[2].addresses(), VIP_WAIT, "cp3 to take the VIP",
                  lab=lab, since=start)
    wait(lambda: poller.ok_since(start + moved), 15, "the endpoint after cp2's link went down")
    report["cp2 link down"] = (moved, poller.outage(start))

    with capsys.disabled():
        for what, (moved, window) in report.items():
            print("\n[vip failover] {}: VIP moved in {:.1f}s, endpoint unreachable for {:.2f}s"
                  .format(what, moved, window))
    bounds = {"cp1 killed (keepalived, haproxy, apiserver)": KILLED_BOUND,
              "cp2 link down": LINK_DOWN_BOUND}
    for what, (_, window) in report.items():
        bound = bounds.get(what, WINDOW_BOUND)
        assert window < bound, "{}: endpoint unreachable for {:.2f}s (bound {}s)".format(
            what, window, bound)
