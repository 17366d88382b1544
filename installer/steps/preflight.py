"""Preflight: does this bundle fit this host, and is the host ready for its role?

Every check reads only: files under the root, kernel probes, real port binds, and read-only
commands (`yum --assumeno`, `rpm -q`, `systemctl is-active`, `xfs_info`). Each yields a Finding
(pass, warn or fail, with what to do); any fail makes run_preflight() raise PreconditionError
(exit 4) before anything on the host changed.
"""

import os
import re
import tempfile
from typing import Callable, List

from installer.format.errors import PreconditionError
from installer.host import fstab_swaps
from installer.osrelease import read_os_release, refusal
from installer.render import render
from installer.steps import Context, calico, conflicts, preflight_cluster, timesync
from installer.steps.cnichoice import choice_problem, chosen
from installer.steps.conflicts import bundle_installs
from installer.steps.findings import FAIL, PASS, WARN, Finding
from installer.steps.preflight_hostpolicy import check_conflicts, check_firewalld, check_selinux
from installer.steps.preflight_lb import check_lb_images
from installer.steps.preflight_proxy import check_proxy
from installer.steps.preflight_repos import check_outside_repos

GIB = 1 << 30
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
EL_KERNELS = {"7": "3.10.", "8": "4.18.", "9": "5.14."}
CONTROL_PLANE_PORTS = (6443, 2379, 2380, 10250, 10257, 10259)
WORKER_PORTS = (10250,)
ETCD_HOST_PORTS = (2379, 2380, 10250)  # kubeadm's HA etcd guide, "Before you begin"
MIN_CPUS = {"control-plane": 2, "worker": 1, "etcd": 1}
MIN_MEMORY_MB = {"control-plane": 1700, "worker": 1024, "etcd": 1024}


def data_root(runtime: str) -> str:
    return "/var/lib/docker" if runtime == "docker" else "/var/lib/containerd"


def required_ports(ctx: Context) -> List[int]:
    ports = list(CONTROL_PLANE_PORTS if ctx.node.is_control_plane else
                 ETCD_HOST_PORTS if ctx.node.is_etcd_host else WORKER_PORTS)
    if ctx.node.is_control_plane and ctx.cluster.lb_port:
        ports.append(ctx.cluster.lb_port)
    return ports


def check_os(ctx: Context) -> Finding:
    """The host's EL platform (PLATFORM_ID) and distribution (ID) against the bundle's target
    and target.hosts (installer/osrelease.py)."""
    text = ctx.host.read_text("/etc/os-release")
    if text is None:
        return Finding(FAIL, "os", "/etc/os-release is missing: cannot tell which OS this is",
                       "run the installer on a {} {} host".format(ctx.info.os, ctx.info.release))
    host = read_os_release(text)
    hosts = tuple(getattr(ctx.info, "hosts", ()) or ())
    refused = refusal(host, ctx.info.name, ctx.info.os, ctx.info.release, hosts)
    if refused:
        return Finding(FAIL, "os", refused[0], refused[1])
    return Finding(PASS, "os", "{} ({}) is served by the bundle's target {} {}{}".format(
        host.name, host.platform_id, ctx.info.os, ctx.info.release,
        " (target.hosts: {})".format(", ".join(hosts)) if hosts else ""))


def check_arch(ctx: Context) -> Finding:
    have = ctx.host.probes.arch()
    want = ARCH_ALIASES.get(ctx.info.arch, ctx.info.arch)
    if ARCH_ALIASES.get(have, have) != want:
        return Finding(FAIL, "arch", "bundle {} is for {} but this host is {}".format(
            ctx.info.name, want, have), "use a bundle built for {}".format(have))
    return Finding(PASS, "arch", "architecture {}".format(have))


def check_kernel(ctx: Context) -> Finding:
    kernel = ctx.host.probes.kernel()
    expected = EL_KERNELS.get(ctx.info.major_release)
    if expected and not kernel.startswith(expected):
        return Finding(WARN, "kernel", "kernel {} is not the EL{} kernel ({}x)".format(
            kernel, ctx.info.major_release, expected),
            "boot the distribution's kernel; other kernels are untested")
    return Finding(PASS, "kernel", "kernel {}".format(kernel))


