"""etcdctl and etcdutl as a control-plane node has them: inside the etcd image kubeadm runs.

A kubeadm node has no etcdctl on the host, and an offline one cannot fetch it; the etcd image
of the node's own static pod (/etc/kubernetes/manifests/etcd.yaml) carries etcdctl and
etcdutl (/usr/local/bin in registry.k8s.io/etcd:3.5.x). They run in a throw-away container of
that image on the host network, with the PKI mounted read-only and any working folder mounted
at the same path, so paths on the command line mean the same inside and out:
  docker run --rm --network host --entrypoint /usr/local/bin/etcdctl -v P:P:ro IMAGE ARGS
  ctr -n k8s.io run --rm --net-host --mount type=bind,src=P,dst=P,options=rbind:ro IMAGE ID
      /usr/local/bin/etcdctl ARGS
etcdctl authenticates with the client certificate kubeadm's own etcd client uses,
apiserver-etcd-client (kubernetes cmd/kubeadm/app/util/etcd/etcd.go NewFromCluster).
"""

import json
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from installer.format.bundleinfo import read_info
from installer.format.errors import PreconditionError, StepFailed
from installer.format.manifest import parse_manifest
from installer.host import Host
from installer.runner import CommandFailed, Result, Runner
from installer.state import State
from installer.steps import BUNDLES_DIR

PKI = "/etc/kubernetes/pki"
ETCD_MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
CA = PKI + "/etcd/ca.crt"
CLIENT_CERT = PKI + "/apiserver-etcd-client.crt"
CLIENT_KEY = PKI + "/apiserver-etcd-client.key"
BIN = "/usr/local/bin/"
DEFAULT_DATA_DIR = "/var/lib/etcd"
# etcdserverpb.AlarmType, which `-w json` prints as its number (api/etcdserverpb/rpc.proto)
ALARMS = {"0": "NONE", "1": "NOSPACE", "2": "CORRUPT"}


class EtcdError(StepFailed):
    """etcd refused or did not answer (exit 5)."""


class Member(NamedTuple):
    id: str  # hex, as `etcdctl member remove` takes it
    name: str
    peer_urls: List[str]
    client_urls: List[str]


class EtcdPod(NamedTuple):
    """What kubeadm's etcd.yaml on this node says (defaults where a flag is absent)."""
    image: str
    name: str
    data_dir: str
    peer_url: str
    client_url: str


def manifest_flags(text: str) -> Dict[str, str]:
    """--flag=value of the etcd static pod's command, and its image under "image"."""
    import yaml

    try:
        pod = yaml.safe_load(text) or {}
        container = pod["spec"]["containers"][0]
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return {}
    flags = {"image": str(container.get("image") or "")}
    for arg in list(container.get("command") or []) + list(container.get("args") or []):
        text_arg = str(arg)
        if text_arg.startswith("--") and "=" in text_arg:
            key, value = text_arg[2:].split("=", 1)
            flags[key] = value
    return flags


def etcd_pod(host: Host, node_name: str, address: str) -> EtcdPod:
    """This control-plane node's etcd as its manifest describes it. Raises PreconditionError
    when the node has no local etcd (a worker, or a node kubeadm never set up)."""
    text = host.read_text(ETCD_MANIFEST)
    if text is None:
        raise PreconditionError(
            "{} is missing: this is not a control-plane node with kubeadm's local etcd".format(
                host.path(ETCD_MANIFEST)),
            hint="run it on a control-plane node that kubecrate installed")
    flags = manifest_flags(text)
    image = flags.get("image") or _bundle_etcd_image(host)
    if not image:
        raise PreconditionError("{} names no image and the installed bundle has no etcd "
                                "image".format(host.path(ETCD_MANIFEST)))
    first = lambda value: value.split(",")[0]  # noqa: E731
    return EtcdPod(image, flags.get("name") or node_name,
                   flags.get("data-dir") or DEFAULT_DATA_DIR,
                   first(flags.get("initial-advertise-peer-urls")
                         or "https://{}:2380".format(address)),
                   first(flags.get("advertise-client-urls") or "https://{}:2379".format(address)))


def _bundle_etcd_image(host: Host) -> str:
    digest = State.load(host).data.get("bundle")
    raw = host.read_bytes("{}/{}/bundle.json".format(BUNDLES_DIR, digest)) if digest else None
    if raw is None:
        return ""
    info = read_info(parse_manifest(raw), str(digest))
    return next((image.reference for image in info.images if "/etcd:" in image.reference), "")


def runtime_of(host: Host) -> str:
    """docker or containerd: the installed bundle's runtime (state.json), else what the node
    has (docker's socket)."""
    digest = State.load(host).data.get("bundle")
    raw = host.read_bytes("{}/{}/bundle.json".format(BUNDLES_DIR, digest)) if digest else None
    if raw is not None:
        return read_info(parse_manifest(raw), str(digest)).runtime
    return "docker" if host.exists("/var/run/docker.sock") else "containerd"


