"""A whole HA cluster on network-namespace hosts, shared by tests/e2e/test_ha_install.py and
scripts/demo: three control planes and a worker, each with its own --root, installed through
the real .pyz from `kubecrate build`, real keepalived + haproxy in front of the apiserver
stand-ins, and a failover drill that measures how long the endpoint is unreachable.

What is real and what stands in on these hosts is written in docs/testing.md: the kube
binaries are the mirror world's stand-ins (shipped in the bundle), systemd is its systemctl
stand-in (which really starts kubelet, keepalived and haproxy via scripts/lab/lbdaemon.py), and
yum/rpm/docker are scripts/lab/hoststandins.py (yum and rpm run the real dnf/rpm on each
root; Docker is recorded).
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from mirrorworld import releases
from mirrorworld import yum as yumworld

from lab import hostworld, osreleases, procs, py36
from lab.dnfroot import dnf, write_config
from lab.hostworld import (
    KERNEL,
    KERNEL_EL8,
    KERNEL_EL9,
    MW,
    STANDINS,
    dnf_into,
    write_host_files,
    write_kernel,
)
from lab.netns import Host, Lab

HERE = Path(__file__).resolve().parent
NAME = "k8s-1.23.17-el7"
NAMES = ("cp1", "cp2", "cp3", "w1")
LB_PORT = 8443
RECORDED = ("yum", "rpm", "modprobe", "sysctl", "swapoff", "setenforce", "hostnamectl",
            "firewall-cmd", "docker", "chronyc", "ctr", "crictl")


class Profile(NamedTuple):
    """What the lab's hosts are: the bundle (`kubecrate build` of manifests/<bundle>.yaml),
    each node's /etc/os-release (NAMES order), their kernel and their python3."""

    bundle: str
    os_releases: Tuple[str, ...]
    kernel: str
    python: str  # "3.6": CentOS 7's python3, EL8's platform-python; "3.9": EL9's python3


EL7 = Profile(NAME, (osreleases.CENTOS7,) * 4, KERNEL, "3.6")
# Rocky 9.4's bundle on Rocky, Alma and RHEL 9 hosts (its recipe's target.hosts), containerd
EL9 = Profile("k8s-1.30-el9-containerd", (osreleases.ROCKY94, osreleases.ALMA9,
                                          osreleases.RHEL9, osreleases.ROCKY94),
              KERNEL_EL9, "3.9")
# The CentOS 8 runbooks' profile: Docker 20.10 and dockershim on CentOS 8.5; the .pyz runs on
# CPython 3.6 as EL8's platform-python (a host without python3 starts it with that).
EL8 = Profile("k8s-1.23.17-el8", (osreleases.CENTOS8,) * 4, KERNEL_EL8, "3.6")
# (platform, base repo, its key, what the root gets beyond @core): the world's @core is bash
# and filesystem only, a real one also has util-linux (mount, nsenter: kubeadm wants them)
CORE = {KERNEL_EL8: ("8", "baseos", "centos8", ["util-linux"]),
        KERNEL_EL9: ("9", "rocky9-baseos", "rocky9", [])}


def vip(subnet: int) -> str:
    return "10.213.{}.100".format(subnet)


ADDRESSES = {"cp1": 11, "cp2": 12, "cp3": 13, "w1": 14}


def cluster_yaml(subnet: int, mode: str = "services", names: Sequence[str] = NAMES,
                 kube_proxy_mode: str = "", addresses: Optional[Dict[str, int]] = None) -> str:
    """The e2e cluster.yaml; `kube_proxy_mode` (e.g. "ipvs") adds a `kubeadm:` section;
    `addresses` (name -> last octet) overrides ADDRESSES, for labs of fewer hosts."""
    octets = dict(ADDRESSES, **(addresses or {}))
    nodes = "".join("  - {{name: {}, address: 10.213.{}.{}, role: {}}}\n".format(
        name, subnet, octets[name], "worker" if name.startswith("w") else "control-plane")
        for name in names)
    return """\
cluster_name: e2e
control_plane: {{vip: {vip}, port: {port}}}
networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}
firewall: disable
load_balancer: {{mode: {mode}, interface: eth0, router_id: 61, auth_pass: kcE2e01}}
nodes:
""".format(vip=vip(subnet), port=LB_PORT, mode=mode) + nodes + (
        "kubeadm: {{kube_proxy_mode: {}}}\n".format(kube_proxy_mode) if kube_proxy_mode else "")


