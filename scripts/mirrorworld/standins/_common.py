"""Shared plumbing of the kube stand-ins: host root, clock, versions, processes, HTTPS client.

Every stand-in binary in the release tree is a zipapp that carries this module, so the code
here runs with the hosts' system python3 and the standard library only.
"""

import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

try:  # written into each zipapp by scripts/mirrorworld/releases.py
    import _build  # type: ignore

    VERSION = _build.VERSION
    ARCH = _build.ARCH
except ImportError:  # running from the source tree
    VERSION = os.environ.get("KUBECRATE_STANDIN_VERSION", "v1.23.17")
    ARCH = "amd64"

MAJOR, MINOR, PATCH = (int(x) for x in VERSION.lstrip("v").split("."))
GIT_COMMIT = "0" * 40  # a stand-in has no commit; a constant keeps the output stable
STATE_DIR = "/run/kubecrate-standin"
FAKE_NOW_HEADER = "X-Kubecrate-Fake-Now"
TOKEN_RE = re.compile(r"\A([a-z0-9]{6})\.([a-z0-9]{16})\Z")


class StandinError(Exception):
    """A failure the stand-in reports the way kubeadm does, then exits non-zero."""


def root() -> str:
    """The host's root folder: the installer's runner exports KUBECRATE_ROOT to every child."""
    return os.path.abspath(os.environ.get("KUBECRATE_ROOT") or "/")


def rooted(path: str) -> str:
    """Host path -> real path. Absolute paths go under the root unless they already are."""
    top = root()
    if not os.path.isabs(path):
        return os.path.abspath(path)
    if top == "/" or path == top or path.startswith(top.rstrip("/") + "/"):
        return path
    return os.path.join(top, path.lstrip("/"))


def arg_path(path: str) -> str:
    """A file named on a command line: under the root if it exists there, else as given."""
    under = rooted(path)
    return under if os.path.exists(under) else os.path.abspath(path)


def now() -> float:
    """Seconds since the epoch; KUBECRATE_FAKE_NOW overrides it for expiry tests."""
    fake = os.environ.get("KUBECRATE_FAKE_NOW")
    return float(fake) if fake else time.time()


def timeout() -> float:
    """How long init/join wait for an apiserver (real kubeadm: 4m0s)."""
    return float(os.environ.get("KUBECRATE_STANDIN_TIMEOUT", "60"))


def parse_duration(text: str) -> float:
    """Go-style duration ('24h0m0s', '2h', '90m', '0') in seconds."""
    text = str(text).strip()
    if text in ("0", ""):
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise StandinError('time: invalid duration "%s"' % text)
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_rfc3339(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))


def version_info() -> dict:
    return {
        "major": str(MAJOR),
        "minor": str(MINOR),
        "gitVersion": VERSION,
        "gitCommit": GIT_COMMIT,
        "gitTreeState": "clean",
        "buildDate": "2023-01-18T15:51:25Z",
        "goVersion": "go1.19.5",
        "compiler": "gc",
        "platform": "linux/" + ARCH,
    }


def go_version_struct() -> str:
    info = version_info()
    fields = [
        ("Major", "major"), ("Minor", "minor"), ("GitVersion", "gitVersion"),
        ("GitCommit", "gitCommit"), ("GitTreeState", "gitTreeState"), ("BuildDate", "buildDate"),
        ("GoVersion", "goVersion"), ("Compiler", "compiler"), ("Platform", "platform"),
    ]
    return "version.Info{%s}" % ", ".join('%s:"%s"' % (k, info[v]) for k, v in fields)


