"""`etcd-backup` and `etcd-restore` (docs/cluster.md, "etcd backup and restore").

A backup is four files side by side, written under temporary names and renamed into place
only when all of them are complete:
  FILE            the snapshot, from `etcdctl snapshot save` of the node's etcd image, checked
                  with `etcdutl snapshot status` (etcd's own integrity hash) before it is kept
  FILE.pki.tar    the cluster's CAs and service-account key pair (what a rebuilt control plane
                  needs to keep the cluster's identity); mode 0600, as the snapshot
  FILE.kubeadm.yaml  the ClusterConfiguration kubeadm keeps in ConfigMap kube-system/kubeadm-config
  FILE.sha256     `sha256sum` lines of the three, checked by `sha256sum -c` and by etcd-restore,
                  which refuses a snapshot whose checksum fails before it changes anything
`etcd-restore FILE` on a control-plane node stops its static pods, restores into a new member
folder inside the data dir, swaps it for the old one (kept as member.before-restore-<time>),
and starts the pods again; with --all-control-planes the restored cluster has every control
plane of cluster.yaml as a member (run it on each of them with the same FILE).
"""

import datetime
import io
import os
import re
import tarfile
from typing import Callable, Dict, List, Optional, Tuple

from installer.atomic import replace_file
from installer.bundlecache import file_sha256
from installer.etcdnode import (
    ADMIN_CONF,
    EtcdNode,
    drop_parked,
    open_node,
    park,
    unpark,
    wait,
)
from installer.format.errors import StepFailed, UsageError, VerificationError
from installer.runner import CommandFailed

PKI_FILES = ("ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "front-proxy-ca.crt",
             "front-proxy-ca.key", "sa.key", "sa.pub")
SIDECARS = (".pki.tar", ".kubeadm.yaml")
DEFAULT_DIR = "/var/lib/kubecrate/etcd-backups"
ROTATED = re.compile(r"\Aetcd-snapshot-\d{8}T\d{6}Z\.db\Z")
INIT_CONFIG = "/etc/kubernetes/kubecrate/kubeadm-init.yaml"


def _pki_tar(node: EtcdNode) -> bytes:
    """The CAs and the service-account keys as a tar (root-owned, 0600 keys)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in PKI_FILES:
            data = node.host.read_bytes("/etc/kubernetes/pki/" + name)
            if data is None:
                continue
            info = tarfile.TarInfo("pki/" + name)
            info.size, info.mode = len(data), 0o600 if name.endswith(".key") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _cluster_configuration(node: EtcdNode) -> bytes:
    """kube-system/kubeadm-config's ClusterConfiguration; when the apiserver does not answer,
    the ClusterConfiguration document of kubecrate's kubeadm-init.yaml (never its
    InitConfiguration, which holds the bootstrap token and the certificate key)."""
    done = node.runner.query(["kubectl", "--kubeconfig", ADMIN_CONF, "-n", "kube-system", "get",
                              "configmap", "kubeadm-config", "-o", "json"], timeout=60)
    if done.returncode == 0:
        import json

        try:
            text = json.loads(done.stdout)["data"]["ClusterConfiguration"]
            return ("# kube-system/kubeadm-config ClusterConfiguration\n" + text).encode()
        except (ValueError, KeyError, TypeError):
            pass
    import yaml

    raw = node.host.read_text(INIT_CONFIG) or ""
    try:
        docs = [d for d in yaml.safe_load_all(raw) if isinstance(d, dict)
                and d.get("kind") == "ClusterConfiguration"]
    except yaml.YAMLError:
        docs = []
    if not docs:
        raise StepFailed("neither the apiserver (ConfigMap kube-system/kubeadm-config) nor {} "
                         "gave this cluster's ClusterConfiguration".format(
                             node.host.path(INIT_CONFIG)),
                         hint="check `kubectl -n kube-system get configmap kubeadm-config`")
    return ("# ClusterConfiguration from {}\n".format(INIT_CONFIG) +
            yaml.safe_dump(docs[0], default_flow_style=False)).encode()


def _write(path: str, data: bytes, mode: int) -> None:
    replace_file(path, lambda handle: handle.write(data), mode)


def snapshot_status(node: EtcdNode, path: str) -> Dict[str, int]:
    """`etcdutl snapshot status`: hash, revision, totalKey, totalSize. etcdutl checks the
    snapshot's own hash; a damaged file fails here (VerificationError)."""
    import json

    folder = os.path.dirname(os.path.abspath(path))
    try:
        done = node.etcdctl.utl(["snapshot", "status", path, "-w", "json"], mounts=[folder],
                                timeout=300)
        return dict(json.loads(done.stdout))
    except (CommandFailed, ValueError) as err:
        raise VerificationError("{} is no usable etcd snapshot: {}".format(
            path, getattr(err, "stderr_tail", err)),
            hint="take another backup with `etcd-backup`")


