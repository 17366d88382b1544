"""What the kubelet and kubeadm stand-ins ask of the host they run on: its kernel facts, its
binaries and its container runtime (docs/testing.md, "What the host must offer").

- Kernel facts (/proc/swaps, /proc/sys/..., /proc/cpuinfo, /proc/meminfo) are read under
  $KUBECRATE_PROBE_ROOT when the tests give a fake kernel, else from the machine's /proc.
- Binaries are looked up on the host's PATH folders under the root (a test root's
  /usr/sbin/conntrack comes from the RPM the installer installed), else on PATH.
- The runtime is asked the way kubeadm 1.23 asks it (cmd/kubeadm/app/util/runtime/runtime.go:
  DockerRuntime.ImageExists runs `docker inspect IMAGE`, CRIRuntime.ImageExists runs
  `crictl -r SOCKET inspecti IMAGE`), so the answer comes from that host's own image store.
"""

import json
import os
import re
import shutil
import subprocess

from _common import root, rooted

HOST_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DOCKERSHIM = "/var/run/dockershim.sock"


def probe(path: str) -> str:
    """A kernel file: under $KUBECRATE_PROBE_ROOT if set (the tests' fake kernel)."""
    top = os.environ.get("KUBECRATE_PROBE_ROOT")
    return os.path.join(top, path.lstrip("/")) if top else path


def read_probe(path: str):
    try:
        with open(probe(path)) as handle:
            return handle.read()
    except OSError:
        return None


def swap_lines() -> list:
    """The entries of /proc/swaps below its header (an empty list: swap is off)."""
    text = read_probe("/proc/swaps") or ""
    return [line for line in text.splitlines()[1:] if line.strip()]


def cpu_count() -> int:
    text = read_probe("/proc/cpuinfo")
    if text is not None and os.environ.get("KUBECRATE_PROBE_ROOT"):
        return sum(1 for line in text.splitlines() if line.startswith("processor"))
    return os.cpu_count() or 1


def memory_mb() -> int:
    """MemTotal in MiB, as kubeadm's MemCheck computes it (syscall.Sysinfo Totalram / MiB)."""
    for line in (read_probe("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def which(name: str):
    """An executable on the host's own PATH folders: under the root for a test host (so what
    the installer installed there counts, not the test machine's tools), else PATH."""
    if root() == "/":
        return shutil.which(name)
    for folder in HOST_PATH:
        path = rooted(folder + "/" + name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _run(argv: list, timeout: float = 30.0):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def is_docker(socket: str) -> bool:
    return socket in (DOCKERSHIM, "unix://" + DOCKERSHIM) or socket.endswith("docker.sock")


def image_exists(image: str, socket: str = DOCKERSHIM) -> bool:
    """kubeadm's ContainerRuntime.ImageExists: `docker inspect` or `crictl inspecti`."""
    if is_docker(socket):
        return _run(["docker", "inspect", image]).returncode == 0
    return _run(["crictl", "-r", socket, "inspecti", image]).returncode == 0


def crictl_pull(image: str, socket: str):
    """The CRI's PullImage as `crictl -r SOCKET pull IMAGE` (the kubelet's image manager)."""
    return _run(["crictl", "-r", socket, "pull", image], timeout=180.0)


def docker_cgroup_driver():
    """`docker info`'s CgroupDriver (what the kubelet's dockershim compares with its own), or
    None when docker does not answer."""
    done = _run(["docker", "info", "--format", "{{.CgroupDriver}}"])
    return done.stdout.strip() or None if done.returncode == 0 else None


def containerd_config() -> str:
    try:
        with open(rooted("/etc/containerd/config.toml")) as handle:
            return handle.read()
    except OSError:
        return ""


def containerd_cgroup_driver() -> str:
    """runc's SystemdCgroup in containerd's CRI config: true -> systemd, else cgroupfs."""
    for line in containerd_config().splitlines():
        words = line.replace(" ", "")
        if words.startswith("SystemdCgroup="):
            return "systemd" if words.split("=", 1)[1].lower() == "true" else "cgroupfs"
    return "cgroupfs"


def containerd_unit_active():
    """True/False from the systemctl stand-in's record of containerd.service on this root
    (<root>/run/kubecrate-standin/units/containerd.json); None where that stand-in keeps no
    records (the tests that drive the kube stand-ins without systemd judge nothing here)."""
    folder = rooted("/run/kubecrate-standin/units")
    if not os.path.isdir(folder):
        return None
    try:
        with open(os.path.join(folder, "containerd.json")) as handle:
            return bool(json.load(handle).get("active"))
    except (OSError, ValueError):
        return False


def containerd_disabled_plugins() -> list:
    """config.toml's top-level disabled_plugins (containerd.io's stock file has ["cri"])."""
    found = re.search(r"(?m)^disabled_plugins\s*=\s*\[([^\]]*)\]", containerd_config())
    return re.findall(r"[\"']([^\"']+)[\"']", found.group(1)) if found else []


def cri_problem(endpoint: str):
    """Why a CRI client (the kubelet, kubeadm's preflight, crictl) cannot talk to containerd
    on `endpoint`, in the words of the gRPC error it gets, or None:
    - containerd not running: "code = Unavailable desc = connection error: ... dial unix
      SOCK: connect: no such file or directory";
    - the CRI plugin disabled (`disabled_plugins = ["cri"]`, the stock config of containerd.io,
      docker/containerd-packaging common/containerd.toml): containerd answers, but not the CRI
      service: "code = Unimplemented desc = unknown service runtime.v1.RuntimeService".
    Both come wrapped as kubernetes pkg/kubelet/cri/remote (remote_runtime.go,
    validateServiceConnection) words them: 'validate CRI v1 runtime API for endpoint %q: %w'."""
    sock = endpoint.replace("unix://", "")
    if containerd_unit_active() is False:
        why = ('rpc error: code = Unavailable desc = connection error: desc = "transport: '
               'Error while dialing: dial unix %s: connect: no such file or directory"' % sock)
    elif {"cri", "io.containerd.grpc.v1.cri"} & set(containerd_disabled_plugins()):
        why = ("rpc error: code = Unimplemented desc = unknown service "
               "runtime.v1.RuntimeService")
    else:
        return None
    return 'validate service connection: validate CRI v1 runtime API for endpoint "%s": %s' % (
        endpoint, why)


def containerd_sandbox_image(default: str) -> str:
    for line in containerd_config().splitlines():
        words = line.replace(" ", "")
        if words.startswith("sandbox_image="):
            return words.split("=", 1)[1].strip("\"'")
    return default




def which_on_path(name: str):
    """A host daemon a static pod stands for (keepalived, haproxy): from PATH only, since a
    test root's /usr/sbin holds the mirror world's placeholder files, not programs."""
    return shutil.which(name)
