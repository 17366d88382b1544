#!/usr/bin/env python3
"""Host command stand-ins for the installer's integration tests, one script named by argv[0]
(the fixture links yum, rpm, systemctl, ... to it on a private PATH).

Each records its argv as a JSON line in $KUBECRATE_STANDIN_LOG and acts on the test host:
files under $KUBECRATE_ROOT (exported by the installer's runner), the fake kernel under
$KUBECRATE_PROBE_ROOT (/proc and /sys files the installer's probes read), and unit and
firewall state in $KUBECRATE_STANDIN_STATE (lab/hostcmd.py). `yum` runs the real
`dnf --installroot`, `rpm` the real `rpm --root`. The container runtime commands (docker, ctr,
crictl) are in lab/hostruntime.py, the SELinux ones in lab/hostselinux.py.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

if __name__ == "__main__":  # run by a link's name: put the lab package's folder on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from lab.hostcmd import (  # noqa: E402
    PROBE,
    ROOT,
    STATE,
    probe_write,
    read_json,
    real,
    record,
    rooted,
    write_json,
)
from lab.hostruntime import runtime_tool  # noqa: E402
from lab.hostselinux import SELINUX_TOOLS, selinux_tool  # noqa: E402


def load_state():
    return read_json(os.path.join(STATE, "units.json"),
                     {"active": [], "enabled": [], "ports": [], "protocols": []})


def save_state(state):
    write_json(os.path.join(STATE, "units.json"), state)


def systemctl(args):
    state = load_state()
    verb, rest = args[0], [a for a in args[1:] if not a.startswith("--")]
    if verb == "is-active":
        ok = rest[0] in state["active"]
        print("active" if ok else "inactive")
        return 0 if ok else 3
    if verb == "is-enabled":
        # systemctl(1), is-enabled: a masked unit prints "masked" and exits non-zero.
        if rest[0] in state.get("masked", []):
            print("masked")
            return 1
        ok = rest[0] in state["enabled"]
        print("enabled" if ok else "disabled")
        return 0 if ok else 1
    if verb in ("mask", "unmask"):  # systemctl(1): mask links the unit to /dev/null
        masked = state.setdefault("masked", [])
        for unit in rest:
            if verb == "mask" and unit not in masked:
                masked.append(unit)
            if verb == "unmask" and unit in masked:
                masked.remove(unit)
        save_state(state)
        return 0
    for unit in rest:
        if verb == "enable" and unit not in state["enabled"]:
            state["enabled"].append(unit)
        if verb == "disable" and unit in state["enabled"]:
            state["enabled"].remove(unit)
        if verb in ("start", "restart") or (verb == "enable" and "--now" in args):
            if unit not in state["active"]:
                state["active"].append(unit)
        if verb == "stop" or (verb == "disable" and "--now" in args):
            if unit in state["active"]:
                state["active"].remove(unit)
    save_state(state)
    return 0


def firewall_cmd(args):
    """The permanent configuration only (what the installer changes), as firewall-cmd(1)
    (firewalld.org/documentation/man-pages/firewall-cmd.html) defines: `--list-ports`,
    `--list-protocols`, `--list-interfaces` print a space-separated list; `--query-masquerade`
    answers with exit 0 (yes) or 1 (no); `--add-*`/`--remove-*` of port, protocol,
    masquerade and interface; `--zone=Z` picks the zone, else the default zone ("public")."""
    state = load_state()
    zone = next((a.split("=", 1)[1] for a in args if a.startswith("--zone=")), "public")
    zones = state.setdefault("zones", {})
    interfaces = zones.setdefault(zone, {}).setdefault("interfaces", [])
    masquerade = state.setdefault("masquerade", [])
    tables = {"port": state["ports"], "protocol": state["protocols"], "interface": interfaces}
    code = 0
    for arg in args:
        name, _, value = arg.partition("=")
        if name == "--list-ports":
            print(" ".join(state["ports"]))
        elif name == "--list-protocols":
            print(" ".join(state["protocols"]))
        elif name == "--list-interfaces":
            print(" ".join(interfaces))
        elif name == "--query-masquerade":
            print("yes" if zone in masquerade else "no")
            code = 0 if zone in masquerade else 1
        elif name == "--add-masquerade" and zone not in masquerade:
            masquerade.append(zone)
        elif name == "--remove-masquerade" and zone in masquerade:
            masquerade.remove(zone)
        elif name.startswith("--add-") and name[6:] in tables:
            if value not in tables[name[6:]]:
                tables[name[6:]].append(value)
        elif name.startswith("--remove-") and name[9:] in tables:
            if value in tables[name[9:]]:
                tables[name[9:]].remove(value)
    save_state(state)
    return code


def yum(args):
    """The real dnf on the root, with the repo files' file:// paths moved under the root.
    Like yum 3 (and unlike dnf, which answers "Unable to find a match"), `install` of a
    package that is installed but in no enabled repo is no error: such names are dropped."""
    conf_in = None
    rest = []
    it = iter(args)
    for arg in it:
        if arg == "-c":
            conf_in = next(it)
        else:
            rest.append(arg)
    if conf_in:
        text = open(conf_in).read()
    else:
        folder = rooted("/etc/yum.repos.d")
        text = "".join(open(os.path.join(folder, n)).read() + "\n"
                       for n in sorted(os.listdir(folder)) if n.endswith(".repo"))

    def move(match):
        path = match.group(1)
        if not os.path.exists(path) or os.path.exists(rooted(path)):
            path = rooted(path)
        return "file://" + path

    if "install" in rest:
        at = rest.index("install") + 1
        names = [n for n in rest[at:] if not n.startswith("-")]
        have = [n for n in names if subprocess.run(
            [real("rpm"), "--root", ROOT, "-q", n], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=120).returncode == 0]
        rest = rest[:at] + [n for n in rest[at:] if n not in have]
        if have and len(rest) == at:
            print("Package(s) {} already installed\nNothing to do".format(" ".join(have)))
            return 0
    text = re.sub(r"file://(/\S*)", move, text)
    text = re.sub(r"(?ms)^\[main\].*?(?=^\[)", "", text)
    scratch = tempfile.mkdtemp(prefix="standin-yum-")
    try:
        conf = os.path.join(scratch, "dnf.conf")
        with open(conf, "w") as out:
            out.write("[main]\nreposdir={0}/none\ncachedir={0}/cache\nkeepcache=0\n\n{1}"
                      .format(scratch, text))
        argv = [real("dnf"), "--installroot", ROOT, "--config", conf, "--releasever", "7",
                "--forcearch", "x86_64", "--nodocs", "--setopt=reposdir=" + scratch + "/none",
                "--setopt=install_weak_deps=False"] + rest
        if "--assumeno" in rest:  # a dry run leaves no trace in the root, like yum 3's
            os.makedirs(scratch + "/log")
            argv[1:1] = ["--setopt=logdir=" + scratch + "/log",
                         "--setopt=persistdir=" + scratch + "/persist"]
        return subprocess.run(argv, timeout=600).returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(rooted(scratch), ignore_errors=True)  # dnf puts cachedir in the root


def rpm(args):
    moved = [rooted(a) if a.startswith("/") and "--import" in args else a for a in args]
    return subprocess.run([real("rpm"), "--root", ROOT] + moved, timeout=300).returncode


def modprobe(args):
    modules = os.path.join(PROBE, "proc/modules")
    text = open(modules).read() if os.path.exists(modules) else ""
    for name in [a for a in args if not a.startswith("-")]:
        if not re.search(r"^{} ".format(re.escape(name)), text, re.M):
            text += "{} 16384 0 - Live 0x0\n".format(name)
        if name == "br_netfilter":
            for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
                if not os.path.exists(os.path.join(PROBE, "proc/sys/net/bridge", key)):
                    probe_write("/proc/sys/net/bridge/" + key, "0\n")
    probe_write("/proc/modules", text)
    return 0


def sysctl(args):
    if args[:1] == ["-p"]:
        for line in open(rooted(args[1])):
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = (p.strip() for p in line.split("=", 1))
                probe_write("/proc/sys/" + key.replace(".", "/"), value + "\n")
    return 0


def chronyc(args):
    """`chronyc tracking` as chrony 3.4 (CentOS 7.9) prints it: chronyc(1), "tracking"
    (https://chrony-project.org/doc/3.4/chronyc.html#tracking): `System time` is "<seconds>
    seconds slow|fast of NTP time", `Leap status` one of Normal, Insert second, Delete second,
    Not synchronised; with chronyd not running chronyc prints "506 Cannot talk to daemon" and
    exits 1 (chrony client.c). The test sets the clock in $KUBECRATE_STANDIN_STATE/chrony.json:
    {"offset": seconds (negative: slow), "synchronised": bool, "running": bool}."""
    path = os.path.join(STATE, "chrony.json")
    clock = {"offset": -0.000012, "synchronised": True, "running": True}
    if os.path.exists(path):
        clock.update(json.load(open(path)))
    if args[:1] != ["tracking"]:
        print("chronyc {}: not recorded".format(" ".join(args)), file=sys.stderr)
        return 1
    if not clock["running"]:
        print("506 Cannot talk to daemon")
        return 1
    offset, synced = float(clock["offset"]), clock["synchronised"]
    lines = [("Reference ID", "0A000001 (10.0.0.1)" if synced else "00000000 ()"),
             ("Stratum", "3" if synced else "0"),
             ("Ref time (UTC)", "Thu Jan 01 00:00:00 2026" if synced
              else "Thu Jan 01 00:00:00 1970"),
             ("System time", "{:.9f} seconds {} of NTP time".format(
                 abs(offset), "slow" if offset < 0 else "fast")),
             ("Last offset", "{:+.9f} seconds".format(offset if synced else 0)),
             ("RMS offset", "0.000035087 seconds"),
             ("Frequency", "3.225 ppm slow"),
             ("Residual freq", "-0.000 ppm"),
             ("Skew", "0.129 ppm"),
             ("Root delay", "0.013639022 seconds"),
             ("Root dispersion", "0.001100737 seconds"),
             ("Update interval", "64.2 seconds" if synced else "0.0 seconds"),
             ("Leap status", "Normal" if synced else "Not synchronised")]
    for key, value in lines:
        print("{:<16}: {}".format(key, value))
    return 0


def swapoff(args):
    probe_write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
    return 0


def hostnamectl(args):
    probe_write("/proc/sys/kernel/hostname", args[-1] + "\n")
    return 0


COMMANDS = {"systemctl": systemctl, "firewall-cmd": firewall_cmd, "yum": yum, "rpm": rpm,
            "modprobe": modprobe, "sysctl": sysctl, "chronyc": chronyc, "swapoff": swapoff,
            "hostnamectl": hostnamectl}


def main():
    name = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    record([name] + args)
    if name in COMMANDS:
        return COMMANDS[name](args)
    if name in SELINUX_TOOLS:
        return selinux_tool(name, args)
    if name in ("docker", "ctr", "crictl"):
        return runtime_tool(name, args)
    print("{}: not a stand-in".format(name), file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