def check_packages(ctx: Context) -> Finding:
    """A dry-run install of the role's packages from the bundle repo alone, against this host's
    real rpm database: does the bundle fit this host, not just a minimal one?"""
    packages = ctx.info.packages_for(ctx.node.role)
    if not packages:
        return Finding(PASS, "packages", "the bundle lists no packages for role " + ctx.node.role)
    source = ctx.source_dir or ctx.bundle_dir
    # Packages host prep removes first (EL8+, dnf): the dry run may erase those, and only those.
    removing = conflicts.planned(ctx) if ctx.info.major_release != "7" else []
    scratch = tempfile.mkdtemp(prefix="kubecrate-yum-")
    try:
        conf = os.path.join(scratch, "yum.conf")
        with open(conf, "w") as out:
            out.write(render(
                "kubecrate.repo.j2", bundle_name=ctx.info.name, enabled=1,
                main=[("cachedir", scratch + "/cache"), ("reposdir", scratch + "/repos.d"),
                      ("keepcache", "0"), ("gpgcheck", "1"), ("plugins", "0"),
                      # yum 3 saves every solved but unrun transaction as
                      # /tmp/yum_save_tx.*.yumtx unless told not to (yum.conf(5),
                      # autosavets, default True): a dry run must leave nothing behind.
                      ("autosavets", "0")],
                baseurl=os.path.join(source, ctx.info.repo_path),
                gpgkeys=[os.path.join(source, key) for key in ctx.info.gpgkeys]))
        result = ctx.runner.query(
            ["yum", "-c", conf, "--disablerepo=*", "--enablerepo=kubecrate", "--assumeno"]
            + (["--allowerasing"] if removing else []) + ["install"] + list(packages),
            timeout=600)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    output = result.stdout + "\n" + result.stderr
    errors = [line.strip() for line in output.splitlines()
              if re.match(r"^\s*(Error|Problem|- package|- cannot|\s*Requires:|.*conflicts with)",
                          line)]
    if result.returncode == 127:
        return Finding(FAIL, "packages", "yum is not installed on this host", "install yum")
    # EL7's yum replaces runc by containerd.io, which provides it there: not judged
    extra = sorted(set(erased_by(output)) - set(removing)) \
        if ctx.info.major_release != "7" else []
    if extra:
        return Finding(FAIL, "packages", "the bundle's {} packages would also remove {} from "
                       "this host (host prep removes only {})".format(
                           ctx.node.role, ", ".join(extra), ", ".join(removing)),
                       "remove or keep them yourself before installing")
    if errors or (result.returncode != 0 and not re.search(
            r"Exiting on user command|Operation aborted|Nothing to do|already installed", output)):
        detail = "\n    ".join(errors[:12] or output.strip().splitlines()[-8:])
        return Finding(FAIL, "packages", "the bundle's {} packages do not install on this host:"
                       "\n    {}".format(ctx.node.role, detail),
                       "remove the conflicting packages, or build a bundle against this host's "
                       "base install")
    return Finding(PASS, "packages", "{} packages resolve against this host's rpm database "
                   "using only the bundle repo".format(len(packages)))


def erased_by(output: str) -> List[str]:
    """Package names a dnf transaction listing would erase: its "Removing…:" sections and the
    "replacing NAME.ARCH" lines of obsoletes."""
    names = []
    section = False
    for line in output.splitlines():
        if line and not line[0].isspace():
            section = line.startswith(("Removing", "Erasing")) and line.rstrip().endswith(":")
            continue
        words = line.split()
        if words[:1] == ["replacing"] and len(words) > 1:
            names.append(words[1].rsplit(".", 1)[0])
        elif section and words and words[0] not in ("x86_64", "aarch64", "noarch", "i686"):
            names.append(words[0])  # (a wrapped row continues with the arch)
    return names


