"""`kubeadm upgrade plan`, `kubeadm upgrade apply VERSION` and `kubeadm upgrade node` of the
stand-in (docs/testing.md), with kubeadm's refusals:

- the version skew policy (cmd/kubeadm/app/phases/upgrade/policy.go, EnforceVersionPolicies):
  a target more than one minor above the cluster's ("Specified version to upgrade to %q is too
  high; kubeadm can upgrade only 1 minor version at a time"), more than one minor below it
  ("... to downgrade to %q is too low ..."), a minor above kubeadm's own ("... is at least one
  minor release higher than the kubeadm minor release (%d > %d). Such an upgrade is not
  supported"): mandatory, --force does not help; a kubeadm newer than the target ("Kubeadm
  version %s can only be used to upgrade to Kubernetes version %d.%d") and kubelets more than
  one minor behind the target: skippable with --force (-f);
- the cluster health checks before plan and apply (cmd/kubeadm/app/phases/upgrade/health.go,
  CheckClusterHealth): every control-plane Node Ready (ControlPlaneNodesReady: "there are
  NotReady control-planes in the cluster: %v") and this node's static-pod manifests on disk
  (StaticPodManifest);
- etcd before its static pods are touched (cmd/kubeadm/app/phases/upgrade/staticpods.go,
  performEtcdStaticPodUpgrade: "etcd cluster is not healthy"): every control-plane node's
  member must answer; here, be in the apiserver stand-ins' member list;
- offline, the target's images must already be in the runtime (the ImagePull preflight, as
  for init);
- apply asks "Are you sure you want to proceed? [y/N]" unless --yes/-y or --force
  (cmd/kubeadm/app/cmd/upgrade/apply.go).

What changes: apply rewrites this node's control-plane manifests with the target's images and
without init's patches unless --patches names them again (regenerated(); the kubelet stand-in
restarts the apiserver, whose /version then says the target), waits for the
apiserver, and stores the target in the kubeadm-config ConfigMap; node reads the version from
that ConfigMap and does the same on another control-plane node, or, on a worker, only the
kubelet configuration. Neither touches the kubelet binary: the operator upgrades the package
and restarts the kubelet afterwards, as kubeadm says.
"""

import json
import os
import re
import sys

import _kubeadm_config as config
import _kubeadm_init as kinit
import _kubeadm_preflight as pf
import _yaml
from _clusterview import node_status
from _common import (
    VERSION,
    StandinError,
    read_text,
    rooted,
    timeout,
    wait_healthy,
    write_file,
)

MANIFESTS = "/etc/kubernetes/manifests"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
ENDPOINT_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
CP_LABEL = "node-role.kubernetes.io/control-plane"


class UpgradeError(StandinError):
    pass


def _version(text):
    m = re.match(r"\Av?(\d+)\.(\d+)\.(\d+)\Z", str(text or ""))
    if not m:
        raise UpgradeError('[upgrade/version] FATAL: couldn\'t parse version "%s"' % text)
    return tuple(int(x) for x in m.groups())


def _vstr(version):
    return "v%d.%d.%d" % version


def cluster_config(api):
    cm = api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    return json.loads((cm.get("data") or {}).get("ClusterConfiguration") or "{}")


def _nodes(api):
    nodes = api.call("GET", "/api/v1/nodes")["items"]
    objects = api.call("GET", "/kubecrate/v1/objects")["items"]
    return node_status(None, nodes, objects, cluster_config(api))


