"""The kubelet stand-in: `--version`, and a node agent that runs every static pod.

Started by the systemctl stand-in with the command line systemd builds from kubelet.service, its
10-kubeadm.conf drop-in, /var/lib/kubelet/kubeadm-flags.env and /etc/sysconfig/kubelet (or, started
directly by kubeadm where PATH has no systemctl stand-in, with the flags of those two files). It
refuses to start where the real kubelet of its version refuses (logged, exit 1):

- flags the version no longer has (--network-plugin from 1.24, --container-runtime from 1.27)
  and a dockershim endpoint with --container-runtime=remote (kubeadm 1.23's
  cmd/kubeadm/app/phases/kubelet/flags.go);
- swap on while failSwapOn (default true): pkg/kubelet/cm/container_manager_linux.go,
  NewContainerManager, "running with swap on is not supported, please disable swap! or set
  --fail-swap-on flag to false. /proc/swaps contained: ...";
- with dockershim, a cgroup driver other than Docker's (`docker info`):
  pkg/kubelet/dockershim/docker_service.go, NewDockerService, "misconfiguration: kubelet cgroup
  driver: %q is different from docker cgroup driver: %q";
- with a CRI endpoint, containerd not running or its CRI plugin disabled (`disabled_plugins =
  ["cri"]`): pkg/kubelet/cri/remote/remote_runtime.go, "validate CRI v1 runtime API for
  endpoint %q" (_node.cri_problem).

Then every manifest in staticPodPath (config.yaml, default /etc/kubernetes/manifests) is a pod
(pkg/kubelet/config/file.go reads every file of the folder that does not start with a dot). A
pod starts only when its sandbox can be made (the pause image is in this host's runtime:
dockershim's ensureSandboxImageExists, else "Failed to create pod sandbox"), its hostPath
volumes of type File/Directory exist (pkg/volume/hostpath: "hostPath type check failed"), and
every container image is in the runtime (pkg/kubelet/images/image_manager.go EnsureImageExists:
ErrImageNeverPull for pullPolicy Never, else an offline pull fails and the pod stays in
ImagePullBackOff). Pod states are kept in <root>/run/kubecrate-standin/pods.json and logged.

What a running pod runs: kube-apiserver -> the apiserver stand-in (pid kube-apiserver.pid);
etcd -> the real etcd on the manifest's flags when the test host has one
($KUBECRATE_TEST_ETCD_BIN, standins/_etcdpod.py);
an image named */keepalived or */haproxy -> the host's `keepalived` / `haproxy` from PATH with
`--kubecrate-root=ROOT` (scripts/lab/lbdaemon.py runs the real daemons on the mounted configs); any
other pod is only marked Running. A dead process is restarted 1 s later, a changed manifest
restarts it, a removed one stops it; stopping the kubelet leaves the "containers" running.
"""

import json
import os
import re
import shlex
import sys
import time

import _etcdpod
import _node
import _pulls
import _yaml
from _common import (
    MINOR,
    VERSION,
    StandinError,
    fail,
    read_pid,
    read_text,
    root,
    rooted,
    spawn_detached,
    stop_pid,
    write_file,
)

MANIFESTS = "/etc/kubernetes/manifests"
MANIFEST = MANIFESTS + "/kube-apiserver.yaml"
CONFIG = "/var/lib/kubelet/config.yaml"
FLAGS_ENV = "/var/lib/kubelet/kubeadm-flags.env"
SYSCONFIG = "/etc/sysconfig/kubelet"
STATUS = "/run/kubecrate-standin/pods.json"
DEFAULT_PAUSE = "k8s.gcr.io/pause:3.6" if MINOR <= 23 else "registry.k8s.io/pause:3.9"
MAX_LIFETIME = float(os.environ.get("KUBECRATE_STANDIN_MAX_LIFETIME", str(6 * 3600)))
IMAGE_RECHECK = 2.0  # seconds between runtime queries for a waiting pod
# An image found is asked about again only this rarely: the real kubelet asks the runtime when it
# starts a container (pkg/kubelet/images/image_manager.go EnsureImageExists, from
# kuberuntime_container.go startContainer), not while the container runs; asking every
# IMAGE_RECHECK for each running static pod kept a `docker inspect` or `crictl inspecti`
# process starting several times a second on every control plane of the e2e labs.
IMAGE_RECHECK_FOUND = 60.0
OFFLINE = ('Error response from daemon: Get "https://%s/v2/": dial tcp: lookup %s: no such '
           'host')