def check_resources(ctx: Context) -> List[Finding]:
    role = ctx.node.role
    cpus, memory = ctx.host.probes.cpus(), ctx.host.probes.memory_mb()
    level = FAIL if ctx.node.is_control_plane else WARN
    found = []
    if cpus < MIN_CPUS[role]:
        found.append(Finding(level, "cpus", "{} CPU(s); a {} node needs {}".format(
            cpus, role, MIN_CPUS[role]), "give the host more CPUs"))
    else:
        found.append(Finding(PASS, "cpus", "{} CPUs".format(cpus)))
    if memory < MIN_MEMORY_MB[role]:
        found.append(Finding(level, "memory", "{} MB of memory; a {} node needs {} MB".format(
            memory, role, MIN_MEMORY_MB[role]), "give the host more memory"))
    else:
        found.append(Finding(PASS, "memory", "{} MB of memory".format(memory)))
    return found


def check_swap(ctx: Context) -> Finding:
    """Swap on is a change host prep makes (swapoff -a, fstab, masked swap units), not a
    failure: the kubelet refuses swap, but only once it starts, after host prep."""
    active = ctx.host.probes.active_swaps()
    entries = fstab_swaps(ctx.host.read_text("/etc/fstab") or "")
    if active:
        return Finding(WARN, "swap", "swap is on ({}); host prep turns it off now (`swapoff "
                       "-a`), comments out {} swap line(s) in /etc/fstab and masks its systemd "
                       "swap units".format(", ".join(active), len(entries)),
                       "nothing to do: install does it (the kubelet refuses to run with swap)")
    if entries:
        return Finding(PASS, "swap", "swap is off; host prep comments out {} swap line(s) in "
                       "/etc/fstab and masks their systemd swap units".format(len(entries)))
    return Finding(PASS, "swap", "swap is off")


def check_ports(ctx: Context) -> List[Finding]:
    found = []
    for port in required_ports(ctx):
        if ctx.host.probes.port_in_use(port):
            found.append(Finding(FAIL, "ports", "port {}/tcp is already in use".format(port),
                                 "stop what listens on it (`ss -ltnp 'sport = :{}'`)".format(port)))
    if not found:
        found.append(Finding(PASS, "ports", "ports {} are free".format(
            ", ".join(str(p) for p in required_ports(ctx)))))
    return found


# kube-proxy's IPVS proxier needs these (kubernetes pkg/proxy/ipvs/README.md "Run kube-proxy
# in IPVS mode"; without them it logs "Can't use the IPVS proxier" and falls back to iptables).
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh")


def kube_proxy_mode(ctx: Context) -> str:
    """cluster.yaml's kubeadm.kube_proxy_mode (lbspec validates it), "iptables" by default."""
    return str(dict(ctx.cluster.kubeadm).get("kube_proxy_mode") or "iptables")


def required_modules(kernel: str, ipvs: bool = False, cni: str = "flannel") -> List[str]:
    """Modules loaded now and at every boot; conntrack is nf_conntrack_ipv4 on 3.10 kernels
    (merged into nf_conntrack in 4.19; EL8/EL9 have only nf_conntrack); calico's felix needs
    ipsets and the VXLAN device (installer/steps/calico.py MODULES)."""
    conntrack = "nf_conntrack_ipv4" if kernel.startswith("3.") else "nf_conntrack"
    return ["overlay", "br_netfilter", conntrack] + (list(IPVS_MODULES) if ipvs else []) + \
        (list(calico.MODULES) if cni == "calico" else [])


def check_modules(ctx: Context) -> Finding:
    probes = ctx.host.probes
    ipvs = kube_proxy_mode(ctx) == "ipvs"
    cni = chosen(ctx)
    wanted = required_modules(probes.kernel(), ipvs, cni)
    missing = [m for m in wanted if not probes.module_available(m)]
    if missing:
        why = " (kubeadm.kube_proxy_mode: ipvs needs {})".format(", ".join(IPVS_MODULES)) \
            if ipvs and set(missing) & set(IPVS_MODULES) else ""
        if set(missing) & set(calico.MODULES):
            why += " (networking.cni: calico needs {}: felix's ipsets and the vxlan.calico " \
                "device)".format(", ".join(calico.MODULES))
        return Finding(FAIL, "modules", "kernel module(s) {} not available in kernel {}{}".format(
            ", ".join(missing), probes.kernel(), why),
            "install the kernel's modules package" + (
                ", or set kubeadm.kube_proxy_mode: iptables in cluster.yaml" if why else ""))
    return Finding(PASS, "modules", "kernel modules {} available".format(", ".join(wanted)))


