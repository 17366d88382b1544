"""Version parity: every node of a cluster runs the bundle the cluster was installed from.

Offline, a node added months later is installed from whatever bundle lies on the USB stick at
hand; kubeadm joins it all the same, and the cluster ends up with nodes of other package and
image versions that nobody chose (kubekey#2740). kubecrate records the cluster's bundle in the
ConfigMap kube-system/kubecrate-bundle at `kubeadm init` (and at each upgrade); join.yaml
carries its digest (written at init, and read back from the ConfigMap by `join-info` on any
control-plane node), and a node whose bundle differs is refused before kubeadm runs, with
both digests named.
"""

import json
from typing import List, Optional, Tuple

from installer.runner import CommandFailed, Runner
from installer.steps import Context

NAMESPACE = "kube-system"
CONFIGMAP = "kubecrate-bundle"


def record(ctx: Context, admin_conf: str) -> None:
    """Write (or overwrite) the cluster's bundle record, with the cluster admin's kubeconfig."""
    document = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE,
                             "labels": {"app.kubernetes.io/managed-by": "kubecrate"}},
                "data": {"digest": ctx.info.digest, "name": ctx.info.name,
                         "kubernetes_version": ctx.info.kubernetes_version}}
    data = json.dumps(document).encode("utf-8")
    ctx.runner.run(["kubectl", "--kubeconfig", admin_conf, "apply", "-f", "-"],
                   stdin=lambda pipe: pipe.write(data), timeout=120,
                   hint="the cluster's bundle could not be recorded; re-run install")


def cluster_bundle(runner: Runner, admin_conf: str) -> Optional[str]:
    """The digest the cluster records, or None when it records none (installed by an
    installer older than the record). Any other failure is raised by the runner."""
    done = runner.query(["kubectl", "--kubeconfig", admin_conf, "get", "configmap", CONFIGMAP,
                         "-n", NAMESPACE, "-o", "json"], timeout=60)
    if done.returncode != 0:
        if "NotFound" in done.stderr or "not found" in done.stderr:
            return None
        raise CommandFailed(done.argv, done.returncode, done.stderr,
                            "check the apiserver with `kubectl --kubeconfig {} get nodes`"
                            .format(admin_conf))
    try:
        digest = json.loads(done.stdout)["data"]["digest"]
    except (ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def findings(ctx: Context, joined_with: Optional[str], source: str
             ) -> List[Tuple[str, str, str]]:
    """A failed finding when join.yaml names another bundle than the one being installed."""
    if not joined_with or joined_with == ctx.info.digest:
        return []
    return [("fail", "{} is for a cluster installed from bundle {}, but this host is "
             "installing bundle {} ({} {}): every node of a cluster runs the same "
             "bundle".format(source, joined_with, ctx.info.digest, ctx.info.name,
                             ctx.info.kubernetes_version),
             "install with the cluster's bundle (`cache list` on a control-plane node shows "
             "it in use), or upgrade the cluster to this bundle first")]
