"""`fleet export`: a plain Ansible project that installs a whole cluster.yaml from one control
node (docs/fleet.md).

The project is data plus one static playbook: the inventory comes from cluster.yaml (the roles
as groups, the first control-plane node in its own group), fleet.yml holds what this export
knows (the bundle's path on the control node and its bundle.json digest, the worker batch
size), files/<digest>.preflight.tar holds what the joining nodes' preflight reads (bundle.json,
its signature, the repo metadata and keys: installer/servedsource.py PreflightView; they fetch
the bundle itself from the first control-plane node when they join), and site.yml with
tasks/install.yml drive the installer's own commands (preflight, install, join-info, status)
on every host with ansible-core's builtin modules only. The
playbook is shipped verbatim from installer/templates/fleet/ (never rendered here: its `{{ }}`
are Ansible's). Everything is written with an atomic replace, so a failed export leaves no
half-written file.
"""

import os
import pkgutil
import shutil
from typing import Any, Dict, List, NamedTuple, Optional

import yaml

from installer import __version__, servedsource
from installer.atomic import replace_file
from installer.format import bundle as bundlemod
from installer.format import minisig
from installer.format.cluster import Cluster, load_cluster
from installer.format.errors import UsageError
from installer.hostfiles import require_regular_file

PYZ_NAME = "kubecrate-installer.pyz"
# (name in the package's templates/fleet/, name in the project): shipped unchanged
STATIC = (("site.yaml", "site.yml"), ("install.yaml", "tasks/install.yml"),
          ("kubecrate.yaml", "kubecrate.yml"))
GROUPS = {"control-plane": "control_plane", "worker": "worker"}  # Ansible refuses '-' in names
FIRST_GROUP = "first_control_plane"
VIEW_DIR = "files"  # <digest>.preflight.tar: what the joiners' preflight reads (PreflightView)


class FleetError(UsageError):
    """The fleet export cannot be written as asked."""


class Export(NamedTuple):
    directory: str
    files: List[str]  # written, relative to directory
    digest: str  # bundle.json SHA-256 the hosts' caches are checked for ("" when unknown)
    hosts: int


def inventory(cluster: Cluster) -> Dict[str, Any]:
    """The Ansible YAML inventory: every node under its role's group with ansible_host set to
    its cluster.yaml address, and the first control-plane node (kubeadm init) in
    first_control_plane. Node names are the inventory names (the playbook passes --node)."""
    groups = {}  # type: Dict[str, Dict[str, Any]]
    for role, group in sorted(GROUPS.items()):
        members = [n for n in cluster.nodes if n.role == role]
        if members:
            groups[group] = {"hosts": {n.name: {"ansible_host": n.address} for n in members}}
    first = cluster.load_balancer.peers[0].name
    groups[FIRST_GROUP] = {"hosts": {first: {}}}
    return {"all": {"children": groups}}


def _dump(data: Any, header: str) -> bytes:
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    return (header + text).encode("utf-8")


def _bundle_digest(bundle_path: str, key: minisig.Trust) -> str:
    """The bundle.json digest the signature's trusted comment names, once the comment is
    checked against `key` (before the tar is read for the preflight view)."""
    require_regular_file(bundle_path)
    signature = minisig.load_signature(bundlemod.signature_path_for(bundle_path))
    minisig.check_comment(key, signature, bundle_path)
    return bundlemod.claimed_manifest_sha256(signature) or ""


