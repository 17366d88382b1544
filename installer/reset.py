"""`reset` and `reset --host`: undo what install did on this host, from what state.json and
the file ledger record (installer/owned.py, installer/host.py). Nothing here prints or exits;
installer/cli.py calls these."""

import contextlib
import os
from typing import Callable, List, Optional

from installer import bundleserve, owned, registryserve
from installer.host import Host
from installer.runner import Runner
from installer.session import CLUSTER_STEPS, HOST_STEPS
from installer.state import HostLock, State
from installer.steps import bundleserver, calico, etcdhost
from installer.steps import cni as cni_step
from installer.steps import kubeadm as kubeadm_step
from installer.steps.loadbalancer import KUBELET_CONF

# What the registry and bundle-server steps write, besides the registry's storage (kept, like
# the bundle cache: docs/cluster.md "images: mode"); their folders go once empty.
SERVED_FILES = (registryserve.CONFIG, registryserve.CERT, registryserve.KEY,
                registryserve.UNIT_FILE, bundleserve.SERVER_DIR + "/server.crt",
                bundleserve.SERVER_DIR + "/server.key", bundleserver.UNIT_FILE)
SERVED_DIRS = (registryserve.REGISTRY_DIR, bundleserve.SERVER_DIR)


def reset_cluster(root: str, dry_run: bool = False,
                  echo: Optional[Callable[[str], None]] = None,
                  runner: Optional[Runner] = None) -> List[str]:
    """Undo the cluster on this node: `kubeadm reset -f`, the load-balancer units stopped and
    disabled if (and only if) kubecrate started or enabled them (state.json's "owned"
    record), CNI config, root's kubeconfig, kubecrate's kubeadm files and what the registry
    and the bundle server were served with removed; the host preparation, the bundle cache
    and the registry's storage stay, so `install` rebuilds the node without a copy."""
    host = Host(root, dry_run=dry_run)
    runner = runner or Runner(root, dry_run=dry_run, echo=echo)
    changes: List[str] = []
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(HostLock(host))
        manifests = host.path("/etc/kubernetes/manifests")
        if host.exists(KUBELET_CONF) or (os.path.isdir(manifests) and os.listdir(manifests)):
            runner.run(["kubeadm", "reset", "-f"], timeout=600)
            changes.append("kubeadm reset -f")
        changes += owned.undo_units(host, runner, CLUSTER_STEPS)
        cni = host.path("/etc/cni/net.d")
        leftovers = ["/etc/cni/net.d/" + n for n in sorted(os.listdir(cni))] \
            if os.path.isdir(cni) else []
        for path in leftovers + [kubeadm_step.JOIN_FILE, kubeadm_step.INIT_CONFIG,
                                 kubeadm_step.JOIN_CONFIG, kubeadm_step.ROOT_KUBECONFIG,
                                 cni_step.MANIFEST, calico.MANIFEST, cni_step.STAMP]:
            if host.remove(path):
                changes.append("remove " + path)
        etcd_files = [path for path in etcdhost.FILES if host.remove(path)]
        changes += ["remove " + path for path in etcd_files]
        served = _remove_served(host)
        changes += ["remove " + path for path in served]
        if etcdhost.DROP_IN in etcd_files or \
                {registryserve.UNIT_FILE, bundleserver.UNIT_FILE} & set(served):
            runner.run(["systemctl", "daemon-reload"])  # a unit or drop-in went
        state = State.load(host)
        if not dry_run and any(step in state.steps for step in CLUSTER_STEPS):
            state.forget(*CLUSTER_STEPS)
    return changes


def reset_host(root: str, dry_run: bool = False,
               echo: Optional[Callable[[str], None]] = None,
               runner: Optional[Runner] = None) -> List[str]:
    """Undo the cluster (reset_cluster), then the host preparation: the units kubecrate
    started, enabled, stopped or disabled back as they were, the firewalld rules it added
    removed, every file it wrote back to its kept original (or away, if kubecrate created
    it); the host steps are forgotten. What stays is listed in docs/cluster.md (installed
    RPMs, imported keys, the running kernel's modules, sysctls and SELinux mode until a
    reboot, and the bundle cache)."""
    runner = runner or Runner(root, dry_run=dry_run, echo=echo)
    cluster_changes = reset_cluster(root, dry_run, echo, runner)
    host = Host(root, dry_run=dry_run)
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(HostLock(host))
        changes = owned.undo_units(host, runner, HOST_STEPS)
        changes += owned.undo_firewall(host, runner)
        files = ["{} {}".format("restore" if c.action == "update" else "remove", c.path)
                 for c in host.restore_all()]
        if files:
            runner.run(["systemctl", "daemon-reload"])
        changes += files
        state = State.load(host)
        if not dry_run and state.steps:
            state.forget(*HOST_STEPS)
            state.data.pop("bundle", None)
            state.save()
    return cluster_changes + changes


def _remove_served(host: Host) -> List[str]:
    """Remove SERVED_FILES (the units are stopped by then) and their emptied folders."""
    removed = [path for path in SERVED_FILES if host.remove(path)]
    for folder in SERVED_DIRS:
        path = host.path(folder)
        if not host.dry_run and os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    return removed