class Etcdctl:
    """etcdctl/etcdutl of `image`, run through the node's container runtime."""

    def __init__(self, runner: Runner, image: str, runtime: str, endpoints: Sequence[str],
                 client: Sequence[str] = (CLIENT_CERT, CLIENT_KEY)) -> None:
        self.runner = runner
        self.client = list(client)  # certificate and key: an etcd host has no apiserver's
        self.image = image
        self.runtime = runtime
        self.endpoints = list(endpoints)  # this node's first: etcdctl fails over in order
        self._count = 0

    def argv(self, tool: str, args: Sequence[str], mounts: Sequence[str] = (),
             writable: Sequence[str] = ()) -> List[str]:
        """The command that runs `tool` (etcdctl or etcdutl) from the image; `mounts` are
        read-only folders, `writable` read-write ones, each at its own path."""
        binds = [(PKI, True)] + [(m, True) for m in mounts] + [(w, False) for w in writable]
        if self.runtime == "docker":
            argv = ["docker", "run", "--rm", "--network", "host", "--entrypoint", BIN + tool,
                    "-e", "ETCDCTL_API=3"]
            for path, readonly in binds:
                argv += ["-v", "{0}:{0}{1}".format(path, ":ro" if readonly else "")]
            return argv + [self.image] + list(args)
        self._count += 1
        argv = ["ctr", "-n", "k8s.io", "run", "--rm", "--net-host", "--env", "ETCDCTL_API=3"]
        for path, readonly in binds:
            argv += ["--mount", "type=bind,src={0},dst={0},options=rbind:{1}".format(
                path, "ro" if readonly else "rw")]
        return argv + [self.image, "kubecrate-{}-{}-{}".format(tool, os.getpid(), self._count),
                       BIN + tool] + list(args)

    def tls(self, endpoints: Optional[Sequence[str]] = None) -> List[str]:
        return ["--endpoints=" + ",".join(endpoints or self.endpoints), "--cacert=" + CA,
                "--cert=" + self.client[0], "--key=" + self.client[1]]

    def ctl(self, args: Sequence[str], endpoints: Optional[Sequence[str]] = None,
            writable: Sequence[str] = (), check: bool = True, readonly: bool = True,
            timeout: float = 120.0, hint: Optional[str] = None) -> Result:
        argv = self.argv("etcdctl", self.tls(endpoints) + list(args), writable=writable)
        return self.runner.run(argv, check=check, readonly=readonly, timeout=timeout, hint=hint)

    def utl(self, args: Sequence[str], mounts: Sequence[str] = (),
            writable: Sequence[str] = (), readonly: bool = True,
            timeout: float = 600.0, hint: Optional[str] = None) -> Result:
        return self.runner.run(self.argv("etcdutl", args, mounts, writable),
                               readonly=readonly, timeout=timeout, hint=hint)

    def json(self, args: Sequence[str], endpoints: Optional[Sequence[str]] = None) -> Any:
        """`etcdctl ARGS -w json`, parsed; EtcdError naming the endpoints when etcd does not
        answer."""
        try:
            done = self.ctl(list(args) + ["-w", "json"], endpoints)
        except CommandFailed as err:
            raise EtcdError("etcd at {} did not answer `etcdctl {}`: {}".format(
                ",".join(endpoints or self.endpoints), " ".join(args), err.stderr_tail),
                hint="check the etcd pod on that node (`{} ps -a | grep etcd`, its log)".format(
                    "docker" if self.runtime == "docker" else "crictl"))
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise EtcdError("etcdctl {} printed no JSON: {}".format(" ".join(args),
                                                                   done.stdout[:200]))

    def members(self) -> List[Member]:
        listed = self.json(["member", "list"])
        return [Member("{:x}".format(int(m["ID"])), str(m.get("name") or ""),
                       list(m.get("peerURLs") or []), list(m.get("clientURLs") or []))
                for m in listed.get("members") or []]

    def health(self, endpoints: Sequence[str]) -> Dict[str, str]:
        """endpoint -> "" when healthy, else etcdctl's reason, asking each one separately
        (a dead one answers nothing)."""
        found = {}
        for endpoint in endpoints:
            done = self.ctl(["endpoint", "health", "-w", "json", "--command-timeout=5s",
                             "--dial-timeout=3s"], [endpoint], check=False, timeout=60)
            try:
                answers = json.loads(done.stdout or "[]")
            except ValueError:
                answers = []
            if answers and all(a.get("health") for a in answers):
                found[endpoint] = ""
            else:
                found[endpoint] = "; ".join(str(a.get("error") or "unhealthy") for a in answers) \
                    or (done.stderr.strip().splitlines() or ["no answer"])[-1]
        return found

    def healthy(self, endpoints: Sequence[str]) -> Dict[str, bool]:
        """endpoint -> whether it is a working member: healthy, or refusing writes only for
        an alarm (a NOSPACE member still votes; etcd-defrag clears the alarm)."""
        return {endpoint: not reason or reason.startswith("Active Alarm")
                for endpoint, reason in self.health(endpoints).items()}

    def statuses(self, endpoints: Sequence[str]) -> List[Dict[str, Any]]:
        """`endpoint status` of each endpoint that answers: endpoint, db size, in use,
        leader, revision."""
        found = []
        for endpoint in endpoints:
            done = self.ctl(["endpoint", "status", "-w", "json", "--command-timeout=5s",
                             "--dial-timeout=3s"], [endpoint], check=False, timeout=60)
            try:
                answers = json.loads(done.stdout or "[]") if done.returncode == 0 else []
            except ValueError:
                answers = []
            for answer in answers:
                status = answer.get("Status") or {}
                header = status.get("header") or {}
                found.append({"endpoint": answer.get("Endpoint", endpoint),
                              "member": "{:x}".format(int(header.get("member_id", 0))),
                              "db_size": int(status.get("dbSize", 0)),
                              "db_size_in_use": int(status.get("dbSizeInUse", 0)),
                              "leader": header.get("member_id") == status.get("leader"),
                              "revision": int(header.get("revision", 0))})
        return found

    def alarms(self, endpoints: Optional[Sequence[str]] = None) -> List[Dict[str, str]]:
        listed = self.json(["alarm", "list"], endpoints)
        return [{"member": "{:x}".format(int(a.get("memberID", 0))),
                 "alarm": ALARMS.get(str(a.get("alarm", "")), str(a.get("alarm", "")))}
                for a in listed.get("alarms") or []]
