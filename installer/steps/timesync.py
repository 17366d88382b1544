"""Time: chrony configured after the local repo installed it (a host without chrony works),
and preflight's view of the clock as chronyd reports it.

With `ntp_servers` in cluster.yaml every node uses them. Without, as offline sites do, the
first control-plane node serves time to the nodes' subnet from its own clock (`local stratum
10`, `allow <subnet>`) and every other node uses it, so that the nodes agree with each other,
which is what certificates and etcd need.
"""

import ipaddress
import re
from functools import partial
from typing import List, Optional, Tuple

from installer import owned
from installer.format.cluster import Node
from installer.render import render
from installer.steps import Action, ActionStep, Context
from installer.steps.findings import FAIL, PASS, WARN, Finding

CHRONY_CONF = "/etc/chrony.conf"
LOCAL_STRATUM = 10
# etcd warns "prober found high clock drift" once a peer's clock differs by more than one
# second (etcd server/etcdserver/api/rafthttp/probing_status.go, monitorProbingStatus);
# refuse a node already that far off. Above WARN_OFFSET_S, say so.
FAIL_OFFSET_S = 1.0
WARN_OFFSET_S = 0.1


def time_server(ctx: Context) -> Optional[Node]:
    """The first control-plane node when it serves time (no ntp_servers), else None."""
    if ctx.cluster.ntp_servers:
        return None
    return next(n for n in ctx.cluster.nodes if n.is_control_plane)


def node_subnet(ctx: Context) -> str:
    """The subnet of the nodes, as the load balancer's prefix_length says (default /24)."""
    first = next(n for n in ctx.cluster.nodes if n.is_control_plane)
    prefix = getattr(ctx.cluster.load_balancer, "prefix_length", None) or 24
    return str(ipaddress.ip_interface("{}/{}".format(first.address, prefix)).network)


def chrony_conf(ctx: Context) -> str:
    serving = time_server(ctx)
    if serving is None:
        servers, allow = list(ctx.cluster.ntp_servers), []
    elif serving.name == ctx.node.name:
        servers, allow = [], [node_subnet(ctx)]
    else:
        servers, allow = [serving.address], []
    return render("chrony.conf.j2", cluster_name=ctx.cluster.name, servers=servers,
                  allow=allow, local_stratum=LOCAL_STRATUM if allow else None,
                  serving=serving)


class TimeStep(ActionStep):
    name = "time"
    title = "Configure chrony (cluster.yaml's NTP servers, or the first control plane's clock)"

    def actions(self, ctx: Context) -> List[Action]:
        content = chrony_conf(ctx)
        found: List[Action] = []
        if ctx.host.needs_write(CHRONY_CONF, content.encode("utf-8")) is not None:
            def write_and_restart() -> None:
                ctx.host.write(CHRONY_CONF, content)
                was = ctx.runner.query(["systemctl", "is-active", "chronyd"]).stdout.strip()
                ctx.runner.run(["systemctl", "restart", "chronyd"])
                if was != "active":
                    owned.note_unit(ctx.host, self.name, "chronyd", "started")

            found.append(Action("write {} and restart chronyd".format(CHRONY_CONF),
                                write_and_restart))
        if ctx.runner.query(["systemctl", "is-enabled", "chronyd"]).stdout.strip() != "enabled":
            found.append(Action("enable chronyd", partial(
                owned.systemctl, ctx.host, ctx.runner, self.name, "enable", "chronyd")))
        return found


def parse_tracking(text: str) -> Tuple[Optional[float], str]:
    """(offset of the system clock from NTP time in seconds, leap status) from `chronyc
    tracking` (chronyc(1), "tracking": `System time : 0.000001501 seconds slow of NTP
    time`, `Leap status : Normal` | `Insert second` | `Delete second` | `Not synchronised`).
    The offset is None when the output has no System time line."""
    offset = None
    found = re.search(r"^System time\s*:\s*([0-9.]+) seconds (slow|fast) of NTP time", text,
                      re.M)
    if found:
        offset = float(found.group(1)) * (-1 if found.group(2) == "slow" else 1)
    leap = re.search(r"^Leap status\s*:\s*(.+?)\s*$", text, re.M)
    return offset, leap.group(1) if leap else ""


def check_time_sync(ctx: Context) -> Finding:
    """The clock as chronyd sees it now: synchronised, and within FAIL_OFFSET_S of NTP time."""
    serving = time_server(ctx)
    plan = ("chrony will use " + ", ".join(ctx.cluster.ntp_servers) if serving is None else
            "{} serves time to the other nodes (no ntp_servers in cluster.yaml)".format(
                serving.name))
    result = ctx.runner.query(["chronyc", "tracking"])
    if result.returncode == 127:
        return Finding(WARN, "time", "chronyc is not installed: cannot check the clock; {}"
                       .format(plan), "the bundle's chrony package installs it")
    offset, leap = parse_tracking(result.stdout)
    if result.returncode != 0 or offset is None:
        detail = (result.stdout + result.stderr).strip().splitlines()
        return Finding(WARN, "time", "chronyd does not answer ({}); {}".format(
            detail[-1] if detail else "exit {}".format(result.returncode), plan),
            "host prep configures and restarts chronyd")
    if abs(offset) > FAIL_OFFSET_S:
        return Finding(FAIL, "time", "the clock is {:.3f} s {} of NTP time (more than {} s; "
                       "etcd and certificates need the nodes' clocks to agree)".format(
                           abs(offset), "slow" if offset < 0 else "fast", FAIL_OFFSET_S),
                       "step it now: `chronyc makestep` once chrony has a source, or set it "
                       "with `date -s`")
    if leap == "Not synchronised" and serving != ctx.node.name:
        return Finding(WARN, "time", "chronyd is not synchronised (offset {:+.3f} s); {}"
                       .format(offset, plan), "check `chronyc sources` after install")
    level = WARN if abs(offset) > WARN_OFFSET_S else PASS
    return Finding(level, "time", "clock offset {:+.3f} s ({}); {}".format(
        offset, leap or "leap status unknown", plan),
        "check `chronyc sources`" if level == WARN else "")
