"""Preflight of what the host's own policy decides: SELinux (its mode against cluster.yaml's
`selinux:`, and container-selinux on an enforcing host), firewalld (stopped or opened by host
prep) and installed packages the bundle's runtime conflicts with (EL8+). Called from
installer/steps/preflight.py's checks; each yields Findings.
"""

import os
import re
from typing import List

from installer.steps import Context, conflicts
from installer.steps.findings import FAIL, PASS, WARN, Finding


def check_selinux(ctx: Context) -> List[Finding]:
    mode = ctx.host.probes.selinux_mode()
    if not ctx.cluster.enforcing:
        if mode == "enforcing":
            return [Finding(WARN, "selinux", "SELinux is enforcing; host prep sets it permissive "
                            "now and in /etc/selinux/config",
                            "keep it enforcing with `selinux: enforcing` in cluster.yaml "
                            "(docs/selinux.md)")]
        return [Finding(PASS, "selinux", "SELinux is " + mode)]
    # `selinux: enforcing` (docs/selinux.md): the host keeps its mode
    if mode == "disabled":
        found = [Finding(FAIL, "selinux", "cluster.yaml asks for selinux: enforcing, but SELinux "
                         "is disabled on this host (setenforce cannot turn it on)",
                         "set SELINUX=enforcing in /etc/selinux/config, `touch /.autorelabel` "
                         "and reboot; or use selinux: permissive")]
    elif mode == "permissive":
        found = [Finding(WARN, "selinux", "cluster.yaml asks for selinux: enforcing; this host "
                         "is permissive and stays so (kubecrate changes no mode), with the "
                         "labels and pod options enforcing needs",
                         "`setenforce 1` and SELINUX=enforcing when the site requires it")]
    else:
        found = [Finding(PASS, "selinux", "SELinux is enforcing and stays so (selinux: "
                         "enforcing)")]
    return found + [container_selinux(ctx)]


def container_selinux(ctx: Context) -> Finding:
    """container-selinux labels the runtime, its files and the containers (container_t,
    spc_t, kubernetes_file_t): on an enforcing host it must be installed, or come with the
    bundle (docker-ce and containerd.io require it, so the local repo step installs it)."""
    installed = ctx.runner.query(["rpm", "-q", "container-selinux"])
    if installed.returncode == 0 and installed.stdout.strip():
        return Finding(PASS, "container-selinux", installed.stdout.strip() + " is installed")
    prefix = ctx.info.repo_path.rstrip("/") + "/"
    carried = sorted(os.path.basename(f) for f in ctx.info.files if f.startswith(prefix)
                     and re.match(r"container-selinux-\d", os.path.basename(f)))
    if carried:
        return Finding(PASS, "container-selinux", "not installed yet; the bundle's {} is "
                       "installed with the runtime".format(carried[-1]))
    return Finding(FAIL, "container-selinux", "container-selinux is neither installed nor in "
                   "the bundle: an enforcing host would deny the runtime and its containers",
                   "add container-selinux to the recipe's packages and rebuild the bundle")


def check_firewalld(ctx: Context) -> Finding:
    active = ctx.runner.query(["systemctl", "is-active", "firewalld"]).stdout.strip()
    if active != "active":
        return Finding(PASS, "firewalld", "firewalld is not running")
    if ctx.cluster.firewall == "disable":
        return Finding(WARN, "firewalld", "firewalld is running; host prep stops and disables "
                       "it (firewall: disable)", "set firewall: open-ports to keep it")
    return Finding(PASS, "firewalld", "firewalld is running; host prep opens the cluster ports")


def check_conflicts(ctx: Context) -> List[Finding]:
    """podman, buildah, runc against containerd.io (installer/steps/conflicts.py): a change
    host prep makes when the bundle's remove_packages cover them and removing them takes
    nothing else along, else a failure naming them."""
    found = conflicts.conflicting(ctx)
    if not found:
        return []
    why = "containerd.io obsoletes and conflicts with runc, which {} require".format(
        " and ".join(n for n in found if n != "runc") or "podman and buildah")
    removable = set(getattr(ctx.info, "remove_packages", ()) or ())
    kept = [name for name in found if name not in removable]
    if kept:
        return [Finding(FAIL, "conflicts", "{} installed: {}; the bundle does not remove {}"
                        .format(", ".join(found), why, ", ".join(kept)),
                        "yum remove {} (or build the bundle with `remove: [{}]` in its recipe)"
                        .format(" ".join(found), ", ".join(conflicts.CONFLICTING)))]
    blockers = conflicts.removal_blockers(ctx, conflicts.planned(ctx))
    if blockers:
        return [Finding(FAIL, "conflicts", "{} installed ({}), but removing them would break "
                        "other packages:\n    {}".format(", ".join(found), why,
                                                       "\n    ".join(blockers[:8])),
                        "remove those packages first, or keep this host out of the cluster")]
    return [Finding(WARN, "conflicts", "{} installed: {}; host prep removes exactly these "
                    "(`rpm -e {}`, the bundle's remove_packages)".format(
                        ", ".join(found), why, " ".join(conflicts.planned(ctx))))]