def core_root(folder: Path, profile: Profile = EL7) -> Path:
    """A pristine @core root made by the real dnf from the mirror world, copied per host:
    CentOS 7's, or for EL9 Rocky 9.4's (BaseOS, its comps, its key)."""
    root = folder / "root"
    root.mkdir(parents=True)
    if profile.kernel == KERNEL:
        generated = yumworld.generate(MW / "www", MW / "work")
        dnf_into(root, MW / "www", {k: v for k, v in generated["repos"].items()
                                    if not k.startswith("docker")}, "group", "install", "core")
        return root
    major, repo, key_id, extra = CORE[profile.kernel]
    www = MW / "www"
    generated = yumworld.generate(www, MW / "work", yumworld.EL8)
    key = generated["gpgkeys"][key_id]["path"]
    conf, repos_d = write_config(folder / "dnf", {repo: (
        "file://{}".format(www / generated["repos"][repo]), ["file://{}".format(www / key)])})
    el = ("--releasever=" + major, "--setopt=module_platform_id=platform:el" + major)
    dnf(root, conf, repos_d, "-q", "--nodocs", *el, "group", "install", "core")
    if extra:
        dnf(root, conf, repos_d, "-q", "--nodocs", *el, "install", *extra)
    return root


class Node:
    """One namespace host prepared to run the installer: its root, fake kernel, PATH."""

    def __init__(self, host: Host, core: Path, shiv_root: Path, subnet: int,
                 session: Optional[Dict[str, str]] = None, cluster: str = "",
                 profile: Profile = EL7, os_release: str = osreleases.CENTOS7) -> None:
        self.host = host
        self.profile = profile
        self.session = dict(session or {})  # the operator's locale variables (none: env -i)
        top = host.dir
        self.test_host = hostworld.TestHost(top, top / "root", top / "kernel", top / "bin")
        shutil.copytree(core, self.test_host.root, symlinks=True)
        bin_dir = self.test_host.bin_dir
        bin_dir.mkdir()
        for name in RECORDED:
            (bin_dir / name).symlink_to(STANDINS)
        for name in ("keepalived", "haproxy"):
            (bin_dir / name).symlink_to(HERE / "lbdaemon.py")
        for script in (STANDINS, HERE / "lbdaemon.py"):
            script.chmod(0o755)
        for name in ("kubeadm", "kubelet", "kubectl"):  # what the binaries step installs
            (bin_dir / name).symlink_to(self.test_host.root / "usr/bin" / name)
        releases.write_host_tools(bin_dir)  # the systemctl stand-in
        (top / "state").mkdir()
        (top / "state/units.json").write_text(json.dumps(
            {"active": [], "enabled": [], "ports": [], "protocols": []}))
        write_kernel(self.test_host, host.address, profile.kernel)
        if profile.kernel == KERNEL_EL9:
            # iptables-nft's %post makes /usr/sbin/iptables an alternatives link to
            # iptables-nft (`alternatives --install`); the world's RPMs run no scriptlets.
            # Relative links: an absolute one would resolve on the test machine's own /etc.
            sbin = self.test_host.root / "usr/sbin"
            sbin.mkdir(parents=True, exist_ok=True)
            alternatives = self.test_host.root / "etc/alternatives"
            alternatives.mkdir(parents=True, exist_ok=True)
            (alternatives / "iptables").symlink_to("../../usr/sbin/iptables-nft")
            (sbin / "iptables").symlink_to("../../etc/alternatives/iptables")
        write_host_files(self.test_host, os_release)
        (top / "cluster.yaml").write_text(cluster or cluster_yaml(subnet))
        self.python_dir = py36.python3_shim(
            top / "python", py36.python39() if profile.python == "3.9" else None)
        self.env = {"PATH": "{}:{}".format(bin_dir, os.environ["PATH"]),
                    "KUBECRATE_PROBE_ROOT": str(self.test_host.kernel),
                    "KUBECRATE_STANDIN_STATE": str(top / "state"),
                    "KUBECRATE_STANDIN_LOG": str(top / "calls.jsonl"),
                    "KUBECRATE_SYSTEMCTL_RUN": "kubelet,keepalived,haproxy",
                    "KUBECRATE_STANDIN_TIMEOUT": "60", "KUBECRATE_STANDIN_MAX_LIFETIME": "1800",
                    # the kubelet stand-in records this namespace's interfaces for the per-node
                    # CNI model (scripts/mirrorworld/standins/_nodenet.py)
                    "KUBECRATE_STANDIN_NET": "netns",
                    "SHIV_ROOT": str(shiv_root)}

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def root(self) -> Path:
        return self.test_host.root

    def run(self, argv: Sequence[object], timeout: float = 900):
        """Run a command inside this host's namespace with its environment and root."""
        full = ["env"] + ["{}={}".format(k, v) for k, v in sorted(self.env.items())]
        full += ["KUBECRATE_ROOT=" + str(self.root)] + [str(a) for a in argv]
        return self.host.run(full, timeout=timeout, check=False)

    def pyz(self, built: Path, *args: object, timeout: float = 900):
        """The real .pyz, as an operator starts it on a CentOS 7 host: through its sh preamble,
        on CPython 3.6 (the host's python3), from `env -i` plus this node's session locale
        (`self.session`; the test's KUBECRATE_* knobs pass through)."""
        return self.host.run(self.pyz_argv(built, *args), timeout=timeout, check=False)

    def pyz_argv(self, built: Path, *args: object) -> List[str]:
        """The command line pyz() runs (for a test that starts it in the background)."""
        env = {k: v for k, v in os.environ.items() if k.startswith("KUBECRATE_")}
        env.update(self.env, **self.session)
        env.update(KUBECRATE_ROOT=str(self.root),
                   PATH="{}:{}".format(self.python_dir, self.env["PATH"]))
        full = ["env", "-i"] + ["{}={}".format(k, v) for k, v in sorted(env.items())]
        return full + [str(built / "kubecrate-installer.pyz")] + [str(a) for a in args]

    def python36_runs(self) -> str:
        """What the host's python3 ran on CPython 3.6 (one line of arguments per start)."""
        return py36.python36_runs(self.python_dir)

    def install(self, built: Path, *extra: object, fetch: bool = False,
                tar: Optional[Path] = None):
        """`install` of the profile's bundle (or `tar`); with `fetch`, no --bundle: the node
        fetches it from the bundle server the --join file (in `extra`) names."""
        top = self.host.dir
        tar = tar or built / (self.profile.bundle + ".tar")
        bundle = [] if fetch else ["--bundle", tar]
        return self.pyz(built, "install", *bundle, "--cluster", top / "cluster.yaml",
                        "--root", self.root, "--node", self.name, *extra)

    def logs(self) -> str:
        text = ""
        folder = self.root / "var/log/kubecrate-standin"
        for log in sorted(folder.glob("*.log")) if folder.exists() else []:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            text += "\n--- {} (last lines)\n{}".format(log.name, tail)
        return text