def backup(root: str, out: str, echo: Callable[[str], None]) -> Tuple[str, Dict[str, int]]:
    """Write the backup set for `out` (see the module doc). Returns (sha256 of the snapshot,
    its status). Nothing is left under `out`'s names when any step fails."""
    node = open_node(root)
    out = os.path.abspath(out)
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise UsageError("{}: no such folder".format(folder), hint="create it first")
    taken = [p for p in [out, out + ".sha256"] + [out + s for s in SIDECARS]
             if os.path.exists(p)]
    if taken:
        raise UsageError("{} already exists: a backup is never overwritten".format(taken[0]),
                         hint="choose another --out, or use --out-dir with --keep")
    partial = "{}.partial-{}".format(out, os.getpid())
    written = [partial + s for s in ("",) + SIDECARS + (".sha256",)]
    try:
        echo("etcdctl snapshot save from {} ({})".format(node.pod.client_url, node.pod.image))
        # etcdctl refuses a snapshot from several endpoints: this node's own member only
        node.etcdctl.ctl(["snapshot", "save", partial], [node.pod.client_url],
                         writable=[folder], timeout=900,
                         hint="nothing was kept; check that etcd answers: `status` shows it")
        os.chmod(partial, 0o600)
        status = snapshot_status(node, partial)
        files = {"": partial, ".pki.tar": partial + ".pki.tar",
                 ".kubeadm.yaml": partial + ".kubeadm.yaml"}
        for suffix, data in ((".pki.tar", _pki_tar(node)),
                             (".kubeadm.yaml", _cluster_configuration(node))):
            _write(files[suffix], data, 0o600)
        digests = {s: file_sha256(p) for s, p in files.items()}
        lines = "".join("{}  {}\n".format(digests[s], os.path.basename(out) + s)
                        for s in ("",) + SIDECARS)
        _write(partial + ".sha256", lines.encode(), 0o644)
        for suffix in SIDECARS + (".sha256", ""):  # the snapshot's own name comes last
            os.rename(partial + suffix, out + suffix)
    finally:
        for path in written:
            if os.path.exists(path):
                os.unlink(path)
    return digests[""], status


def rotate(root: str, folder: str, keep: int, echo: Callable[[str], None]
           ) -> Tuple[str, Dict[str, int], List[str]]:
    """One backup named etcd-snapshot-<UTC time>.db in `folder`, then the oldest sets beyond
    `keep` removed. Returns (path, status, removed paths)."""
    if keep < 1:
        raise UsageError("--keep must be at least 1, not {}".format(keep))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(folder, "etcd-snapshot-{}.db".format(stamp))
    _digest, status = backup(root, path, echo)
    sets = sorted(n for n in os.listdir(folder) if ROTATED.match(n))
    removed = []
    for name in sets[:-keep]:
        for suffix in ("",) + SIDECARS + (".sha256",):
            target = os.path.join(folder, name + suffix)
            if os.path.exists(target):
                os.unlink(target)
        removed.append(os.path.join(folder, name))
    return path, status, removed


