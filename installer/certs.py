"""The cluster certificates of this node: when each expires (`status`), and `renew-certs`
(the serving certificates of kubecrate's own units: installer/servedcerts.py).

kubeadm issues its leaf certificates for one year and its CAs for ten
(https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-certs/). A cluster that
is never upgraded (the usual case offline) stops on the day they expire: kubectl gets
"x509: certificate has expired", the control plane cannot reach etcd. `status` lists each one
with the days left and warns from WARN_DAYS on; `renew-certs` on a control-plane node runs
`kubeadm certs renew all`, restarts the control-plane static pods the way that page says
(their manifests leave /etc/kubernetes/manifests until the kubelet stopped them, then come
back), waits for the apiserver, and refreshes /root/.kube/config from admin.conf.
"""

import base64
import datetime
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from installer.format.errors import PreconditionError, StepFailed
from installer.host import Host
from installer.runner import Runner
from installer.steps.preflight_cluster import connect

WARN_DAYS = 30
PKI = "/etc/kubernetes/pki"
MANIFESTS = "/etc/kubernetes/manifests"
PARKED = "/etc/kubernetes/kubecrate/manifests-restarting"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
ROOT_KUBECONFIG = "/root/.kube/config"
CONTROL_PLANE_PODS = ("kube-apiserver.yaml", "kube-controller-manager.yaml",
                      "kube-scheduler.yaml", "etcd.yaml")
# kubeadm's list (`kubeadm certs check-expiration`): name, file, embedded in a kubeconfig
CERTIFICATES = (
    ("admin.conf", "/etc/kubernetes/admin.conf", True),
    ("apiserver", PKI + "/apiserver.crt", False),
    ("apiserver-etcd-client", PKI + "/apiserver-etcd-client.crt", False),
    ("apiserver-kubelet-client", PKI + "/apiserver-kubelet-client.crt", False),
    ("controller-manager.conf", "/etc/kubernetes/controller-manager.conf", True),
    ("etcd-healthcheck-client", PKI + "/etcd/healthcheck-client.crt", False),
    ("etcd-peer", PKI + "/etcd/peer.crt", False),
    ("etcd-server", PKI + "/etcd/server.crt", False),
    ("front-proxy-client", PKI + "/front-proxy-client.crt", False),
    ("scheduler.conf", "/etc/kubernetes/scheduler.conf", True),
)
AUTHORITIES = (("ca", PKI + "/ca.crt"), ("etcd-ca", PKI + "/etcd/ca.crt"),
               ("front-proxy-ca", PKI + "/front-proxy-ca.crt"))
OPENSSL_TIME = "%b %d %H:%M:%S %Y %Z"


class Expiry(NamedTuple):
    name: str
    path: str
    authority: bool
    expires: datetime.datetime  # UTC, naive
    days_left: int
    warn_days: int = WARN_DAYS  # a warning with fewer days left

    @property
    def warning(self) -> bool:
        return self.days_left < self.warn_days

    def as_json(self) -> Dict[str, Any]:
        return {"name": self.name, "path": self.path, "authority": self.authority,
                "expires": self.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "days_left": self.days_left, "warning": self.warning}


def _kubeconfig_cert(host: Host, path: str) -> Optional[bytes]:
    """The PEM client certificate embedded in a kubeconfig kubeadm wrote (or None)."""
    text = host.read_text(path) or ""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "client-certificate-data" and value.strip():
            try:
                return base64.b64decode(value.strip())
            except ValueError:
                return None
    return None


def not_after(runner: Runner, pem: Optional[bytes] = None, path: Optional[str] = None
               ) -> Optional[datetime.datetime]:
    argv = ["openssl", "x509", "-noout", "-enddate"] + (["-in", path] if path else [])
    if pem is not None:
        out = runner.run(argv, check=False, readonly=True, timeout=30,
                         stdin=lambda pipe: pipe.write(pem))
    else:
        out = runner.query(argv, timeout=30)
    if out.returncode != 0 or "=" not in out.stdout:
        return None
    try:
        return datetime.datetime.strptime(out.stdout.strip().split("=", 1)[1].strip(),
                                          OPENSSL_TIME)
    except ValueError:
        return None


