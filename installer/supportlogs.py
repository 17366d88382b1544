"""`collect-logs --out FILE`: one archive with what a support engineer asks for first, with the
secrets taken out.

What goes in (each item is optional: what a host lacks is listed in INDEX.txt with why):
- kubecrate's own record: state.json and the installer's run logs (/var/log/kubecrate);
- the host: /etc/os-release, `rpm -qa`, the tail of `dmesg`, `ip addr`, `ip route`, listening
  sockets (`ss -ltnp`);
- the journals of kubelet, docker, containerd, keepalived and haproxy (`journalctl -u`);
- what kubecrate rendered: kubeadm configs, static-pod manifests, kubelet flags and config,
  keepalived/haproxy/containerd/docker/crictl configs, the yum repo file, sysctl and module
  files, kubelet.conf (its key data removed);
- the cluster as this node sees it, on control-plane nodes: `kubectl get` of nodes, pods and
  events in every namespace; the containers of the runtime.

What never goes in: private key files (/etc/kubernetes/pki/*.key, sa.key), admin.conf and
/root/.kube/config (cluster-admin credentials), join.yaml (nothing but join secrets). Every
text that does go in passes through installer.format.redact, with this node's join material
registered first, so the bootstrap token's secret and the certificate key are masked wherever
they appear, labelled or not; kubeconfig key data, service-account tokens and keepalived's
auth_pass are masked by their labels.

The archive is written to a temporary file beside FILE and renamed at the end, mode 0600: a
failed or interrupted run leaves no partial archive under FILE's name.
"""

import glob
import io
import os
import tarfile
import tempfile
import time
from typing import List, Optional, Tuple

from installer import joinfile
from installer.format.errors import KubecrateError
from installer.format.redact import redact, remember
from installer.host import Host
from installer.runner import CommandFailed, Runner
from installer.steps import kubeadm as kubeadm_step

MAX_FILE = 4 << 20  # bytes kept from the end of one file or command output
ADMIN_CONF = "/etc/kubernetes/admin.conf"
JOURNAL_UNITS = ("kubelet", "docker", "containerd", "keepalived", "haproxy")

# Host paths (globs) collected as text, in this order.
FILES = (
    "/var/lib/kubecrate/state.json",
    "/var/log/kubecrate/*.log",
    "/etc/os-release",
    "/etc/kubernetes/kubecrate/kubeadm-*.yaml",
    "/etc/kubernetes/manifests/*.yaml",
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/sysconfig/kubelet",
    "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/keepalived/keepalived.conf",
    "/etc/keepalived/check_apiserver.sh",
    "/usr/libexec/keepalived/check_apiserver.sh",  # selinux: enforcing (installer/lbconfig.py)
    "/etc/haproxy/haproxy.cfg",
    "/etc/containerd/config.toml",
    "/etc/docker/daemon.json",
    "/etc/crictl.yaml",
    "/etc/yum.repos.d/kubecrate.repo",
    "/etc/sysctl.d/*.conf",
    "/etc/modules-load.d/*.conf",
    "/etc/hosts",
)
# Never collected, even where a glob above would match them.
NEVER = ("/etc/kubernetes/pki/", "/etc/kubernetes/admin.conf", "/root/.kube/",
         kubeadm_step.JOIN_FILE)


def commands(root: str, control_plane: bool) -> List[Tuple[str, List[str]]]:
    """(archive name, argv) of every command whose output is collected."""
    rpm = ["rpm", "-qa"] if os.path.abspath(root) == "/" else ["rpm", "--root", root, "-qa"]
    found = [("host/rpm-qa.txt", rpm + ["--qf", "%{NAME}-%{EPOCHNUM}:%{VERSION}-%{RELEASE}."
                                                "%{ARCH}\\n"]),
             ("host/dmesg.txt", ["dmesg"]),
             ("host/ip-addr.txt", ["ip", "addr"]),
             ("host/ip-route.txt", ["ip", "route"]),
             ("host/ss-ltnp.txt", ["ss", "-ltnp"])]
    found += [("journal/{}.txt".format(unit), ["journalctl", "-u", unit, "--no-pager",
                                               "-n", "3000"]) for unit in JOURNAL_UNITS]
    found += [("runtime/docker-ps.txt", ["docker", "ps", "-a"]),
              ("runtime/crictl-ps.txt", ["crictl", "ps", "-a"])]
    if control_plane:
        kubectl = ["kubectl", "--kubeconfig", ADMIN_CONF]
        found += [("cluster/nodes.txt", kubectl + ["get", "nodes", "-o", "wide"]),
                  ("cluster/pods.txt", kubectl + ["get", "pods", "-A", "-o", "wide"]),
                  ("cluster/events.txt", kubectl + ["get", "events", "-A"])]
    return found


