"""Host preparation: hostname, /etc/hosts, swap, SELinux, firewalld, kernel modules and sysctl
(chrony comes after the local repo: installer/steps/timesync.py). Every file is written
atomically with its original kept (installer/host.py)."""

import re
import string
from functools import partial
from typing import Dict, List, Sequence

from installer import owned
from installer.host import fstab_swaps
from installer.registrystore import REGISTRY_NODE_PORT, REGISTRY_PORT
from installer.render import render
from installer.steps import Action, ActionStep, Context, calico, conflicts, nmconf
from installer.steps.cnichoice import chosen
from installer.steps.preflight import kube_proxy_mode, required_modules

HOSTS_BEGIN = "# BEGIN kubecrate"
HOSTS_END = "# END kubecrate"
MODULES_FILE = "/etc/modules-load.d/kubecrate.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-kubecrate.conf"
SYSCTL = (("net.bridge.bridge-nf-call-iptables", "1"),
          ("net.bridge.bridge-nf-call-ip6tables", "1"),
          ("net.ipv4.ip_forward", "1"))
FLANNEL_VXLAN = "8472/udp"
NODE_PORTS = "30000-32767/tcp"  # kube-apiserver --service-node-port-range default
FLANNEL_INTERFACES = ("cni0", "flannel.1")
UNIT_NAME_CHARS = string.ascii_letters + string.digits + ":_"


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


def swap_unit(what: str) -> str:
    """The systemd swap unit of device `what` (a path, or fstab's UUID=/LABEL= form), named
    the way systemd-fstab-generator names it: the path escaped as `systemd-escape --path`
    does (systemd.unit(5), "String Escaping for Inclusion in Unit Names") plus ".swap"."""
    for tag, folder in (("UUID=", "/dev/disk/by-uuid/"), ("LABEL=", "/dev/disk/by-label/"),
                        ("PARTUUID=", "/dev/disk/by-partuuid/")):
        if what.startswith(tag):
            what = folder + what[len(tag):]
    parts = [p for p in what.split("/") if p]
    escaped = []
    for number, part in enumerate(parts):
        chars = []
        for index, char in enumerate(part):
            if char in UNIT_NAME_CHARS or (char == "." and (index or number)):
                chars.append(char)
            else:
                chars.extend("\\x{:02x}".format(b) for b in char.encode("utf-8"))
        escaped.append("".join(chars))
    return ("-".join(escaped) or "-") + ".swap"


def swap_actions(ctx: Context, write) -> List[Action]:
    """Swap off now (`swapoff -a`), its fstab lines commented out, and every swap unit systemd
    knows of it masked, so that neither fstab nor systemd-gpt-auto-generator turns it back on
    at the next boot (the kubelet refuses to start with swap on)."""
    host, run = ctx.host, ctx.runner
    found: List[Action] = []
    active = host.probes.active_swaps()
    if active:
        found.append(Action("turn swap off ({})".format(", ".join(active)),
                            partial(run.run, ["swapoff", "-a"])))
    fstab = host.read_text("/etc/fstab")
    devices = list(active)
    if fstab is not None:
        devices += [line.split()[0] for _, line in fstab_swaps(fstab)]
        devices += [line.split()[3] for line in fstab.splitlines()
                    if line.startswith("#kubecrate swap off# ") and len(line.split()) > 4]
        write("/etc/fstab", fstab_content(fstab))
    units = sorted(set(swap_unit(device) for device in devices))
    for unit in units:
        if run.query(["systemctl", "is-enabled", unit]).stdout.strip() != "masked":
            found.append(Action("mask " + unit, partial(
                owned.systemctl, host, run, "host-prep", "mask", unit)))
    return found


def selinux_content(current: str) -> str:
    return re.sub(r"^SELINUX=enforcing[ \t]*$", "SELINUX=permissive", current, flags=re.M)


def firewall_ports(ctx: Context) -> List[str]:
    if ctx.node.is_control_plane:
        ports = ["6443/tcp", "2379-2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp"]
        if ctx.cluster.lb_port:
            ports.append("{}/tcp".format(ctx.cluster.lb_port))
        if ctx.cluster.images_mode == "registry":  # the registry's frontend and its own port
            ports.extend("{}/tcp".format(port) for port in (REGISTRY_PORT, REGISTRY_NODE_PORT))
    elif ctx.node.is_etcd_host:  # etcd's client and peer ports, the kubelet's; no pods
        return ["2379-2380/tcp", "10250/tcp"]
    else:
        ports = ["10250/tcp"]
    return ports + [NODE_PORTS, calico.VXLAN_PORT if chosen(ctx) == "calico" else FLANNEL_VXLAN]