def log(msg: str) -> None:
    sys.stderr.write("%s kubelet: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def _env_value(path: str, key: str) -> str:
    """KEY's value in an EnvironmentFile (one shell word, quotes removed), or ''."""
    try:
        text = read_text(rooted(path))
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith(key + "="):
            words = shlex.split(line.split("=", 1)[1])
            return words[0] if words else ""
    return ""


def kubeadm_flags() -> list:
    """Flags of kubeadm-flags.env and /etc/sysconfig/kubelet: the command line when the kubelet
    is started without systemd (kubeadm's fallback on a machine without the stand-in)."""
    return (["--config=" + CONFIG] + shlex.split(_env_value(FLAGS_ENV, "KUBELET_KUBEADM_ARGS"))
            + shlex.split(_env_value(SYSCONFIG, "KUBELET_EXTRA_ARGS")))


def parse_flags(flags: list) -> dict:
    """--name=value flags (last one wins, as pflag does); a bare --flag is "true"."""
    opts = {}
    for flag in flags:
        if flag.startswith("--") and not flag.startswith("--kubecrate-"):
            name, _, value = flag[2:].partition("=")
            opts[name] = value if "=" in flag else "true"
    return opts


def check_flags(opts: dict) -> None:
    """Fail as the real kubelet of this version does on a flag set it cannot run with."""
    if MINOR >= 24 and "network-plugin" in opts:
        raise StandinError("Error: failed to parse kubelet flag: unknown flag: --network-plugin")
    if MINOR >= 27 and "container-runtime" in opts:
        raise StandinError("Error: failed to parse kubelet flag: unknown flag: --container-runtime")
    endpoint = opts.get("container-runtime-endpoint", "")
    if MINOR <= 23 and opts.get("container-runtime") == "remote" and "dockershim" in endpoint:
        # dockershim only exists when the kubelet itself runs it (--container-runtime=docker).
        sock = endpoint.replace("unix://", "")
        raise StandinError(
            'failed to run Kubelet: unable to determine runtime API version: rpc error: code = '
            'Unavailable desc = connection error: desc = "transport: Error while dialing dial '
            'unix %s: connect: no such file or directory"' % sock)


def dockershim(opts: dict) -> bool:
    return MINOR <= 23 and opts.get("container-runtime", "docker") == "docker"


def check_node(opts: dict, config: dict) -> None:
    """The start-up refusals that depend on the host: swap, the cgroup driver, a CRI runtime
    that does not answer."""
    fail_swap_on = config.get("failSwapOn", True)
    if "fail-swap-on" in opts:
        fail_swap_on = opts["fail-swap-on"] != "false"
    swaps = _node.swap_lines()
    if fail_swap_on and swaps:
        raise StandinError(
            "failed to run Kubelet: running with swap on is not supported, please disable swap! "
            "or set --fail-swap-on flag to false. /proc/swaps contained: %s" % swaps)
    driver = opts.get("cgroup-driver") or config.get("cgroupDriver") or "cgroupfs"
    if not dockershim(opts):
        # cmd/kubelet/app/server.go run(): the CRI runtime is dialled and validated before
        # anything else runs; a failure ends the kubelet ("failed to run Kubelet: %w").
        endpoint = opts.get("container-runtime-endpoint") or \
            config.get("containerRuntimeEndpoint") or "unix:///run/containerd/containerd.sock"
        problem = _node.cri_problem(endpoint) if not _node.is_docker(endpoint) else None
        if problem:
            raise StandinError("failed to run Kubelet: " + problem)
    if dockershim(opts):
        docker = _node.docker_cgroup_driver()
        if docker is None:
            raise StandinError(
                "failed to run Kubelet: failed to create kubelet: failed to get docker version: "
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the "
                "docker daemon running?")
        if docker != driver:
            raise StandinError(
                'failed to run Kubelet: failed to create kubelet: misconfiguration: kubelet cgroup '
                'driver: "%s" is different from docker cgroup driver: "%s"' % (driver, docker))


def load_config(path: str) -> dict:
    docs = _yaml.load_all(read_text(rooted(path)))
    return docs[0] if docs and isinstance(docs[0], dict) else {}


def manifest_flags(path: str) -> dict:
    pod = _yaml.load_all(read_text(path))[0]
    command = pod["spec"]["containers"][0]["command"]
    return dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)


def manifest_version(path: str) -> str:
    """The release a static pod runs: its image's tag (kube-apiserver:v1.31.14), else this
    kubelet's own version."""
    pod = _yaml.load_all(read_text(path))[0]
    tag = str(pod["spec"]["containers"][0].get("image", "")).rpartition(":")[2]
    return tag if re.match(r"\Av1\.\d+\.\d+\Z", tag) else VERSION


def node_api():
    """(name, call) once this kubelet is registered (its kubelet.conf names
    system:node:NAME): `call(method, path, body=None)` answers the apiserver's JSON with the
    node's credentials, raising StandinError on an error status; else None."""
    doc = _yaml.load_all(read_text(rooted("/etc/kubernetes/kubelet.conf")))[0]
    user = str((doc.get("users") or [{}])[0].get("name") or "")
    if not user.startswith("system:node:"):
        return None
    import _pki
    from _common import request

    kc = _pki.read_kubeconfig(rooted("/etc/kubernetes/kubelet.conf"))
    auth = dict(ca_pem=kc["ca"], client=(kc["cert"], kc["key"]), timeout_s=3)

    def call(method, path, body=None):
        got = request(kc["server"], method, path, body, **auth)
        if got.status != 200:
            raise StandinError("%s %s: %s" % (method, path, got.status))
        return got.json()
    return user[len("system:node:"):], call


API_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
              StandinError, _yaml.YAMLError)


def report_version(last: list) -> None:
    """What the real kubelet's node status sync does for nodeInfo (pkg/kubelet/nodestatus/
    setters.go VersionInfo: kubeletVersion is the running binary's): once registered (its
    kubelet.conf names it system:node:NAME), the Node says this kubelet's version. Tried every
    few seconds (`last` holds the time of the last try) until it has."""
    if last and (last[0] is None or time.monotonic() - last[0] < 5.0):
        return
    last[:] = [time.monotonic()]
    try:
        api = node_api()
        if api is None:
            return
        name, call = api
        node = call("GET", "/api/v1/nodes/" + name)
        info = node.setdefault("status", {}).setdefault("nodeInfo", {})
        if info.get("kubeletVersion") != VERSION:
            info["kubeletVersion"] = VERSION
            call("PUT", "/api/v1/nodes/" + name, node)
            log("node %s: kubeletVersion %s" % (name, VERSION))
        last[:] = [None]  # reported: done for this run
    except API_ERRORS:
        return


def pull_images(pulls: "_pulls.Pulls", node: "Node") -> None:
    """With a CRI endpoint, once registered: the images of the pods every node runs, pulled
    where the runtime lacks them (_pulls.py)."""
    if dockershim(node.opts):
        return
    try:
        api = node_api()
        if api is None:
            return

        def pull(image):
            done = _node.crictl_pull(image, node.socket)
            node.cache.pop(image, None)
            return done.returncode == 0, (done.stdout or done.stderr).strip()
        name, call = api

        def report(lacking):
            found = call("GET", "/api/v1/nodes/" + name)
            notes = found.setdefault("metadata", {}).setdefault("annotations", {})
            notes[_pulls.ANNOTATION] = json.dumps(lacking)
            call("PUT", "/api/v1/nodes/" + name, found)
        pulls.step(call, node.has, pull, log, report)
    except API_ERRORS:
        return