# The sessions operators start the installer from, one per node in NAMES order: ssh or cron
# without LANG (the first node, which runs kubeadm init), LANG=C, a Debian workstation's
# forwarded LANG=C.UTF-8, and a locale the host lacks (C.UTF-8 on CentOS 7's glibc).
SESSIONS: Tuple[Dict[str, str], ...] = ({}, {"LANG": "C"}, {"LANG": "C.UTF-8"},
                                        {"LANG": "kc_XX.UTF-8"})


def prepare(lab: Lab, core: Path, shiv_root: Path, subnet: int,
            mode: str = "services", kube_proxy_mode: str = "",
            profile: Profile = EL7) -> Dict[str, Node]:
    """One Node per lab host, of `profile`; cluster.yaml names exactly the lab's hosts."""
    cluster = cluster_yaml(subnet, mode, [host.name for host in lab.hosts], kube_proxy_mode,
                           {host.name: int(host.address.rsplit(".", 1)[1]) for host in lab.hosts})
    return {host.name: Node(host, core, shiv_root, subnet, SESSIONS[i % len(SESSIONS)],
                            cluster, profile,
                            profile.os_releases[i % len(profile.os_releases)])
            for i, host in enumerate(lab.hosts)}


def pods(node: Node, running: Sequence[str] = (), limit: float = 20.0) -> Dict[str, dict]:
    """The kubelet stand-in's static pods on `node`: name -> {phase, reason, message, pid},
    once the pods named in `running` are Running (or `limit` seconds have passed)."""
    path = node.root / "run/kubecrate-standin/pods.json"
    deadline = time.monotonic() + limit
    while True:
        try:
            found = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:  # written as the test reads it
            found = {}
        if all((found.get(n) or {}).get("phase") == "Running" for n in running) or \
                time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def get_nodes(client: Node, first: Node) -> List[List[str]]:
    """`kubectl get nodes` run on `client` through the VIP with the first node's admin.conf:
    rows of (name, status, ...)."""
    admin = first.root / "etc/kubernetes/admin.conf"
    done = client.host.run(["env", "KUBECRATE_ROOT=" + str(first.root),
                            first.root / "usr/bin/kubectl", "--kubeconfig", admin,
                            "get", "nodes"], timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError("kubectl get nodes failed: " + done.stderr)
    return [line.split() for line in done.stdout.splitlines()[1:]]


def flannel_mtus(first: Node) -> Dict[str, int]:
    """Per node, the VXLAN MTU the stand-ins' per-node CNI model gives flannel there
    (annotation kubecrate.standin/flannel-mtu of `kubectl get nodes -o json`)."""
    admin = first.root / "etc/kubernetes/admin.conf"
    done = first.run([first.root / "usr/bin/kubectl", "--kubeconfig", admin, "get", "nodes",
                      "-o", "json"], timeout=60)
    if done.returncode != 0:
        raise RuntimeError("kubectl get nodes failed: " + done.stderr)
    return {n["metadata"]["name"]: int(n["metadata"]["annotations"].get(
        "kubecrate.standin/flannel-mtu", 0)) for n in json.loads(done.stdout)["items"]}


def vip_holder(nodes: Dict[str, Node], address: str) -> str:
    holders = [n.name for n in nodes.values() if address in n.host.addresses()]
    return holders[0] if len(holders) == 1 else ""


DRILLS = {
    "kill": "keepalived, haproxy and the apiserver on the VIP holder are killed (SIGKILL)",
    "link-down": "the VIP holder drops off the network (its link goes down)",
}
LB_DAEMONS = ("/usr/sbin/keepalived", "/usr/sbin/haproxy")  # as scripts/lab/lbdaemon.py runs them
APISERVER_MARK = "--kubecrate-static-pod=kube-apiserver"  # the kubelet stand-in's static pod


def _kill_daemons(node: Node) -> List[int]:
    """SIGKILL the node's keepalived (all its processes), haproxy and apiserver, found by
    command lines that name the node's root. The kubelet stand-in restarts the apiserver a
    second later, as kubelet does with a static pod."""
    root = str(node.root)
    return procs.kill(lambda argv: root in " ".join(argv)
                      and (argv[0] in LB_DAEMONS or APISERVER_MARK in argv), rounds=1)


def _poll_around(nodes: Dict[str, Node], client: str, subnet: int, action, done,
                 limit: float) -> Tuple[float, str]:
    """Run `action()` while `client` polls https://VIP:8443/healthz every 100 ms; wait until
    `done()` names the expected VIP holder and the endpoint answers steadily again. Returns
    (seconds unreachable, holder); raises when that takes longer than `limit`."""
    url = "https://{}:{}/healthz".format(vip(subnet), LB_PORT)
    poller = nodes[client].host
    poller.start("poller", [sys.executable, str(HERE / "poller.py"), url, "0.1", str(limit + 5)])
    try:
        time.sleep(1.5)  # a baseline of successful polls
        moment = time.monotonic()
        action()
        deadline = moment + limit
        holder = ""
        while time.monotonic() < deadline and not holder:
            holder = done()
            time.sleep(0.1)
        answered = 0
        while time.monotonic() < deadline and answered < 10:  # back, and steadily so
            time.sleep(0.5)
            answered = sum(1 for at, ok in _samples(poller.log("poller")) if ok and at > moment)
        samples = poller.log("poller")
    finally:
        poller.stop("poller")
    if not holder:
        raise RuntimeError("the VIP did not settle within {:.0f} s".format(limit))
    if answered < 10:
        raise RuntimeError("{} did not answer again within {:.0f} s".format(url, limit))
    return outage(samples, moment), holder


def failover_drill(nodes: Dict[str, Node], client: str, subnet: int, how: str = "link-down",
                   limit: float = 15.0) -> Tuple[str, str, float]:
    """Take the VIP holder out (see DRILLS) and measure. Returns (old holder, new holder,
    seconds the endpoint was unreachable)."""
    address = vip(subnet)
    old = vip_holder(nodes, address)
    if not old:
        raise RuntimeError("no single node holds the VIP " + address)
    survivors = {name: node for name, node in nodes.items() if name != old}

    def action() -> None:
        if how == "link-down":
            nodes[old].host.link(False)
        elif not _kill_daemons(nodes[old]):
            raise RuntimeError("found no keepalived/haproxy/apiserver of " + old)

    window, new = _poll_around(nodes, client, subnet, action,
                               lambda: vip_holder(survivors, address), limit)
    return old, new, window


def bring_back(nodes: Dict[str, Node], client: str, subnet: int, name: str, how: str,
               limit: float = 15.0) -> Tuple[str, float]:
    """Undo a drill on `name` (link up, or its services started again as systemd would) and
    measure the endpoint meanwhile. Returns (VIP holder afterwards, seconds unreachable)."""
    address = vip(subnet)

    def action() -> None:
        if how == "link-down":
            nodes[name].host.link(True)
        else:
            nodes[name].run(["systemctl", "restart", "keepalived", "haproxy", "kubelet"],
                            timeout=60)

    def settled() -> str:
        holder = vip_holder(nodes, address)
        # keepalived preempts: the first node takes the VIP back once its checks pass
        return holder if holder == name or time.monotonic() > started + 8 else ""

    started = time.monotonic()
    window, holder = _poll_around(nodes, client, subnet, action, settled, limit)
    return holder, window


def outage_during(nodes: Dict[str, Node], client: str, subnet: int, action,
                  limit: float) -> float:
    """Run `action()` while `client` polls https://VIP:8443/healthz every 100 ms (for at most
    `limit` seconds); the longest time the endpoint did not answer meanwhile."""
    url = "https://{}:{}/healthz".format(vip(subnet), LB_PORT)
    poller = nodes[client].host
    poller.start("poller", [sys.executable, str(HERE / "poller.py"), url, "0.1", str(limit)])
    try:
        time.sleep(1.5)  # a baseline of successful polls
        moment = time.monotonic()
        action()
        time.sleep(1.0)
        samples = poller.log("poller")
    finally:
        poller.stop("poller")
    return outage(samples, moment)


def _samples(text: str) -> List[Tuple[float, bool]]:
    points = []
    for line in text.splitlines():
        parts = line.split()  # start, ok[, end] (scripts/lab/poller.py)
        if len(parts) in (2, 3):
            points.append((float(parts[0]), parts[1] == "1"))
    return points


def outage(samples: str, since: float) -> float:
    """The longest run of failed polls after `since`, in seconds (0.0 when none failed)."""
    points = _samples(samples)
    longest, start = 0.0, None
    for moment, ok in points:
        if moment < since:
            continue
        if not ok and start is None:
            start = moment
        elif ok and start is not None:
            longest, start = max(longest, moment - start), None
    if start is not None and points:
        longest = max(longest, points[-1][0] - start)
    return longest