def _remember_join_material(host: Host) -> None:
    """Register this node's recorded join secrets with the redactor."""
    try:
        join = kubeadm_step.read_join(host)
    except joinfile.JoinFileError:
        return
    if join:
        remember(join.token, join.token.split(".")[-1], join.certificate_key)


def _tail(data: bytes) -> Tuple[bytes, bool]:
    return (data[-MAX_FILE:], True) if len(data) > MAX_FILE else (data, False)


class Collected:
    """The members of the archive, and the index of what was and was not collected."""

    def __init__(self) -> None:
        self.members = []  # type: List[Tuple[str, bytes]]
        self.index = []  # type: List[str]

    def add(self, name: str, data: bytes, source: str) -> None:
        data, cut = _tail(data)
        text = redact(data.decode("utf-8", "replace"))
        self.members.append((name, text.encode("utf-8")))
        self.index.append("{}  <- {}{}".format(name, source, " (last 4 MiB)" if cut else ""))

    def skip(self, source: str, why: str) -> None:
        self.index.append("-  {}: {}".format(source, why))


def _never(path: str) -> bool:
    return any(path == n or path.startswith(n) for n in NEVER)


def collect(root: str, out: str, now: Optional[float] = None) -> List[str]:
    """Write the archive to `out`; returns the index lines (what went in, what did not)."""
    host = Host(root, dry_run=True)
    runner = Runner(root, dry_run=True)
    _remember_join_material(host)
    control_plane = host.exists(ADMIN_CONF)
    found = Collected()
    for pattern in FILES:
        matches = sorted(glob.glob(host.path(pattern)))
        if not matches:
            found.skip(pattern, "not on this host")
        for path in matches:
            inside = "/" + os.path.relpath(path, os.path.abspath(root))
            if _never(inside) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as err:
                found.skip(inside, "cannot read: {}".format(err.strerror))
                continue
            found.add("files" + inside, data, inside)
    for name, argv in commands(root, control_plane):
        shown = " ".join(argv)
        try:
            result = runner.query(argv, timeout=60)
        except CommandFailed as err:
            found.skip(shown, str(err).splitlines()[0])
            continue
        if result.returncode == 127:
            found.skip(shown, result.stderr.strip())
            continue
        text = "$ {}\n# exit {}\n{}{}".format(shown, result.returncode, result.stdout,
                                              ("\n# stderr:\n" + result.stderr)
                                              if result.stderr.strip() else "")
        found.add(name, text.encode("utf-8"), shown)
    if not control_plane:
        found.skip("kubectl get nodes/pods/events", "not a control-plane node (no admin.conf)")
    found.skip("private keys, admin.conf, /root/.kube/config, join.yaml", "never collected")
    _write(out, found, now if now is not None else time.time())
    return found.index


def _write(out: str, found: Collected, now: float) -> None:
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise KubecrateError("cannot write {}: the folder {} does not exist".format(out, folder),
                             hint="create it, or pass --out with a path in an existing folder")
    top = "kubecrate-logs-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    index = ("kubecrate collect-logs, {}\nsecrets removed: bootstrap token, certificate "
             "key, private keys, kubeconfig key data and tokens, keepalived auth_pass\n\n{}\n"
             .format(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                     "\n".join(found.index))).encode("utf-8")
    handle, temp = tempfile.mkstemp(prefix=".collect-logs-", suffix=".part", dir=folder)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, data in [("INDEX.txt", index)] + found.members:
                info = tarfile.TarInfo("{}/{}".format(top, name))
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.rename(temp, out)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise

