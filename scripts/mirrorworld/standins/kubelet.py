"""The kubelet stand-in: `--version`, and a daemon that runs the kube-apiserver static pod.

Started by the systemctl stand-in (or by kubeadm directly when PATH has no systemctl stand-in),
it watches <root>/etc/kubernetes/manifests/kube-apiserver.yaml: while the manifest exists it
keeps an apiserver stand-in running (a detached child, pid in
<root>/run/kubecrate-standin/kube-apiserver.pid, restarted 1 s after it dies, restarted when the
manifest changes); when the manifest goes, it stops it. Like a real kubelet, stopping the kubelet
leaves the "container" running. It refuses to start on the kubelet flags that the real binary
would reject (see docs/testing.md).
"""

import os
import shlex
import sys
import time

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
)

MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
CONFIG = "/var/lib/kubelet/config.yaml"
FLAGS_ENV = "/var/lib/kubelet/kubeadm-flags.env"
MAX_LIFETIME = float(os.environ.get("KUBECRATE_STANDIN_MAX_LIFETIME", str(6 * 3600)))


def log(msg: str) -> None:
    sys.stderr.write("%s kubelet: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def kubeadm_flags() -> list:
    try:
        text = read_text(rooted(FLAGS_ENV))
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("KUBELET_KUBEADM_ARGS="):
            # An EnvironmentFile value: one shell word (quoted), itself holding the flags.
            words = shlex.split(line.split("=", 1)[1])
            return shlex.split(words[0]) if words else []
    return []


def check_flags(flags: list) -> None:
    """Fail as the real kubelet of this version does on a flag set it cannot run with."""
    opts = dict(f[2:].split("=", 1) for f in flags if f.startswith("--") and "=" in f)
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


def manifest_flags(path: str) -> dict:
    pod = _yaml.load_all(read_text(path))[0]
    command = pod["spec"]["containers"][0]["command"]
    return dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)


def run_daemon() -> int:
    try:
        check_flags(kubeadm_flags())
    except StandinError as exc:
        log(str(exc))
        return 1
    log("started %s, root %s" % (VERSION, root()))
    started, next_start, last_mtime, warned = time.monotonic(), 0.0, None, False
    manifest = rooted(MANIFEST)
    while time.monotonic() - started < MAX_LIFETIME and os.path.isdir(root()):
        if not os.path.exists(rooted(CONFIG)):
            if not warned:
                log('failed to load Kubelet config file %s, error failed to read kubelet '
                    'config file "%s", error: open %s: no such file or directory'
                    % (CONFIG, CONFIG, CONFIG))
                warned = True
        elif os.path.exists(manifest):
            mtime = os.stat(manifest).st_mtime
            pid = read_pid("kube-apiserver")
            if pid and last_mtime is not None and mtime != last_mtime:
                log("static pod manifest changed; restarting kube-apiserver")
                stop_pid(pid)
                pid = None
            if pid is None and time.monotonic() >= next_start:
                argv = [sys.executable, os.path.abspath(sys.argv[0]),
                        "--kubecrate-static-pod=kube-apiserver", "--kubecrate-root=" + root()]
                log("starting kube-apiserver pid %d" % spawn_detached(argv, "kube-apiserver"))
                next_start = time.monotonic() + 1.0
            last_mtime = mtime
        else:
            pid = read_pid("kube-apiserver")
            if pid:
                log("static pod manifest removed; stopping kube-apiserver")
                stop_pid(pid)
            last_mtime = None
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
            return apiserver.serve(manifest_flags(rooted(MANIFEST)))
        except (StandinError, OSError, KeyError, ValueError) as exc:
            return fail("kube-apiserver: %s" % exc)
    if any(a in ("-h", "--help") for a in argv):
        print("kubelet stand-in %s: --version, or run as the node agent (see docs/testing.md)"
              % VERSION)
        return 0
    return run_daemon()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