def health(api, ignored):
    """CheckClusterHealth's ControlPlaneNodesReady and StaticPodManifest."""
    print("[upgrade] Running cluster health checks")
    errors = []
    not_ready = [n["metadata"]["name"] for n in _nodes(api)
                 if CP_LABEL in (n["metadata"].get("labels") or {})
                 and n["status"]["conditions"][0]["status"] != "True"]
    if not_ready:
        errors.append(("ControlPlaneNodesReady", "there are NotReady control-planes in the "
                       "cluster: [%s]" % " ".join(not_ready)))
    missing = [rooted("%s/%s.yaml" % (MANIFESTS, c)) for c in COMPONENTS + ("etcd",)
               if not os.path.exists(rooted("%s/%s.yaml" % (MANIFESTS, c)))]
    if missing:
        errors.append(("StaticPodManifest", "The control plane seems to be Static Pod-hosted, "
                       "but some of the manifests don't seem to exist on disk. This probably "
                       "means you're running 'kubeadm upgrade' on a remote machine, which is not "
                       "supported for a Static Pod-hosted cluster. Manifest files not found: "
                       "[%s]" % " ".join(missing)))
    fatal = ["\t[ERROR %s]: %s" % e for e in errors
             if e[0].lower() not in ignored and "all" not in ignored]
    if fatal:
        raise UpgradeError("[upgrade/health] FATAL: [preflight] Some fatal errors occurred:\n"
                           "%s\n[preflight] If you know what you are doing, you can make a check "
                           "non-fatal with `--ignore-preflight-errors=...`" % "\n".join(fatal))


def policies(cluster, target, kubelets):
    """(mandatory, skippable) error lists of policy.go's EnforceVersionPolicies."""
    kubeadm = _version(VERSION)
    mandatory, skippable = [], []
    name = _vstr(target)
    if target[1] > cluster[1] + 1:
        mandatory.append('Specified version to upgrade to "%s" is too high; kubeadm can upgrade '
                         "only 1 minor version at a time" % name)
    if target[1] < cluster[1] - 1:
        mandatory.append('Specified version to downgrade to "%s" is too low; kubeadm can '
                         "downgrade only 1 minor version at a time" % name)
    if kubeadm < target:
        if target[1] > kubeadm[1]:
            mandatory.append('Specified version to upgrade to "%s" is at least one minor '
                             "release higher than the kubeadm minor release (%d > %d). Such an "
                             "upgrade is not supported" % (name, target[1], kubeadm[1]))
        else:
            skippable.append('Specified version to upgrade to "%s" is higher than the kubeadm '
                             'version "%s". Upgrade kubeadm first using the tool you used to '
                             "install kubeadm" % (name, VERSION))
    if kubeadm[0] > target[0] or kubeadm[1] > target[1]:
        skippable.append("Kubeadm version %s can only be used to upgrade to Kubernetes version "
                         "%d.%d" % (VERSION, kubeadm[0], kubeadm[1]))
    old = sorted({v for v in kubelets if _version(v)[1] + 1 < target[1]})
    if old:
        skippable.append("There are kubelets in this cluster that are too old that have these "
                         "versions [%s]" % " ".join(old))
    return mandatory, skippable


def enforce(cluster, target, kubelets, force):
    print("[upgrade/versions] Cluster version: %s" % _vstr(cluster))
    print("[upgrade/versions] kubeadm version: %s" % VERSION)
    mandatory, skippable = policies(cluster, target, kubelets)
    if mandatory:
        raise UpgradeError("[upgrade/version] FATAL: the version argument is invalid due to "
                           "these fatal errors:\n\n%s\nPlease fix the misalignments highlighted "
                           "above and try upgrading again"
                           % "".join("- %s\n" % e for e in mandatory))
    if skippable and not force:
        raise UpgradeError("[upgrade/version] FATAL: the version argument is invalid due to "
                           "these errors:\n\n%s\nCan be bypassed if you pass the --force flag"
                           % "".join("- %s\n" % e for e in skippable))
    for message in skippable:
        print("[upgrade/version] Found %d potential version compatibility errors but skipping "
              "since the --force flag is set: %s" % (len(skippable), message))