class Node:
    """This kubelet's view of the runtime: pause image, image presence (briefly cached)."""

    def __init__(self, opts: dict, config: dict):
        self.opts = opts
        self.socket = _node.DOCKERSHIM if dockershim(opts) else \
            opts.get("container-runtime-endpoint", "unix:///run/containerd/containerd.sock")
        if dockershim(opts):
            self.pause = opts.get("pod-infra-container-image") or DEFAULT_PAUSE
            self.mismatch = None
        else:
            self.pause = _node.containerd_sandbox_image(DEFAULT_PAUSE)
            kubelet = opts.get("cgroup-driver") or config.get("cgroupDriver") or "cgroupfs"
            runtime = _node.containerd_cgroup_driver()
            self.mismatch = None if kubelet == runtime else (kubelet, runtime)
        self.cache = {}

    def has(self, image: str) -> bool:
        at, found = self.cache.get(image, (0.0, False))
        if time.monotonic() - at > (IMAGE_RECHECK_FOUND if found else IMAGE_RECHECK):
            found = _node.image_exists(image, self.socket)
            self.cache[image] = (time.monotonic(), found)
        return found


def _registry(image: str) -> str:
    first = image.split("/")[0]
    return first if "/" in image and ("." in first or ":" in first) else "registry-1.docker.io"


def pod_problem(node: Node, pod: dict):
    """(reason, message) that keeps the pod from running, or None."""
    spec = pod.get("spec") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    if not node.has(node.pause):
        return ("CreatePodSandboxError",
                'Failed to create pod sandbox: rpc error: code = Unknown desc = failed pulling '
                'image "%s": %s' % (node.pause, OFFLINE % ((_registry(node.pause),) * 2)))
    if node.mismatch:
        return ("CreatePodSandboxError",
                "Failed to create pod sandbox: runc create failed: kubelet cgroup driver %r and "
                "containerd's (SystemdCgroup) %r differ: expected cgroupsPath to be of format "
                '"slice:prefix:name" for systemd cgroups' % node.mismatch)
    for volume in spec.get("volumes") or []:
        host_path = volume.get("hostPath") or {}
        kind, path = host_path.get("type"), host_path.get("path", "")
        if kind == "File" and not os.path.isfile(rooted(path)) or \
                kind == "Directory" and not os.path.isdir(rooted(path)):
            return ("FailedMount", 'MountVolume.SetUp failed for volume "%s" : hostPath type '
                    "check failed: %s is not a %s" % (volume.get("name"), path,
                                                       kind.lower() if kind == "File" else
                                                       "directory"))
    for container in spec.get("containers") or []:
        image = str(container.get("image", ""))
        if node.has(image):
            continue
        if container.get("imagePullPolicy") == "Never":
            return ("ErrImageNeverPull", 'Container image "%s" is not present with pull policy '
                    "of Never" % image)
        return ("ImagePullBackOff", 'Back-off pulling image "%s" (pod %s): %s'
                % (image, name, OFFLINE % ((_registry(image),) * 2)))
    return None


