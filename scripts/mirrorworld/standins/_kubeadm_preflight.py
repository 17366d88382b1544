"""kubeadm 1.23's preflight checks that depend on the host (cmd/kubeadm/app/preflight/checks.go).

Each check returns (name, message) pairs; kubeadm prints the ignored ones as warnings and fails
on the rest (RunChecks, `--ignore-preflight-errors` and nodeRegistration.ignorePreflightErrors,
case-insensitive, `all` for every check). What is modelled, per check of checks.go:

- NumCPU (init, control-plane join): ControlPlaneNumCPU = 2, "the number of available CPUs %d is
  less than the required %d".
- Mem (init, control-plane join): ControlPlaneMem = 1700 MB, "the system RAM (%d MB) is less
  than the minimum %d MB".
- Port-N (PortOpenCheck): the apiserver's bind port, 10259 (scheduler), 10257
  (controller-manager), 2379/2380 (local etcd) on control planes, 10250 (kubelet) everywhere:
  "Port %d is in use". The stand-in binds the node's own address, not every address, so that
  loopback "hosts" of one test machine do not see each other's ports.
- Swap (SwapCheck): "running with swap on is not supported. Please disable swap".
- FileContent--proc-sys-net-bridge-bridge-nf-call-iptables and FileContent--proc-sys-net-ipv4-
  ip_forward (addIPv4Checks): "%s does not exist" / "%s contents are not set to %s".
- FileExisting-<tool> (InPathCheck via addExecChecks): conntrack, ip, iptables, mount, nsenter
  are mandatory ("%s not found in system path"); ebtables, ethtool, socat, tc, touch only warn;
  crictl is mandatory with a CRI socket (not for dockershim).
- CRI (ContainerRuntimeCheck, with a CRI socket): the runtime must answer its CRI service,
  "container runtime is not running: %v" with the connection error of _node.cri_problem
  (containerd stopped, or its CRI plugin disabled as in containerd.io's stock config).
- IsDockerSystemdCheck (dockershim): a warning 'detected "%s" as the Docker cgroup driver. The
  recommended driver is "systemd".'
- ImagePull (RunPullImagesCheck on init and control-plane join, ImagePullCheck.Check): with
  imagePullPolicy Never every image is skipped ("skipping pull of image"); otherwise each image
  absent from the runtime (ImageExists) is pulled, which fails offline: "failed to pull image %s".
"""

import _node
from _common import MINOR, free_port

CONTROL_PLANE_CPUS = 2
CONTROL_PLANE_MEM_MB = 1700
KUBELET_PORT = 10250
SCHEDULER_PORT = 10259
CONTROLLER_MANAGER_PORT = 10257
ETCD_PORTS = (2379, 2380)
MANDATORY = ("conntrack", "ip", "iptables", "mount", "nsenter")
OPTIONAL = ("ebtables", "ethtool", "socat", "tc", "touch")
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def ports(host: str, numbers) -> list:
    return [("Port-%d" % p, "Port %d is in use" % p) for p in numbers if not free_port(host, p)]


def control_plane(host: str, local_etcd: bool = True) -> list:
    """NumCPU, Mem and the control-plane ports (init and control-plane join); etcd's only for
    a local etcd (RunInitNodeChecks: `if cfg.Etcd.Local != nil`)."""
    errors = []
    cpus = _node.cpu_count()
    if cpus < CONTROL_PLANE_CPUS:
        errors.append(("NumCPU", "the number of available CPUs %d is less than the required %d"
                       % (cpus, CONTROL_PLANE_CPUS)))
    mem = _node.memory_mb()
    if mem < CONTROL_PLANE_MEM_MB:
        errors.append(("Mem", "the system RAM (%d MB) is less than the minimum %d MB"
                       % (mem, CONTROL_PLANE_MEM_MB)))
    return errors + ports(host, (SCHEDULER_PORT, CONTROLLER_MANAGER_PORT) + (
        ETCD_PORTS if local_etcd else ()))


def _file_content(path: str, want: str):
    text = _node.read_probe(path)
    name = "FileContent-" + path.replace("/", "-")
    if text is None:
        return (name, "%s does not exist" % path)
    if text.strip() != want:
        return (name, "%s contents are not set to %s" % (path, want))
    return None


def common(cri_socket: str, host: str):
    """addCommonChecks + addIPv4Checks: (errors, warnings) for init and every join."""
    errors, warnings = [], []
    if _node.swap_lines():
        errors.append(("Swap", "running with swap on is not supported. Please disable swap"))
    docker = MINOR <= 23 and _node.is_docker(cri_socket)
    problem = None if _node.is_docker(cri_socket) else _node.cri_problem(
        cri_socket if "://" in cri_socket else "unix://" + cri_socket)
    if problem:
        errors.append(("CRI", "container runtime is not running: " + problem))
    for tool in MANDATORY + (() if docker else ("crictl",)):
        if not _node.which(tool):
            errors.append(("FileExisting-" + tool, "%s not found in system path" % tool))
    for tool in OPTIONAL:
        if not _node.which(tool):
            warnings.append(("FileExisting-" + tool, "%s not found in system path" % tool))
    errors += ports(host, (KUBELET_PORT,))
    for path in (BRIDGE_NF, IP_FORWARD):
        problem = _file_content(path, "1")
        if problem:
            errors.append(problem)
    if docker:
        driver = _node.docker_cgroup_driver()
        if driver and driver != "systemd":
            warnings.append(("IsDockerSystemdCheck", 'detected "%s" as the Docker cgroup driver. '
                             'The recommended driver is "systemd". Please follow the guide at '
                             "https://kubernetes.io/docs/setup/cri/" % driver))
    return errors, warnings


def image_pull(images: list, policy: str, cri_socket: str) -> list:
    """ImagePullCheck: nothing with policy Never, else an offline pull of every absent image."""
    if policy == "Never":
        return []
    errors = []
    for image in images:
        if _node.image_exists(image, cri_socket):
            continue
        first = image.split("/")[0]
        registry = first if "/" in image and "." in first else "registry-1.docker.io"
        errors.append(("ImagePull", "failed to pull image %s: output: Error response from "
                       'daemon: Get "https://%s/v2/": dial tcp: lookup %s: no such host\n, '
                       "error: exit status 1" % (image, registry, registry)))
    return errors