def etcd_healthy(api):
    """performEtcdStaticPodUpgrade's CheckClusterHealth: every control-plane node's etcd
    answers, i.e. is a member of the stand-ins' member list."""
    members = api.call("GET", "/kubecrate/v1/state").get("members") or {}
    live = {key for key, entry in members.items() if not entry.get("deleted")}
    for node in api.call("GET", "/api/v1/nodes")["items"]:
        endpoint = (node["metadata"].get("annotations") or {}).get(ENDPOINT_ANNOTATION)
        if endpoint and endpoint not in live:
            raise UpgradeError("[upgrade/apply] FATAL: couldn't upgrade control plane. kubeadm "
                               "has tried to recover everything into the earlier state. Errors "
                               "faced: etcd cluster is not healthy: failed to dial endpoint "
                               "https://%s:2379 with maintenance client: context deadline "
                               "exceeded" % endpoint.rpartition(":")[0])


def kubelet_versions(api):
    return [str(n["status"]["nodeInfo"].get("kubeletVersion"))
            for n in api.call("GET", "/api/v1/nodes")["items"]]


def _images_present(target, repo, ignored):
    from _kubeadm_init import preflight

    socket_ = config.cri_socket({})
    print("[upgrade/prepull] Pulling images required for setting up a Kubernetes cluster")
    preflight(pf.image_pull(config.images(_vstr(target), repo), "IfNotPresent", socket_),
              ignored)


def regenerated(text, component, image, patches_dir):
    """The static pod kubeadm writes anew for the target (cmd/kubeadm/app/phases/upgrade
    staticpods.go: controlplane.CreateStaticPodFiles and, for etcd,
    CreateLocalEtcdStaticPodManifestFile, both from the ClusterConfiguration and the
    --patches folder only): the target's image, none of the patches init or join applied
    (kubeadm keeps them nowhere; here the pod-level securityContext they added), then the
    patches of `patches_dir` (`kubeadm upgrade apply|node --patches`)."""
    pod = _yaml.load_all(text)[0]
    spec = pod.get("spec") or {}
    if "securityContext" not in spec and not patches_dir:  # as the stand-in wrote it
        return re.sub(r"(?m)^(\s*image: ).*$", lambda m: m.group(1) + image, text, count=1)
    spec.pop("securityContext", None)
    for container in spec.get("containers") or []:
        if container.get("name") == component:
            container["image"] = image
    return kinit.apply_patches(json.dumps(pod, indent=1) + "\n", component, patches_dir)


def upgrade_manifests(target, repo, patches_dir=None):
    """Rewrite this node's control-plane manifests for the target (regenerated()); wait for
    the apiserver to answer as the target (the kubelet restarts a pod whose manifest
    changed)."""
    images = config.images(_vstr(target), repo)
    wanted = {"kube-apiserver": images[0], "kube-controller-manager": images[1],
              "kube-scheduler": images[2], "etcd": images[5]}
    for component in ("etcd",) + COMPONENTS:
        path = rooted("%s/%s.yaml" % (MANIFESTS, component))
        text = read_text(path)
        new = regenerated(text, component, wanted[component], patches_dir)
        if new == text:
            print("[upgrade/staticpods] Current and new manifests of %s are equal, skipping "
                  "upgrade" % component)
            continue
        print('[upgrade/staticpods] Moving new manifest to "%s" and backing up old manifest'
              % path)
        write_file(path, new, 0o600)
    from kubelet import manifest_flags

    flags = manifest_flags(rooted(MANIFESTS + "/kube-apiserver.yaml"))
    server = "https://%s:%s" % (flags["advertise-address"], flags["secure-port"])
    ca = read_text(rooted("/etc/kubernetes/pki/ca.crt"))
    print("[upgrade/staticpods] Waiting for the kubelet to restart the component")
    print("[upgrade/staticpods] This can take up to %ds" % timeout())
    import time

    from _common import request

    deadline = time.monotonic() + timeout()
    while time.monotonic() < deadline:
        try:
            got = request(server, "GET", "/version", ca_pem=ca, timeout_s=2)
            if got.status == 200 and got.json().get("gitVersion") == _vstr(target):
                break
        except Exception:  # restarting: refused or reset until the new pod listens
            pass
        time.sleep(0.2)
    else:
        raise UpgradeError("[upgrade/apply] FATAL: couldn't upgrade control plane. kubeadm has "
                           "tried to recover everything into the earlier state. Errors faced: "
                           "timed out waiting for the condition")
    wait_healthy(server, ca)
    print('[apiclient] Found 1 Pods for label selector component=kube-apiserver')
    print('[upgrade/staticpods] Component "kube-apiserver" upgraded successfully!')


