"""The kubelet stand-in's image pulls for the pods the cluster runs on every node.

The real kubelet makes sure each container image of a pod bound to its node is in the runtime
before it starts the container (pkg/kubelet/images/image_manager.go EnsureImageExists): with
`imagePullPolicy: IfNotPresent` (the default for a tagged image) an image the runtime lacks is
pulled through the CRI (PullImage), and containerd resolves it as its CRI plugin is configured
(containerd docs/hosts.md: `config_path`, one hosts.toml per registry). Those pods are, on every
node: each DaemonSet's (flannel's or calico's, their init containers included) and kubeadm's
kube-proxy DaemonSet, whose image is `<imageRepository>/kube-proxy:<kubernetesVersion>` of the
ClusterConfiguration (cmd/kubeadm/app/phases/addons/proxy/manifests.go; the kubeadm stand-in
keeps no kube-proxy object, so it is derived here from ConfigMap kube-system/kubeadm-config).

This stand-in runs no such pods (the per-node model of _podnet.py judges them), but with a CRI
endpoint it does the pulls, once the node is registered: every PULL_EVERY seconds, until each
image is in the runtime, `crictl -r ENDPOINT pull IMAGE` for what `crictl inspecti` lacks (on
the e2e hosts the lab's crictl runs the real containerd 1.6: scripts/lab/hostpull.py), each
outcome logged. With dockershim nothing is pulled here (the archive loads every image).

What the node then reports: the images it still lacks, as the JSON list in its Node's
annotation ANNOTATION (written when the list changes), which the per-node model reads: a
flannel pod whose image the node lacks is ImagePullBackOff, and the node NotReady
(_podnet.flannel_on), as the real kubelet reports NetworkPluginNotReady until flanneld runs.
A node whose kubelet has not reported (dockershim, or not yet registered) is not judged here.

Not modelled: image pull back-off timing, pull secrets, `imagePullPolicy: Always`, node
selectors and tolerations (every DaemonSet counts for every node), Deployments' pods.
"""

import json
import time

PULL_EVERY = 5.0
ANNOTATION = "kubecrate.standin/images-missing"


def missing(node: dict) -> list:
    """The images `node`'s kubelet reported it lacks (ANNOTATION), [] when it did not."""
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION) or "[]"
    try:
        found = json.loads(text)
    except ValueError:
        return []
    return [str(image) for image in found] if isinstance(found, list) else []


def daemonset_images(objects: list) -> list:
    """Every container and init container image of the applied DaemonSets, in order, once."""
    found = []
    for obj in objects:
        if obj.get("kind") != "DaemonSet":
            continue
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            image = str(container.get("image") or "")
            if image and image not in found:
                found.append(image)
    return found


def kube_proxy_image(cluster: dict) -> str:
    """kubeadm's kube-proxy image for the ClusterConfiguration `cluster`."""
    repo = cluster.get("imageRepository") or "registry.k8s.io"
    version = str(cluster.get("kubernetesVersion") or "")
    return "%s/kube-proxy:%s" % (repo, version) if version else ""


def wanted(call) -> list:
    """The images of the pods every node runs, asked of the apiserver with `call(method,
    path)` (a JSON answer)."""
    images = daemonset_images(call("GET", "/kubecrate/v1/objects").get("items") or [])
    config = call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    proxy = kube_proxy_image(json.loads(((config or {}).get("data") or {}).get(
        "ClusterConfiguration") or "{}"))
    return ([proxy] if proxy else []) + images


class Pulls:
    """The pulls of one kubelet run: `step(call, has, pull, log)` from its loop."""

    def __init__(self):
        self.last = 0.0
        self.done = set()
        self.failed = {}
        self.reported = None

    def step(self, call, has, pull, log, report=None) -> None:
        """`has(image)` asks the runtime, `pull(image)` returns (ok, message); `report(list)`
        writes what the node still lacks, when that changed."""
        if time.monotonic() - self.last < PULL_EVERY:
            return
        self.last = time.monotonic()
        images = wanted(call)
        for image in images:
            if image in self.done:
                continue
            if has(image):
                self.done.add(image)
                continue
            ok, message = pull(image)
            if ok:
                self.done.add(image)
                log('Successfully pulled image "%s": %s' % (image, message))
            elif self.failed.get(image) != message:
                self.failed[image] = message
                log('Failed to pull image "%s": %s' % (image, message))
        lacking = [image for image in images if image not in self.done]
        if report is not None and lacking != self.reported:
            report(lacking)
            self.reported = lacking