class HostPrepStep(ActionStep):
    name = "host-prep"
    title = "Prepare the host (hostname, hosts, swap, SELinux, firewall, modules, sysctl)"

    def actions(self, ctx: Context) -> List[Action]:
        host, run = ctx.host, ctx.runner
        found: List[Action] = []

        def write(path: str, content: str, then: Sequence[List[str]] = ()) -> None:
            if host.needs_write(path, content.encode("utf-8")) is not None:
                found.append(Action("write " + path, partial(_write_then, ctx, path, content,
                                                             list(then))))

        name = ctx.node.name
        if (host.read_text("/etc/hostname") or "").strip() != name:
            write("/etc/hostname", name + "\n", [["hostnamectl", "set-hostname", name]])
        write("/etc/hosts", hosts_content(ctx, host.read_text("/etc/hosts") or ""))

        found.extend(swap_actions(ctx, write))

        # `selinux: enforcing` (docs/selinux.md): the mode and /etc/selinux/config stay as they
        # are; the later steps label what they write and run the pods that need it as spc_t
        if not ctx.cluster.enforcing:
            if host.probes.selinux_mode() == "enforcing":
                found.append(Action("set SELinux permissive now",
                                    partial(run.run, ["setenforce", "0"])))
            selinux = host.read_text("/etc/selinux/config")
            if selinux is not None:
                write("/etc/selinux/config", selinux_content(selinux))

        found.extend(self._firewall(ctx))
        found.extend(nmconf.actions(ctx))
        found.extend(conflicts.actions(ctx))  # before the local repo installs containerd.io

        modules = required_modules(host.probes.kernel(), kube_proxy_mode(ctx) == "ipvs",
                                   chosen(ctx))
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
        # chrony: installer/steps/timesync.py, after the local repo has installed it
        return found

    def _firewall(self, ctx: Context) -> List[Action]:
        run = ctx.runner
        active = run.query(["systemctl", "is-active", "firewalld"]).stdout.strip() == "active"
        enabled = run.query(["systemctl", "is-enabled", "firewalld"]).stdout.strip() == "enabled"
        if ctx.cluster.firewall == "disable":
            found = []
            if active:
                found.append(Action("stop firewalld", partial(
                    owned.systemctl, ctx.host, run, self.name, "stop", "firewalld")))
            if enabled:
                found.append(Action("disable firewalld", partial(
                    owned.systemctl, ctx.host, run, self.name, "disable", "firewalld")))
            return found
        if not active:
            return []
        rules = missing_firewall_rules(ctx)
        if not rules:
            return []

        def open_ports() -> None:
            by_zone: Dict[str, List[str]] = {}
            for rule in rules:
                zone, _, arg = rule.rpartition(" ")
                by_zone.setdefault(zone, []).append(arg)
            for zone, args in sorted(by_zone.items()):
                run.run(["firewall-cmd", "--permanent"] + ([zone] if zone else []) + args)
                owned.note_firewall(ctx.host, self.name,
                                    [(zone + " " + a).strip() for a in args])
            run.run(["firewall-cmd", "--reload"])

        return [Action("open firewalld: " + ", ".join(
            r.replace("--zone=", "").replace("--add-", "").replace("=", " ") for r in rules),
            open_ports)]


def firewall_rules(ctx: Context) -> List[str]:
    """Every permanent firewalld rule this node needs, as `[--zone=Z ]--add-…=V`: the role's
    ports, NodePorts (kube-proxy opens them on every node, control planes too), flannel's
    VXLAN port, VRRP between control planes, masquerading, and flannel's interfaces in the
    trusted zone so that pod traffic forwarded between cni0 and flannel.1 is not rejected
    by firewalld's FORWARD rules."""
    rules = ["--add-port=" + p for p in firewall_ports(ctx)]
    if ctx.node.is_control_plane:
        rules.append("--add-protocol=vrrp")
    rules.append("--add-masquerade")
    rules += ["--zone=trusted --add-interface=" + name for name in (
        calico.TRUSTED_INTERFACES if chosen(ctx) == "calico" else FLANNEL_INTERFACES)]
    return rules


def missing_firewall_rules(ctx: Context) -> List[str]:
    """firewall_rules() less what firewalld's permanent configuration already has."""
    run = ctx.runner

    def listed(*args: str) -> List[str]:
        return run.query(["firewall-cmd", "--permanent"] + list(args)).stdout.split()

    have = {"port": listed("--list-ports"), "protocol": listed("--list-protocols"),
            "interface": listed("--zone=trusted", "--list-interfaces")}
    masquerade = run.query(["firewall-cmd", "--permanent", "--query-masquerade"]).returncode == 0
    missing = []
    for rule in firewall_rules(ctx):
        arg = rule.split()[-1]
        kind, _, value = arg[len("--add-"):].partition("=")
        if kind == "masquerade":
            if not masquerade:
                missing.append(rule)
        elif value not in have[kind]:
            missing.append(rule)
    return missing


def _write_then(ctx: Context, path: str, content: str, commands: List[List[str]]) -> None:
    ctx.host.write(path, content)
    for argv in commands:
        ctx.runner.run(argv)


def _enabled(ctx: Context, unit: str, start: bool = True,
             step: str = "host-prep") -> List[Action]:
    """Actions that enable (and with `start`, start) a systemd unit, each recorded in
    state.json as done by `step` (installer/owned.py), so that reset undoes only those."""
    run = ctx.runner
    found = []
    if run.query(["systemctl", "is-enabled", unit]).stdout.strip() != "enabled":
        found.append(Action("enable " + unit, partial(
            owned.systemctl, ctx.host, run, step, "enable", unit)))
    if start and run.query(["systemctl", "is-active", unit]).stdout.strip() != "active":
        found.append(Action("start " + unit, partial(
            owned.systemctl, ctx.host, run, step, "start", unit)))
    return found