def expiries(host: Host, runner: Runner, now: datetime.datetime) -> List[Expiry]:
    """Every kubeadm certificate this node has, leaves first, then the CAs."""
    found = []
    entries = [(name, path, embedded, False) for name, path, embedded in CERTIFICATES] + \
        [(name, path, False, True) for name, path in AUTHORITIES]
    for name, path, embedded, authority in entries:
        if not host.exists(path):
            continue
        if embedded:
            pem = _kubeconfig_cert(host, path)
            moment = not_after(runner, pem=pem) if pem else None
        else:
            moment = not_after(runner, path=host.path(path))
        if moment is None:
            continue
        found.append(Expiry(name, path, authority, moment, days_left(moment, now)))
    return found


def days_left(moment: datetime.datetime, now: datetime.datetime) -> int:
    """Whole days from `now` until `moment` (negative once past)."""
    return int((moment - now).total_seconds() // 86400)


def warnings(found: List[Expiry]) -> List[str]:
    lines = []
    for item in found:
        if not item.warning:
            continue
        when = "expired" if item.days_left < 0 else "expires in {} day(s)".format(
            item.days_left)
        fix = "renew the CA by hand (kubeadm does not)" if item.authority else \
            "run `renew-certs` on each control-plane node"
        lines.append("WARNING: {} ({}) {}, on {}: {}".format(
            item.name, item.path, when, item.expires.strftime("%Y-%m-%d"), fix))
    return lines


def _port_open(address: str, port: int) -> bool:
    return connect(address, port, 1.0) == "open"


def _wait(condition: Callable[[], bool], bound: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + bound
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def renew(host: Host, runner: Runner, address: str, port: int,
          echo: Callable[[str], None], stop_bound: float = 120.0,
          start_bound: float = 300.0) -> List[str]:
    """`kubeadm certs renew all`, then the control-plane static pods restarted one way
    kubeadm documents, the apiserver waited for, /root/.kube/config refreshed."""
    if not host.exists(ADMIN_CONF) or not host.exists(PKI + "/ca.key"):
        raise PreconditionError(
            "renew-certs runs on a control-plane node: {} or {} is missing".format(
                host.path(ADMIN_CONF), host.path(PKI + "/ca.key")),
            hint="run it on each control-plane node in turn; workers' kubelet client "
                 "certificates rotate by themselves")
    done = runner.run(["kubeadm", "certs", "renew", "all"], timeout=300,
                      hint="nothing was restarted; the old certificates are still in use")
    changes = ["kubeadm certs renew all: {} certificate(s) renewed".format(
        sum(1 for line in done.stdout.splitlines() if line.endswith(" renewed")))]
    if runner.dry_run:
        return changes + ["restart the control-plane static pods", "refresh " +
                          ROOT_KUBECONFIG]
    parked = [name for name in CONTROL_PLANE_PODS if host.exists(MANIFESTS + "/" + name)]
    os.makedirs(host.path(PARKED), mode=0o700, exist_ok=True)
    for name in parked:
        os.rename(host.path(MANIFESTS + "/" + name), host.path(PARKED + "/" + name))
    try:
        echo("waiting for the kubelet to stop the control-plane pods")
        if not _wait(lambda: not _port_open(address, port), stop_bound):
            raise StepFailed("the kubelet did not stop kube-apiserver within {:.0f}s after "
                             "its manifest left {}".format(stop_bound, MANIFESTS),
                             hint="see `journalctl -u kubelet`; the manifests are back in "
                                  "place, run renew-certs again")
    finally:
        for name in parked:  # back in any case: a node without its manifests is down
            os.rename(host.path(PARKED + "/" + name), host.path(MANIFESTS + "/" + name))
    changes.append("restarted {}".format(", ".join(n[:-len(".yaml")] for n in parked)))
    echo("waiting for kube-apiserver on {}:{}".format(address, port))
    if not _wait(lambda: _port_open(address, port), start_bound):
        raise StepFailed("kube-apiserver did not come back on {}:{} within {:.0f}s after the "
                         "restart".format(address, port, start_bound),
                         hint="see `journalctl -u kubelet` and the apiserver's container log")
    answered = _wait(lambda: runner.query(["kubectl", "--kubeconfig", ADMIN_CONF, "get",
                                           "nodes"], timeout=30).returncode == 0, start_bound,
                     step=2.0)
    if not answered:
        raise StepFailed("the apiserver does not answer with the renewed admin.conf",
                         hint="see `kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes`")
    admin = host.read_bytes(ADMIN_CONF)
    if admin is not None and host.write(ROOT_KUBECONFIG, admin, 0o600):
        changes.append("refreshed " + ROOT_KUBECONFIG)
    return changes
