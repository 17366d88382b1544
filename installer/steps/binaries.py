"""Binaries and the kubelet unit: kubeadm, kubelet, kubectl and crictl to /usr/bin, the CNI
plugins to /opt/cni/bin, upstream's kubelet.service and 10-kubeadm.conf drop-in
(kubernetes/release cmd/krel/templates; there are no 1.23.17 RPMs any more),
/etc/sysconfig/kubelet (empty KUBELET_EXTRA_ARGS: --node-ip comes from kubeadm's
kubeletExtraArgs, once), kubelet enabled.

Bundle layout read: bin/<name> plain files (or bin/<name>.gz), bin/crictl-*.tar.gz, and the CNI
plugins as files under bin/cni/ or a bin/cni-plugins-*.tgz.
"""

import gzip
import hashlib
import io
import os
import tarfile
from functools import partial
from typing import Iterator, List, Tuple

from installer.bundlecache import read_verified
from installer.format.errors import VerificationError
from installer.render import render
from installer.steps import Action, ActionStep, Context
from installer.steps.hostprep import _enabled

KUBE_BINARIES = ("kubeadm", "kubelet", "kubectl", "crictl")
UNIT = "/usr/lib/systemd/system/kubelet.service"
DROP_IN = "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
SYSCONFIG = "/etc/sysconfig/kubelet"
CNI_DIR = "/opt/cni/bin"


def _sources(ctx: Context) -> Iterator[Tuple[str, str, str]]:
    """(host path, bundle path, member or "") for every binary the bundle carries."""
    files = ctx.info.files
    for name in KUBE_BINARIES:
        for candidate in ("bin/" + name, "bin/" + name + ".gz"):
            if candidate in files:
                yield "/usr/bin/" + name, candidate, ""
                break
        else:
            tarball = next((f for f in files if f.startswith("bin/{}-".format(name))
                            and f.endswith((".tar.gz", ".tgz"))), None)
            if tarball:
                yield "/usr/bin/" + name, tarball, name
            elif name != "crictl":
                raise VerificationError("bundle has no bin/{}".format(name))
    for path in files:
        if path.startswith("bin/cni/"):
            yield CNI_DIR + "/" + path[len("bin/cni/"):], path, ""
        elif path.startswith("bin/cni-plugins-") and path.endswith((".tgz", ".tar.gz")):
            yield CNI_DIR, path, "*"


def _tar_members(data: bytes, member: str) -> Iterator[Tuple[str, bytes]]:
    """(name, bytes) of regular files in a release tarball, by basename; nothing else."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar:
            name = os.path.basename(info.name)
            if not info.isfile() or name.startswith("."):
                continue
            if member in ("*", name):
                handle = tar.extractfile(info)
                yield name, handle.read() if handle else b""


class BinariesStep(ActionStep):
    name = "binaries"
    title = "Kubernetes binaries, CNI plugins and the kubelet unit"

    def actions(self, ctx: Context) -> List[Action]:
        host = ctx.host
        found: List[Action] = []
        for target, source, member in _sources(ctx):
            real = os.path.join(ctx.bundle_dir, source)
            if not member and not source.endswith(".gz"):
                if host.sha256(target) != ctx.info.hashes[source] or host.mode(target) != 0o755:
                    found.append(Action("install {} from {}".format(target, source),
                                        partial(host.copy_in, real, target, 0o755,
                                                ctx.info.hashes[source], source)))
                continue
            if not ctx.unpacked():
                found.append(Action("install {} from {}".format(target, source), lambda: None))
                continue
            # checked against the signed bundle.json before a byte is unpacked from it
            packed = read_verified(real, ctx.info.hashes[source], source)
            if member == "":
                contents = [(os.path.basename(target), gzip.decompress(packed))]
                folder = os.path.dirname(target)
            else:
                contents = list(_tar_members(packed, member))
                folder = target if member == "*" else os.path.dirname(target)
            for name, data in contents:
                path = folder + "/" + name
                if host.sha256(path) != hashlib.sha256(data).hexdigest() \
                        or host.mode(path) != 0o755:
                    found.append(Action("install {} from {}".format(path, source),
                                        partial(host.write, path, data, 0o755)))
        units = [(UNIT, render("kubelet.service.j2")), (DROP_IN, render("10-kubeadm.conf.j2")),
                 (SYSCONFIG, render("sysconfig-kubelet.j2"))]
        stale = [(p, t) for p, t in units if host.needs_write(p, t.encode("utf-8")) is not None]
        if stale:
            def write_units() -> None:
                for path, text in stale:
                    host.write(path, text)
                ctx.runner.run(["systemctl", "daemon-reload"])

            found.append(Action("write " + ", ".join(p for p, _ in stale), write_units))
        if found and ctx.cluster.enforcing:
            found.append(Action("label the installed files (restorecon)",
                                partial(_restorecon, ctx, [p for p, _ in units])))
        found.extend(_enabled(ctx, "kubelet", start=False, step="binaries"))
        return found


def _restorecon(ctx: Context, units: List[str]) -> None:
    """`selinux: enforcing` (docs/selinux.md): rpm labels what it installs from the policy's
    file contexts, a copy does not (it inherits its folder's type). restorecon gives the
    binaries, the CNI plugins and the kubelet's unit files the labels an RPM install would
    (container-selinux: /usr/bin/kubelet kubelet_exec_t)."""
    paths = sorted({target for target, _, _ in _sources(ctx)})  # CNI_DIR for a tarball
    existing = [ctx.host.path(p) for p in paths + units if ctx.host.exists(p)]
    if existing:
        ctx.runner.run(["restorecon", "-R"] + existing,
                       hint="restorecon (policycoreutils) labels what kubecrate installed")

