"""The mirror world's web server: a private nginx serving `www/` on 127.0.0.1, and the process
helpers the orchestrator uses (liveness that treats zombies as gone, free ports, bounded waits).

nginx runs in daemon mode with its config, pid file, logs and temp folders under the run folder,
so nothing touches /etc/nginx or /var/log; `stop_nginx` quits it gracefully, then kills its
process group. nginx serves byte ranges for static files, which the builder's resume relies on.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import jinja2

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
DAOCLOUD_PREFIX = "files.m.daocloud.io"  # the China-shaped binary mirror, see NGINX_CONF


class NginxError(RuntimeError):
    """nginx could not be started; the message says why and where its log is."""


def alive(pid: Optional[int]) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its reaper counts as gone)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def port_open(port: Optional[int]) -> bool:
    if not port:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", int(port))) == 0


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


NGINX_CONF = jinja2.Template(
    """\
# Written by scripts/mirror-world up; private to this world (run folder {{ run }}).
daemon on;
worker_processes 2;
pid {{ pid_file }};
error_log {{ error_log }} notice;
{% if user %}user {{ user }};
{% endif %}
events { worker_connections 512; }

http {
    access_log {{ access_log }};
    client_body_temp_path {{ tmp }}/client_body;
    proxy_temp_path {{ tmp }}/proxy;
    fastcgi_temp_path {{ tmp }}/fastcgi;
    uwsgi_temp_path {{ tmp }}/uwsgi;
    scgi_temp_path {{ tmp }}/scgi;
    types {
        text/xml xml;
        text/plain txt sha256 sha512 asc;
        application/x-rpm rpm;
        application/gzip gz tgz;
        application/pgp-keys gpg key;
    }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    server_tokens off;

    server {
        listen 127.0.0.1:{{ port }};
        root {{ www }};
        autoindex on;
        # Byte ranges are on for static files; the builder resumes downloads with them.
        max_ranges 16;
        # The China-shaped preset's binary mirror: DaoCloud's public-binary-files-mirror
        # (github.com/DaoCloud/public-binary-files-mirror, README) serves every upstream file
        # at https://files.m.daocloud.io/<original host>/<original path>; here that is the
        # same www/<host>/<path> tree under one more prefix.
        location /{{ daocloud }}/ {
            alias {{ www }}/;
        }
    }
}
""",
    undefined=jinja2.StrictUndefined,
)


def _nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if not found:
        raise NginxError("nginx is not installed (Debian nginx-light): run scripts/setup-dev")
    return found


def start_nginx(www: Path, run: Path) -> Dict[str, Any]:
    """Start a private nginx (daemon mode, pid file) serving `www` on 127.0.0.1 and a free
    port; return its pid, port, URL and file paths once it answers."""
    folder = run / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf, pid_file = folder / "nginx.conf", folder / "nginx.pid"
    error_log, access_log = folder / "error.log", folder / "access.log"
    # As root, nginx would run its workers as `nobody`, which may not read the cache folder.
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    last = ""
    for _attempt in range(5):  # another process may grab the free port in between
        port = _free_port()
        conf.write_text(
            NGINX_CONF.render(
                run=run,
                pid_file=pid_file,
                error_log=error_log,
                access_log=access_log,
                daocloud=DAOCLOUD_PREFIX,
                tmp=folder / "tmp",
                port=port,
                www=www,
                user=user,
            )
        )
        argv = [_nginx_binary(), "-p", str(folder), "-c", str(conf), "-e", str(error_log)]
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            break
        last = (done.stderr or done.stdout).strip()
        if "in use" not in last:
            raise NginxError(f"nginx did not start: {last}\n(config {conf})")
    else:
        raise NginxError(f"nginx found no free port after 5 tries: {last}")
    if not _wait(lambda: pid_file.is_file() and pid_file.read_text().strip().isdigit(), 10):
        raise NginxError(f"nginx wrote no pid file {pid_file}; see {error_log}")
    pid = int(pid_file.read_text())
    info = {
        "pid": pid,
        "port": port,
        "url": f"http://127.0.0.1:{port}",
        "conf": str(conf),
        "pid_file": str(pid_file),
        "access_log": str(access_log),
        "error_log": str(error_log),
    }
    if not _wait(lambda: port_open(port), START_TIMEOUT):
        stop_nginx(info)
        raise NginxError(f"nginx (pid {pid}) does not answer on port {port}; see {error_log}")
    return info


def _group(pgid: int) -> List[int]:
    """Live processes of process group `pgid` (nginx's master and its workers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def stop_nginx(info: Dict[str, Any]) -> None:
    """Graceful quit, a bounded wait, then SIGKILL to its whole process group (master and
    workers: nginx's daemon mode makes the master a session and group leader)."""
    pid = info.get("pid")
    if not pid or info["conf"].encode() not in _cmdline(pid):
        return  # gone, or the pid now belongs to someone else
    for sig in (signal.SIGQUIT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait(lambda: not _group(pid), STOP_TIMEOUT):
            return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _wait(lambda: not _group(pid), STOP_TIMEOUT)