def export(cluster_path: str, bundle_path: str, out: str, pyz_path: str,
           key: minisig.Trust, forks: int, worker_batch: Optional[int] = None) -> Export:
    """Write the Ansible project for `cluster_path` and `bundle_path` into `out`: validates
    cluster.yaml and the bundle signature's trusted comment first, so nothing is written for
    a file a host would refuse. Raises FleetError, ClusterConfigError, VerificationError."""
    if forks < 1 or (worker_batch is not None and worker_batch < 1):
        raise FleetError("--forks and --worker-batch must be 1 or more")
    cluster = load_cluster(cluster_path)
    if cluster.etcd_hosts:  # the first etcd host's etcd-certs.json must reach the others
        raise FleetError(
            "{}: the playbook does not install etcd.external hosts ({}) in this version".format(
                cluster_path, ", ".join(h.name for h in cluster.etcd_hosts)),
            hint="install the etcd hosts, then the nodes, with the installer on each host "
                 "(docs/cluster.md, \"etcd: external\"): the first etcd host's "
                 "etcd-certs.json goes to the others and to the first control-plane node")
    bundle_path = os.path.abspath(bundle_path)
    digest = _bundle_digest(bundle_path, key)
    if not os.path.isfile(pyz_path):
        raise FleetError("{}: no such installer to copy to the hosts".format(pyz_path),
                         hint="pass --pyz with the path of kubecrate-installer.pyz")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FleetError("{} exists and is not a folder".format(out))
    header = "# Written by `kubecrate-installer.pyz fleet export` {} (docs/fleet.md).\n".format(
        __version__)
    batch = worker_batch or forks
    contents = [
        ("ansible.cfg", _ansible_cfg(forks).encode("utf-8")),
        ("inventory.yml", _dump(inventory(cluster), header + "# From {}; one group per role."
                                "\n".format(os.path.basename(cluster_path)))),
        ("fleet.yml", _dump({
            "kubecrate_bundle": bundle_path,
            "kubecrate_bundle_name": os.path.basename(bundle_path),
            "kubecrate_digest": digest,
            "kubecrate_worker_batch": batch,
        }, header + "# What this export knows; the playbook's vars_files.\n")),
        ("group_vars/all.yml", _dump({
            "kubecrate_root": "/",
            "kubecrate_dir": "/var/tmp/kubecrate",
            "kubecrate_environment": {},
        }, header + "# Per-host settings: override them in host_vars/<node>.yml.\n"
           "# kubecrate_dir: where the .pyz, cluster.yaml and the bundle are copied on a host.\n"
           "# kubecrate_environment: extra environment for the installer (say LANG).\n")),
    ]
    for name, target in STATIC:
        data = pkgutil.get_data("installer", "templates/fleet/" + name)
        if data is None:  # pragma: no cover - a broken package
            raise FleetError("the installer lacks templates/fleet/" + name)
        contents.append((target, data))
    with open(cluster_path, "rb") as handle:
        contents.append(("files/cluster.yaml", handle.read()))
    if not digest:
        raise FleetError(
            "{}: its signature's trusted comment names no bundle.json digest (signed with "
            "stock `minisign -S`), so the joining nodes could not check the bundle they fetch "
            "from the first control-plane node".format(bundle_path),
            hint="sign the bundle with `kubecrate pack` / `kubecrate build`")
    view = servedsource.write_view(bundle_path, key, os.path.join(out, VIEW_DIR))
    written = [os.path.relpath(view, out)]
    for relative, data in contents:
        _write(out, relative, lambda stream, data=data: stream.write(data), 0o644)
        written.append(relative)
    _write(out, "files/" + PYZ_NAME, lambda stream: _copy(pyz_path, stream), 0o755)
    written.append("files/" + PYZ_NAME)
    return Export(out, written, digest, len(cluster.nodes))


def _ansible_cfg(forks: int) -> str:
    return """\
# Written by `kubecrate-installer.pyz fleet export` (docs/fleet.md).
[defaults]
inventory = inventory.yml
forks = {forks}
retry_files_enabled = False
interpreter_python = auto_silent

[ssh_connection]
# one SSH session per task instead of three: modules are piped to the host's Python
pipelining = True
""".format(forks=forks)


def _copy(source: str, stream: Any) -> None:
    with open(source, "rb") as handle:
        shutil.copyfileobj(handle, stream)


def _write(top: str, relative: str, fill: Any, mode: int) -> None:
    path = os.path.join(top, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    replace_file(path, fill, mode)