def program(name: str, pod: dict, path: str):
    """(pid name, argv) of what runs for a pod, or None for a pod with nothing to run."""
    image = str(((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", ""))
    repo = image.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    if name == "kube-apiserver" and path == rooted(MANIFEST):
        return "kube-apiserver", [sys.executable, os.path.abspath(sys.argv[0]),
                                  "--kubecrate-static-pod=kube-apiserver",
                                  "--kubecrate-root=" + root()]
    if name == "etcd" and _etcdpod.binary():  # the real etcd, on kubeadm's flags
        return "etcd", _etcdpod.run_argv(manifest_flags(path), rooted)
    if repo in ("keepalived", "haproxy"):
        exe = _node.which_on_path(repo)
        if exe:
            return "pod-" + repo, [exe, "--kubecrate-root=" + root()]
    return None


class Pods:
    """Every static pod of the manifests folder, reconciled twice a second."""

    def __init__(self, node: Node, folder: str):
        self.node, self.folder = node, folder
        self.seen = {}  # path -> {"mtime", "name", "state", "next"}
        self.status = {}

    def manifests(self) -> list:
        folder = rooted(self.folder)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        return [os.path.join(folder, n) for n in names if not n.startswith(".")
                and os.path.isfile(os.path.join(folder, n))]

    def sync(self) -> None:
        paths = self.manifests()
        for path in list(self.seen):
            if path not in paths:
                self._stop(path, "static pod manifest removed")
                del self.seen[path]
        for path in paths:
            self._sync_one(path)
        write_file(rooted(STATUS), json.dumps(self.status, indent=1, sort_keys=True))

    def _sync_one(self, path: str) -> None:
        mtime = os.stat(path).st_mtime
        entry = self.seen.get(path)
        if entry and entry["mtime"] != mtime:
            self._stop(path, "static pod manifest changed")
            entry = None
        if entry is None:
            try:
                pod = _yaml.load_all(read_text(path))[0]
                name = str(pod["metadata"]["name"])
            except (OSError, _yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
                self._set(os.path.basename(path), "Failed", "InvalidManifest",
                          "could not process manifest file %s: %s" % (path, exc))
                return
            entry = self.seen[path] = {"mtime": mtime, "pod": pod, "name": name, "next": 0.0}
        pod, name = entry["pod"], entry["name"]
        problem = pod_problem(self.node, pod)
        if problem:
            self._set(name, "Pending", *problem)
            return
        run = program(name, pod, path)
        if run is None:
            self._set(name, "Running", "", "")
            return
        pid_name, argv = run
        pid = read_pid(pid_name)
        if pid is None and time.monotonic() >= entry["next"]:
            pid = spawn_detached(argv, pid_name)
            log("started static pod %s: pid %d" % (name, pid))
            entry["next"] = time.monotonic() + 1.0
        self._set(name, "Running", "", "", pid)

    def _stop(self, path: str, why: str) -> None:
        entry = self.seen.get(path)
        if not entry:
            return
        run = program(entry["name"], entry["pod"], path)
        pid = read_pid(run[0]) if run else None
        if pid:
            log("%s; stopping %s" % (why, entry["name"]))
            stop_pid(pid)
        self.status.pop(entry["name"], None)

    def _set(self, name, phase, reason, message, pid=None) -> None:
        old = self.status.get(name) or {}
        if (old.get("phase"), old.get("reason")) != (phase, reason):
            log("pod %s: %s%s" % (name, phase, " (%s) %s" % (reason, message) if reason else ""))
        self.status[name] = {"phase": phase, "reason": reason, "message": message, "pid": pid}


def run_daemon(argv: list) -> int:
    flags = [a for a in argv if a.startswith("--") and not a.startswith("--kubecrate-")]
    opts = parse_flags(flags or kubeadm_flags())
    try:
        check_flags(opts)
    except StandinError as exc:
        log(str(exc))
        return 1
    log("started %s, root %s, flags %s" % (VERSION, root(), " ".join(flags) or "(none)"))
    config_path = opts.get("config") or CONFIG
    started, warned, pods, reported = time.monotonic(), False, None, []
    pulls = _pulls.Pulls()
    while time.monotonic() - started < MAX_LIFETIME and os.path.isdir(root()):
        if pods is None and not os.path.exists(rooted(config_path)):
            if not warned:  # the real kubelet exits and systemd restarts it every 10 s
                log('failed to load Kubelet config file %s, error failed to read kubelet '
                    'config file "%s", error: open %s: no such file or directory'
                    % (config_path, config_path, config_path))
                warned = True
        elif pods is None:
            try:
                config = load_config(config_path)
                check_node(opts, config)
            except (StandinError, _yaml.YAMLError, OSError) as exc:
                log(str(exc))
                return 1
            node = Node(opts, config)
            pods = Pods(node, str(config.get("staticPodPath") or MANIFESTS))
        if pods is not None:
            pods.sync()
            report_version(reported)
            pull_images(pulls, pods.node)
        _reap()
        time.sleep(0.5)
    return 0


def _reap() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def main(argv: list) -> int:
    for arg in argv:
        if arg.startswith("--kubecrate-root="):
            os.environ["KUBECRATE_ROOT"] = arg.split("=", 1)[1]
    if "--version" in argv or "--version=true" in argv:
        print("Kubernetes " + VERSION)
        return 0
    if "--kubecrate-static-pod=kube-apiserver" in argv:
        import apiserver

        try:
            return apiserver.serve(manifest_flags(rooted(MANIFEST)),
                                   manifest_version(rooted(MANIFEST)))
        except (StandinError, OSError, KeyError, ValueError) as exc:
            return fail("kube-apiserver: %s" % exc)
    if any(a in ("-h", "--help") for a in argv):
        print("kubelet stand-in %s: --version, or run as the node agent (see docs/testing.md)"
              % VERSION)
        return 0
    return run_daemon(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
