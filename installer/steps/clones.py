"""Cross-node uniqueness at join time (runbook 003): a VM cloned from a node already in the
cluster keeps that node's /etc/machine-id and, unless the hypervisor made a new one, its
product UUID. kubeadm does not check; two nodes with one machine-id confuse everything keyed
on it (journald, the kubelet's node status, some CNIs). Preflight can only compare a host
with itself, so before `kubeadm join` the joining node reads the Nodes that cluster.yaml
names from the cluster and compares its own identity with theirs.

What a joiner may read: kubeadm lets the bootstrap token's group get (not list) a Node by
name (ClusterRole kubeadm:get-nodes, kubernetes cmd/kubeadm/app/phases/bootstraptoken/node/
tlsbootstrap.go AllowBootstrapTokensToGetNodes); a Node's status.nodeInfo carries the
kubelet's machineID and systemUUID (k8s.io/api core/v1 NodeSystemInfo). The CA comes from
the public cluster-info ConfigMap and is trusted only when its public key matches join.yaml's
pin, exactly as kubeadm's discovery does. Requests go through the runner with curl (the
installer imports no network library); the token is passed in a 0600 curl config file, never
in argv.

MAC addresses are not in Node objects, so they are compared on this host only (preflight,
with bond and VLAN interfaces, which share their parent's MAC by design, left out).
"""

import base64
import json
import os
import shutil
import tempfile
from typing import List, NamedTuple, Optional

import yaml

from installer import joinfile
from installer.format.errors import PreconditionError
from installer.steps import Context

MACHINE_ID = "/etc/machine-id"
NOT_COMPARED = "identity not compared with the cluster"
CURL_TIMEOUT = 10  # seconds per request; a handful of requests per join
FIX = ("give this host its own identity before it joins: `rm -f /etc/machine-id && "
       "systemd-machine-id-setup` for a new machine-id, and a new MAC address and product "
       "UUID for the VM in the hypervisor (clone with \"generate new MAC addresses\" / a new "
       "UUID); then re-run install")


class Identity(NamedTuple):
    name: str
    machine_id: str
    system_uuid: str


def local_identity(ctx: Context) -> Identity:
    """This host's identity as its kubelet will report it."""
    machine_id = (ctx.host.read_text(MACHINE_ID) or "").strip()
    return Identity(ctx.node.name, machine_id, (ctx.host.probes.product_uuid() or "").strip())


def duplicates(mine: Identity, others: List[Identity]) -> List[str]:
    """One line per cluster node that shares this host's machine-id or product UUID; empty
    values (an unreadable file) are never a match."""
    found = []
    for other in others:
        if other.name == mine.name:
            continue  # the same node re-joining: kubeadm itself refuses a registered name
        same = []
        if mine.machine_id and mine.machine_id.lower() == other.machine_id.lower():
            same.append("/etc/machine-id {}".format(mine.machine_id))
        if mine.system_uuid and mine.system_uuid.lower() == other.system_uuid.lower():
            same.append("product_uuid {}".format(mine.system_uuid))
        if same:
            found.append("node {} already in the cluster has the same {}".format(
                other.name, " and ".join(same)))
    return found


class _Api:
    """GETs against the cluster endpoint with curl through the runner."""

    def __init__(self, ctx: Context, scratch: str) -> None:
        self.ctx = ctx
        self.scratch = scratch
        self.base = "https://{}".format(ctx.join_info().endpoint)

    def get(self, path: str, extra: List[str]) -> Optional[dict]:
        """The JSON body of a 200; None for a 404; raises _Unreachable otherwise."""
        out = os.path.join(self.scratch, "body.json")
        result = self.ctx.runner.run(
            ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "-o", out, "-w", "%{http_code}"]
            + extra + [self.base + path], check=False, readonly=True, timeout=CURL_TIMEOUT + 5)
        code = result.stdout.strip()
        if result.returncode != 0 or code not in ("200", "404"):
            raise _Unreachable("{} {}: exit {}, HTTP {}: {}".format(
                "GET", path, result.returncode, code or "-", result.stderr.strip()[-200:]))
        if code == "404":
            return None
        with open(out) as handle:
            return json.load(handle)


class _Unreachable(Exception):
    pass


def cluster_identities(ctx: Context) -> List[Identity]:
    """The identities of the nodes cluster.yaml names that are already registered."""
    info = ctx.join_info()
    scratch = tempfile.mkdtemp(prefix="kubecrate-clones-")
    try:
        os.chmod(scratch, 0o700)
        api = _Api(ctx, scratch)
        public = api.get("/api/v1/namespaces/kube-public/configmaps/cluster-info", ["-k"])
        kubeconfig = yaml.safe_load((public or {}).get("data", {}).get("kubeconfig", "")) or {}
        clusters = kubeconfig.get("clusters") or [{}]
        ca_data = (clusters[0].get("cluster") or {}).get("certificate-authority-data", "")
        ca = os.path.join(scratch, "ca.crt")
        with open(ca, "wb") as out:
            out.write(base64.b64decode(ca_data))
        pin = joinfile.ca_cert_hash(ctx.runner, ca)
        if pin != info.ca_cert_hash:
            raise PreconditionError(
                "the cluster at {} serves a CA whose hash {} is not join.yaml's {}".format(
                    info.endpoint, pin, info.ca_cert_hash),
                hint="use the join.yaml of this cluster (join-info on a control-plane node)")
        config = os.path.join(scratch, "curl.conf")
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write('header = "Authorization: Bearer {}"\n'.format(info.token))
        found = []
        for node in ctx.cluster.nodes:
            if node.name == ctx.node.name:
                continue
            body = api.get("/api/v1/nodes/" + node.name, ["--cacert", ca, "-K", config])
            if body is None:
                continue
            system = (body.get("status") or {}).get("nodeInfo") or {}
            found.append(Identity(node.name, system.get("machineID", ""),
                                  system.get("systemUUID", "")))
        return found
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def refuse_clone(ctx: Context) -> str:
    """Raise PreconditionError (exit 4) when this host shares its machine-id or product UUID
    with a node already in the cluster; else say what was compared. An unreachable endpoint
    is not decided here: kubeadm join reports it with its own retries."""
    mine = local_identity(ctx)
    try:
        others = cluster_identities(ctx)
    except _Unreachable as err:
        return "{} ({})".format(NOT_COMPARED, err)
    clash = duplicates(mine, others)
    if clash:
        raise PreconditionError(
            "{} looks like a clone: {}".format(ctx.node.name, "; ".join(clash)), hint=FIX)
    return "machine-id and product_uuid differ from the {} node(s) already in the " \
           "cluster".format(len(others))
