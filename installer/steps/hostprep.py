"""Host preparation: hostname, /etc/hosts, swap, SELinux, firewalld, kernel modules, sysctl
and chrony. Every file is written atomically with its original kept (installer/host.py)."""

import re
from functools import partial
from typing import List

from installer.host import fstab_swaps
from installer.render import render
from installer.steps import Action, ActionStep, Context
from installer.steps.preflight import required_modules

HOSTS_BEGIN = "# BEGIN kubecrate"
HOSTS_END = "# END kubecrate"
MODULES_FILE = "/etc/modules-load.d/kubecrate.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-kubecrate.conf"
SYSCTL = (("net.bridge.bridge-nf-call-iptables", "1"),
          ("net.bridge.bridge-nf-call-ip6tables", "1"),
          ("net.ipv4.ip_forward", "1"))
FLANNEL_VXLAN = "8472/udp"


def hosts_content(ctx: Context, current: str) -> str:
    """/etc/hosts with kubecrate's block (every node, and the endpoint name) replaced."""
    kept: List[str] = []
    inside = False
    for line in current.splitlines():
        if line.startswith(HOSTS_BEGIN):
            inside = True
        elif inside and line.startswith(HOSTS_END):
            inside = False
        elif not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    endpoint = ctx.cluster.endpoint
    block = render("hosts.j2", cluster_name=ctx.cluster.name, nodes=ctx.cluster.nodes,
                   endpoint_address=endpoint.vip, endpoint_name=endpoint.dns_name)
    return ("\n".join(kept) + "\n" if kept else "") + block


def fstab_content(current: str) -> str:
    lines = current.splitlines()
    for index, line in fstab_swaps(current):
        lines[index] = "#kubecrate swap off# " + line
    return "\n".join(lines) + ("\n" if lines else "")


def selinux_content(current: str) -> str:
    return re.sub(r"^SELINUX=enforcing\s*$", "SELINUX=permissive", current, flags=re.M)


def firewall_ports(ctx: Context) -> List[str]:
    if ctx.node.is_control_plane:
        ports = ["6443/tcp", "2379-2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp"]
        if ctx.cluster.lb_port:
            ports.append("{}/tcp".format(ctx.cluster.lb_port))
    else:
        ports = ["10250/tcp", "30000-32767/tcp"]
    return ports + [FLANNEL_VXLAN]


class HostPrepStep(ActionStep):
    name = "host-prep"
    title = "Prepare the host (hostname, hosts, swap, SELinux, firewall, modules, sysctl, NTP)"

    def actions(self, ctx: Context) -> List[Action]:
        host, run = ctx.host, ctx.runner
        found: List[Action] = []

        def write(path: str, content: str, then: List[List[str]] = ()) -> None:
            if host.needs_write(path, content.encode("utf-8")) is not None:
                found.append(Action("write " + path, partial(_write_then, ctx, path, content,
                                                             list(then))))

        name = ctx.node.name
        if (host.read_text("/etc/hostname") or "").strip() != name:
            write("/etc/hostname", name + "\n", [["hostnamectl", "set-hostname", name]])
        write("/etc/hosts", hosts_content(ctx, host.read_text("/etc/hosts") or ""))

        if host.probes.active_swaps():
            found.append(Action("turn swap off", partial(run.run, ["swapoff", "-a"])))
        fstab = host.read_text("/etc/fstab")
        if fstab is not None:
            write("/etc/fstab", fstab_content(fstab))

        if host.probes.selinux_mode() == "enforcing":
            found.append(Action("set SELinux permissive now",
                                partial(run.run, ["setenforce", "0"])))
        selinux = host.read_text("/etc/selinux/config")
        if selinux is not None:
            write("/etc/selinux/config", selinux_content(selinux))

        found.extend(self._firewall(ctx))

        modules = required_modules(host.probes.kernel())
        write(MODULES_FILE, render("modules-load.conf.j2", modules=modules))
        loaded = set(host.probes.loaded_modules())
        for module in modules:
            if module not in loaded:
                found.append(Action("load kernel module " + module,
                                    partial(run.run, ["modprobe", module])))
        sysctl = render("sysctl.conf.j2", settings=SYSCTL)
        stale = [key for key, value in SYSCTL if host.probes.sysctl(key) != value]
        if host.needs_write(SYSCTL_FILE, sysctl.encode("utf-8")) is not None or stale:
            found.append(Action("write {} and apply it ({})".format(
                SYSCTL_FILE, ", ".join(stale) or "file changed"),
                partial(_write_then, ctx, SYSCTL_FILE, sysctl, [["sysctl", "-p", SYSCTL_FILE]])))

        if ctx.cluster.ntp_servers:
            chrony = render("chrony.conf.j2", cluster_name=ctx.cluster.name,
                            servers=ctx.cluster.ntp_servers)
            write("/etc/chrony.conf", chrony, [["systemctl", "restart", "chronyd"]])
            found.extend(_enabled(ctx, "chronyd", start=False))
        return found

    def _firewall(self, ctx: Context) -> List[Action]:
        run = ctx.runner
        active = run.query(["systemctl", "is-active", "firewalld"]).stdout.strip() == "active"
        enabled = run.query(["systemctl", "is-enabled", "firewalld"]).stdout.strip() == "enabled"
        if ctx.cluster.firewall == "disable":
            if active or enabled:
                return [Action("stop and disable firewalld",
                               partial(run.run, ["systemctl", "disable", "--now", "firewalld"]))]
            return []
        if not active:
            return []
        listed = run.query(["firewall-cmd", "--permanent", "--list-ports"]).stdout.split()
        argv = ["firewall-cmd", "--permanent"]
        argv += ["--add-port=" + p for p in firewall_ports(ctx) if p not in listed]
        if ctx.node.is_control_plane:
            protocols = run.query(["firewall-cmd", "--permanent", "--list-protocols"]).stdout
            if "vrrp" not in protocols.split():
                argv.append("--add-protocol=vrrp")
        if len(argv) == 2:
            return []

        def open_ports() -> None:
            run.run(argv)
            run.run(["firewall-cmd", "--reload"])

        return [Action("open firewalld: " + " ".join(a.split("=", 1)[1] for a in argv[2:]),
                       open_ports)]


def _write_then(ctx: Context, path: str, content: str, commands: List[List[str]]) -> None:
    ctx.host.write(path, content)
    for argv in commands:
        ctx.runner.run(argv)


def _enabled(ctx: Context, unit: str, start: bool = True) -> List[Action]:
    """Actions that enable (and with `start`, start) a systemd unit."""
    run = ctx.runner
    found = []
    if run.query(["systemctl", "is-enabled", unit]).stdout.strip() != "enabled":
        found.append(Action("enable " + unit, partial(run.run, ["systemctl", "enable", unit])))
    if start and run.query(["systemctl", "is-active", unit]).stdout.strip() != "active":
        found.append(Action("start " + unit, partial(run.run, ["systemctl", "start", unit])))
    return found