def check_filesystem(ctx: Context) -> Finding:
    path = data_root(ctx.info.runtime)
    mount = ctx.host.probes.mount_of(path)
    if mount is None or mount.fstype != "xfs":
        return Finding(PASS, "filesystem", "{} is on {}".format(
            path, mount.fstype if mount else "an unknown filesystem"))
    info = ctx.runner.query(["xfs_info", mount.point])
    found = re.search(r"ftype=(\d)", info.stdout)
    if found and found.group(1) == "0":
        return Finding(FAIL, "filesystem", "{} is on XFS with ftype=0 ({}): overlay2 needs "
                       "ftype=1".format(path, mount.point),
                       "move {} to a filesystem made with `mkfs.xfs -n ftype=1`".format(path))
    if not found:
        return Finding(WARN, "filesystem", "cannot tell the XFS ftype of {}".format(mount.point),
                       "check `xfs_info {}` shows ftype=1".format(mount.point))
    return Finding(PASS, "filesystem", "{} is on XFS with ftype=1".format(path))


def check_disk(ctx: Context) -> Finding:
    path = data_root(ctx.info.runtime)
    probe = ctx.host.path(path)
    while not os.path.isdir(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    stat = os.statvfs(probe)
    free = stat.f_bavail * stat.f_frsize
    from installer.steps.images import wanted_images  # images imports the runner chain

    images = sum(image.size for image in wanted_images(ctx))
    needed = 2 * images + GIB  # docker load copies its input before extracting it
    if free < needed:
        return Finding(FAIL, "disk", "{:.1f} GiB free under {}; the {} images need {:.1f} GiB"
                       .format(free / GIB, path, ctx.node.role, needed / GIB),
                       "free space under " + path)
    return Finding(PASS, "disk", "{:.1f} GiB free under {}".format(free / GIB, path))


def check_identity(ctx: Context) -> Finding:
    uuid = ctx.host.probes.product_uuid()
    macs = ctx.host.probes.mac_addresses()
    stacked = set(ctx.host.probes.stacked_interfaces())
    own = {name: mac for name, mac in macs.items() if name not in stacked}
    if len(set(own.values())) != len(own):
        return Finding(WARN, "identity", "two interfaces share a MAC address: {}".format(own),
                       "give every interface a unique MAC (cloned VM?)")
    text = "product_uuid {}, MACs {}".format(uuid or "unknown", ", ".join(
        sorted(set(macs.values()))) or "none")
    return Finding(PASS, "identity", text + ": each must differ on every node")


def check_hostname(ctx: Context) -> Finding:
    hosts = ctx.host.read_text("/etc/hosts") or ""
    names = {word for line in hosts.splitlines() if not line.lstrip().startswith("#")
             for word in line.split()[1:]}
    if ctx.node.name in names:
        return Finding(PASS, "hostname", "{} resolves through /etc/hosts".format(ctx.node.name))
    return Finding(PASS, "hostname", "{} is not in /etc/hosts yet; host prep adds every node"
                   .format(ctx.node.name))


def check_time(ctx: Context) -> Finding:
    """The clock as chronyd reports it: installer/steps/timesync.py."""
    return timesync.check_time_sync(ctx)


def check_el8(ctx: Context) -> List[Finding]:
    if ctx.info.major_release == "7":
        return []
    return check_tc(ctx) + check_conflicts(ctx)


def check_tc(ctx: Context) -> List[Finding]:
    """EL8+ ships tc in iproute-tc, which kubeadm's preflight wants; the local-repo step
    installs it when the bundle carries it, so only its absence from both is worth a warning."""
    if any(ctx.host.exists(p) for p in ("/usr/sbin/tc", "/sbin/tc")):
        return []
    if bundle_installs(ctx, "iproute-tc"):
        return [Finding(PASS, "tc", "tc is missing; the bundle's iproute-tc installs it")]
    return [Finding(WARN, "tc", "tc (iproute-tc) is missing and not in the bundle; kubeadm "
                    "preflight warns", "add iproute-tc to the bundle's packages")]


def check_iptables(ctx: Context) -> Finding:
    link = ctx.host.path("/usr/sbin/iptables")
    target = os.readlink(link) if os.path.islink(link) else ""
    if "nft" in target:
        level = WARN if ctx.info.major_release == "7" else PASS
        return Finding(level, "iptables", "iptables uses the nf_tables backend ({})".format(
            target), "kube-proxy follows the backend the host uses; do not mix the two")
    return Finding(PASS, "iptables", "iptables uses the legacy backend")


def check_cluster(ctx: Context) -> List[Finding]:
    """etcd's disk, CIDRs, the other nodes, VRRP, ARP: installer/steps/preflight_cluster.py."""
    return preflight_cluster.findings(ctx)


def check_cni(ctx: Context) -> Finding:
    """The CNI cluster.yaml's networking.cni names is one whose manifest the bundle carries
    (on every node: the choice decides ports, devices, modules and images); without the key,
    only the first control-plane node, which applies the manifest, needs one."""
    from installer.steps.loadbalancer import is_first  # it imports the preflight chain

    problem = choice_problem(ctx)
    if problem and not ctx.cluster.cni and not is_first(ctx):
        return Finding(PASS, "cni", "{} (applied by the first control-plane node)".format(
            chosen(ctx)))
    if problem:
        return Finding(FAIL, "cni", problem, "set networking.cni in {} to a CNI the bundle "
                       "carries, or build a bundle with that add-on".format(ctx.cluster.source))
    return Finding(PASS, "cni", "{} from the bundle ({})".format(
        chosen(ctx), ctx.info.addons[chosen(ctx)].manifest))


def check_registry(ctx: Context) -> List[Finding]:
    """images.mode registry with a bundle that carries no distribution image serves nothing:
    every node then loads the archive (installer/steps/registry.py)."""
    from installer import registryserve
    from installer.steps.registry import registry_image

    if ctx.cluster.images_mode != "registry" or registry_image(ctx):
        return []
    return [Finding(WARN, "registry", "images.mode: registry, but the bundle carries no {} "
                    "image: no registry is served and every node loads the image archive"
                    .format(registryserve.IMAGE_REPOSITORY),
                    "add \"@registry\" to the recipe's roles.control-plane.images and rebuild "
                    "the bundle (docs/recipe.md; docs/cluster.md \"images: mode\")")]


def check_dns(ctx: Context) -> List[Finding]:
    """What CoreDNS will forward to, from this node's resolv.conf: installer/steps/coredns.py."""
    from installer.steps import coredns  # coredns -> loadbalancer -> hostprep -> this module

    return coredns.findings(ctx)


CHECKS: List[Callable] = [
    check_os, check_arch, check_kernel, check_resources, check_swap, check_selinux,
    check_firewalld, check_ports, check_modules, check_filesystem, check_disk, check_identity,
    check_hostname, check_time, check_el8, check_iptables, check_cluster, check_proxy,
    check_dns, check_cni, check_registry,
    check_packages, check_lb_images, check_outside_repos,
]




def findings(ctx: Context) -> List[Finding]:
    """Run every check; the order is the order of the report."""
    found: List[Finding] = []
    for check in CHECKS:
        result = check(ctx)
        found.extend(result if isinstance(result, list) else [result])
    return found


def run_preflight(ctx: Context) -> List[Finding]:
    """All findings; raises PreconditionError listing the failures when any check failed."""
    found = findings(ctx)
    failures = [f for f in found if f.level == FAIL]
    if failures:
        raise PreconditionError(
            "preflight failed on {} ({} check(s)):\n  ".format(ctx.node.name, len(failures))
            + "\n  ".join("{}: {}{}".format(f.check, f.message,
                                            " -> " + f.fix if f.fix else "") for f in failures),
            hint="nothing was changed; fix the above and re-run")
    return found


def describe(found: List[Finding], verbose: bool = True) -> List[str]:
    lines = []
    for f in found:
        if f.level != PASS or verbose:
            line = "[{}] {}: {}".format(f.level, f.check, f.message)
            if f.fix and f.level != PASS:
                line += "\n       -> " + f.fix
            lines.append(line)
    return lines