def _kubelet_config():
    print('[upgrade] Backing up kubelet config file to /etc/kubernetes/tmp/'
          'kubeadm-kubelet-config/config.yaml')
    print('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')


def plan(api, ignored):
    """`kubeadm upgrade plan`: offline it offers kubeadm's own version (it cannot ask
    dl.k8s.io for stable-1 and falls back to its client version, as `config images list`)."""
    print("[preflight] Running pre-flight checks.")
    print("[upgrade/config] Reading configuration from the \"kubeadm-config\" ConfigMap in "
          "namespace \"kube-system\"...")
    cfg = cluster_config(api)
    health(api, ignored)
    cluster = _version(cfg.get("kubernetesVersion"))
    target = _version(VERSION)
    print("[upgrade] Fetching available versions to upgrade to")
    sys.stderr.write(
        'W0101 00:00:00.000000 version.go:104] could not fetch a Kubernetes version from the '
        'internet: unable to get URL "https://dl.k8s.io/release/stable.txt": Get '
        '"https://dl.k8s.io/release/stable.txt": dial tcp: lookup dl.k8s.io: no such host\n'
        "W0101 00:00:00.000000 version.go:105] falling back to the local client version: "
        "%s\n" % VERSION)
    enforce(cluster, target, kubelet_versions(api), force=False)
    if target <= cluster:
        print("\nAwesome, you're up-to-date! Enjoy!")
        return
    repo = cfg.get("imageRepository") or config.DEFAULT_REPO
    old, new = (config.images(_vstr(v), repo) for v in (cluster, target))
    print("\nComponents that must be upgraded manually after you have upgraded the control plane "
          "with 'kubeadm upgrade apply':\nCOMPONENT   NODE      CURRENT    TARGET")
    for version in sorted(set(kubelet_versions(api))):
        print("kubelet     -         %-10s %s" % (version, VERSION))
    print("\nUpgrade to the latest stable version:\n\nCOMPONENT                 NODE      "
          "CURRENT    TARGET")
    for component, index in (("kube-apiserver", 0), ("kube-controller-manager", 1),
                             ("kube-scheduler", 2), ("kube-proxy", 3), ("CoreDNS", 6),
                             ("etcd", 5)):
        print("%-25s -         %-10s %s" % (component, old[index].rpartition(":")[2],
                                            new[index].rpartition(":")[2]))
    print("\nYou can now apply the upgrade by executing the following command:\n\n"
          "\tkubeadm upgrade apply %s\n" % VERSION)


def apply(api, args, ignored):
    if not args.version:
        raise UpgradeError("[upgrade/version] FATAL: missing one or more required arguments. "
                           "Required arguments: [version]")
    target = _version(args.version)
    print("[upgrade] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace "
          "\"kube-system\"...")
    cfg = cluster_config(api)
    print("[preflight] Running pre-flight checks.")
    health(api, ignored)
    cluster = _version(cfg.get("kubernetesVersion"))
    print("[upgrade/version] You have chosen to change the cluster version to \"%s\""
          % _vstr(target))
    enforce(cluster, target, kubelet_versions(api), args.force)
    if not (args.yes or args.force):
        sys.stdout.write("[upgrade] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise UpgradeError("won't proceed; the user didn't answer (Y|y) in order to "
                               "continue")
    repo = cfg.get("imageRepository") or config.DEFAULT_REPO
    _images_present(target, repo, ignored)
    print('[upgrade/apply] Upgrading your Static Pod-hosted control plane to version "%s" '
          "(timeout: %ds)..." % (_vstr(target), timeout()))
    etcd_healthy(api)
    upgrade_manifests(target, repo, args.patches)
    cfg["kubernetesVersion"] = _vstr(target)
    print('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the '
          '"kube-system" Namespace')
    store_config(api, cfg)
    _kubelet_config()
    print("[addons] Applied essential addon: CoreDNS\n[addons] Applied essential addon: "
          "kube-proxy\n")
    print('[upgrade] SUCCESS! A control plane node of your cluster was upgraded to "%s".\n\n'
          "[upgrade] Now please proceed with upgrading the rest of the nodes by following the "
          "right order." % _vstr(target))