def verify(path: str) -> str:
    """Check `path` against PATH.sha256 (and its sidecars, when present). Returns the
    snapshot's sha256; VerificationError (exit 3) naming the file on any mismatch."""
    listing = path + ".sha256"
    if not os.path.isfile(path):
        raise UsageError("{}: no such snapshot file".format(path))
    if not os.path.isfile(listing):
        raise VerificationError("{} is missing: the snapshot cannot be checked".format(listing),
                                hint="restore only a snapshot written by etcd-backup, with its "
                                     ".sha256 beside it")
    wanted = {}
    with open(listing) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) == 2:
                wanted[parts[1].lstrip("*")] = parts[0].lower()
    name = os.path.basename(path)
    if name not in wanted:
        raise VerificationError("{} has no line for {}".format(listing, name))
    problems = []
    for entry, digest in sorted(wanted.items()):
        target = os.path.join(os.path.dirname(path), entry)
        if not os.path.exists(target):
            if entry == name:
                problems.append("{}: missing".format(target))
            continue
        actual = file_sha256(target)
        if actual != digest:
            problems.append("{}: sha256 {}, {} says {}".format(target, actual, listing, digest))
    if problems:
        raise VerificationError("checksum failed, nothing was changed: " + "; ".join(problems),
                                hint="copy the backup again from where it is kept, or restore "
                                     "an older one")
    return wanted[name]


def restore(root: str, path: str, all_control_planes: bool, echo: Callable[[str], None],
            stop_bound: float = 120.0, start_bound: float = 300.0) -> List[str]:
    """Restore the snapshot `path` into this control-plane node's etcd (module doc)."""
    path = os.path.abspath(path)
    digest = verify(path)
    node = open_node(root)
    status = snapshot_status(node, path)
    changes = ["{} checked: sha256 {}, revision {}, {} keys".format(
        path, digest, status.get("revision"), status.get("totalKey"))]
    members = [n for n in node.cluster.nodes if n.is_control_plane] if all_control_planes \
        else [node.node]
    peers = ",".join("{}=https://{}:2380".format(
        node.pod.name if n.name == node.node.name else n.name, n.address) for n in members)
    if not all_control_planes:
        peers = "{}={}".format(node.pod.name, node.pod.peer_url)
    data_dir = node.host.path(node.pod.data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    staging = "{}/restore.kubecrate-{}".format(node.pod.data_dir, stamp)
    parked = park(node, stop_bound)
    echo("stopped {}".format(", ".join(n[:-len(".yaml")] for n in parked)))
    swapped = False
    try:
        node.etcdctl.utl(["snapshot", "restore", path, "--data-dir", staging + "/data",
                          "--name", node.pod.name, "--initial-cluster", peers,
                          "--initial-advertise-peer-urls", node.pod.peer_url,
                          "--initial-cluster-token", "kubecrate-restore-" + digest[:12]],
                         mounts=[os.path.dirname(path)], writable=[node.pod.data_dir],
                         readonly=False, timeout=900,
                         hint="nothing was changed: the old data is in place and the pods "
                              "start again")
        old = os.path.join(data_dir, "member")
        kept = os.path.join(data_dir, "member.before-restore-" + stamp)
        if os.path.exists(old):
            os.rename(old, kept)
            changes.append("kept the old data as {}/member.before-restore-{}".format(
                node.pod.data_dir, stamp))
        os.rename(node.host.path(staging + "/data/member"), old)
        swapped = True
        changes.append("restored {} into {} as member {} of {}".format(
            os.path.basename(path), node.pod.data_dir, node.pod.name, peers))
    finally:
        _remove_tree(node.host.path(staging))
        unpark(node, parked)
        drop_parked(node)
    if not swapped:
        return changes
    changes.append("started {} again".format(", ".join(n[:-len(".yaml")] for n in parked)))
    echo("waiting for etcd at {}".format(node.pod.client_url))
    if not all_control_planes and not wait(
            lambda: all(node.etcdctl.healthy([node.pod.client_url]).values()), start_bound, 2.0):
        raise StepFailed("etcd did not answer at {} within {:.0f}s after the restore".format(
            node.pod.client_url, start_bound),
            hint="see the etcd container's log; the old data is kept beside the new")
    return changes


def _remove_tree(path: str) -> None:
    import shutil

    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)


def check_out_dir(folder: Optional[str]) -> str:
    return os.path.abspath(folder or DEFAULT_DIR)