def write_file(path: str, data, mode: int = 0o644) -> None:
    """Atomically write text or bytes to a real path, creating parents."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


# --- processes -------------------------------------------------------------------------------


def state_path(name: str) -> str:
    return rooted(STATE_DIR + "/" + name)


def pid_alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_pid(name: str):
    """The live pid recorded in <root>/run/kubecrate-standin/<name>.pid, or None."""
    try:
        pid = int(read_text(state_path(name + ".pid")).strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def spawn_detached(argv: list, name: str) -> int:
    """Start a daemon in its own session with output in <root>/var/log/kubecrate-standin/."""
    log = rooted("/var/log/kubecrate-standin/%s.log" % name)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    env = dict(os.environ, KUBECRATE_ROOT=root())
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            start_new_session=True, close_fds=True,
        )
    write_file(state_path(name + ".pid"), "%d\n" % proc.pid)
    return proc.pid


def find_binary(name: str):
    """A binary as the host sees it: <root>/usr/bin, <root>/usr/local/bin, then PATH."""
    import shutil

    for folder in ("/usr/bin", "/usr/local/bin"):
        path = rooted(folder + "/" + name)
        if root() != "/" and os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def restart_kubelet() -> None:
    """What kubeadm's kubelet-start phase does: `systemctl restart kubelet`.

    Only the systemctl stand-in is ever called; if PATH holds another systemctl (a dev machine),
    the kubelet stand-in is started directly instead, so a test never touches the real host.
    """
    import shutil

    systemctl = shutil.which("systemctl")
    if systemctl and _is_standin(systemctl):
        proc = subprocess.run([systemctl, "restart", "kubelet"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise StandinError("failed to restart the kubelet: %s" % proc.stderr.strip())
        return
    old = read_pid("kubelet")
    if old:
        stop_pid(old)
    kubelet = find_binary("kubelet")
    if not kubelet:
        raise StandinError('failed to restart the kubelet: "kubelet" not found in $PATH')
    spawn_detached([kubelet, "--kubecrate-root=" + root()], "kubelet")


def stop_kubelet() -> None:
    import shutil

    systemctl = shutil.which("systemctl")
    if systemctl and _is_standin(systemctl):
        subprocess.run([systemctl, "stop", "kubelet"], capture_output=True)
    pid = read_pid("kubelet")
    if pid:
        stop_pid(pid)


def _is_standin(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"kubecrate-standin" in f.read(4096)
    except OSError:
        return False


# --- HTTPS client --------------------------------------------------------------------------------


class Response:
    def __init__(self, status: int, body: bytes, sockname):
        self.status = status
        self.body = body
        self.sockname = sockname

    def json(self):
        return json.loads(self.body.decode() or "null")

    def message(self) -> str:
        try:
            return self.json().get("message", "")
        except (ValueError, AttributeError):
            return self.body.decode(errors="replace").strip()


def request(server: str, method: str, path: str, body=None, ca_pem=None, client=None,
            bearer=None, timeout_s: float = 5.0) -> Response:
    """One HTTPS request to an apiserver stand-in.

    server is "https://host:port" or "host:port"; ca_pem None means no verification (discovery);
    client is (cert_pem, key_pem) for certificate auth; bearer a bootstrap token.
    """
    hostport = server.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem)
    with tempfile.TemporaryDirectory() as tmp:
        if client is not None:
            cert, key = os.path.join(tmp, "c.crt"), os.path.join(tmp, "c.key")
            write_file(cert, client[0], 0o600)
            write_file(key, client[1], 0o600)
            ctx.load_cert_chain(cert, key)
        headers = {"Accept": "application/json"}
        if bearer:
            headers["Authorization"] = "Bearer " + bearer
        if os.environ.get("KUBECRATE_FAKE_NOW"):
            headers[FAKE_NOW_HEADER] = os.environ["KUBECRATE_FAKE_NOW"]
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout_s, context=ctx)
        try:
            conn.request(method, path, body=data, headers=headers)
            sockname = conn.sock.getsockname() if conn.sock else None
            resp = conn.getresponse()
            return Response(resp.status, resp.read(), sockname)
        finally:
            conn.close()


def wait_healthy(server: str, ca_pem: str, watch_pid_name=None) -> float:
    """Poll /healthz until ok; fail early when the watched daemon died. Returns seconds taken."""
    start = time.monotonic()
    deadline = start + timeout()
    grace_until = start + 3.0  # the kubelet may still be starting when the pid file appears
    while time.monotonic() < deadline:
        try:
            if request(server, "GET", "/healthz", ca_pem=ca_pem, timeout_s=2).status == 200:
                return time.monotonic() - start
        except (OSError, ssl.SSLError, http.client.HTTPException):
            pass
        if watch_pid_name and time.monotonic() > grace_until and not read_pid(watch_pid_name):
            break
        time.sleep(0.2)
    raise StandinError(
        "[kubelet-check] It seems like the kubelet isn't running or healthy.\n"
        "\tUnfortunately, an error has occurred:\n"
        "\t\ttimed out waiting for the condition\n"
        "\tThis error is likely caused by:\n"
        "\t\t- The kubelet is not running\n"
        "\t\t- The kubelet is unhealthy due to a misconfiguration of the node in some way\n"
        "\tsee %s\n"
        "couldn't initialize a Kubernetes cluster"
        % rooted("/var/log/kubecrate-standin/kubelet.log")
    )


def free_port(host: str, port: int) -> bool:
    # kubeadm's PortOpenCheck (cmd/kubeadm/app/preflight/checks.go) tries net.Listen, and Go
    # sets SO_REUSEADDR on every listener (net/sockopt_linux.go setDefaultListenerSockopts):
    # a port whose old connections sit in TIME_WAIT is free to it, as it is here.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def b64(data) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(message.rstrip("\n") + "\n")
    return code