def store_config(api, cfg, seconds=60.0, interval=0.5):
    """kubeadm-config's ClusterConfiguration written back, retried while the API cannot be
    reached, as kubeadm's apiclient.CreateOrUpdateConfigMap polls
    (cmd/kubeadm/app/util/apiclient/idempotency.go: wait.PollUntilContextTimeout every
    constants.KubernetesAPICallRetryInterval, 500 ms, for the KubernetesAPICall timeout, 1 min
    by default): on a single control plane the endpoint's load balancer may still hold the
    restarted apiserver DOWN when kubeadm gets here, and real kubeadm rides that out."""
    import time

    body = {"metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": json.dumps(cfg, sort_keys=True)}}
    deadline = time.monotonic() + seconds
    while True:
        try:
            return api.call("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
                            body)
        except StandinError as err:
            if not str(err).startswith("unable to reach the API server") or \
                    time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def node(api, args, ignored):
    print("[upgrade] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace "
          "\"kube-system\"...")
    cfg = cluster_config(api)
    target = _version(cfg.get("kubernetesVersion"))
    print("[preflight] Running pre-flight checks")
    control_plane = os.path.exists(rooted(MANIFESTS + "/kube-apiserver.yaml"))
    if not control_plane:
        print("[preflight] Skipping prepull. Not a control plane node.")
        print("[upgrade/control-plane] Skipping phase. Not a control plane node.")
        print("[upgrade/kubeconfig] Skipping phase. Not a control plane node.")
    else:
        # the node phase upgrades this control plane to the cluster's recorded version with
        # this kubeadm's manifests: the same minor-skew rule as apply (policy.go)
        kubeadm = _version(VERSION)
        if target[1] > kubeadm[1] or target[1] < kubeadm[1]:
            raise UpgradeError("[upgrade/version] FATAL: the version argument is invalid due to "
                               "these fatal errors:\n\n- Specified version to upgrade to \"%s\" "
                               "%s\n\nPlease fix the misalignments highlighted above and try "
                               "upgrading again" % (_vstr(target), (
                                   "is at least one minor release higher than the kubeadm "
                                   "minor release (%d > %d). Such an upgrade is not supported"
                                   % (target[1], kubeadm[1])) if target[1] > kubeadm[1] else
                                   "is lower than the kubeadm minor release (%d < %d): run "
                                   "`kubeadm upgrade apply` first" % (target[1], kubeadm[1])))
        repo = cfg.get("imageRepository") or config.DEFAULT_REPO
        _images_present(target, repo, ignored)
        print("[upgrade/control-plane] Upgrading your Static Pod-hosted control plane instance "
              'to version "%s"...' % _vstr(target))
        etcd_healthy(api)
        upgrade_manifests(target, repo, args.patches)
    _kubelet_config()
    print("[upgrade] The configuration for this node was successfully updated!\n"
          "[upgrade] Now you should go ahead and upgrade the kubelet package using your package "
          "manager.")


def run(args):
    from _kubeadm_init import Admin

    ignored = set(args.ignore_preflight_errors)
    path = args.kubeconfig
    if args.sub == "node" and path == "/etc/kubernetes/admin.conf" and \
            not os.path.exists(rooted(path)):
        path = "/etc/kubernetes/kubelet.conf"  # a worker has no admin.conf (cmd/upgrade/node.go)
    api = Admin(path)
    if args.sub == "plan":
        plan(api, ignored)
    elif args.sub == "apply":
        apply(api, args, ignored)
    else:
        node(api, args, ignored)

