"""CNI: the pod network cluster.yaml's networking.cni names (flannel unless the bundle carries
only calico: chosen()), from the bundle's addons/, applied once, from the first control-plane
node, with `kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f`. calico's half is
installer/steps/calico.py; what follows is flannel's.

The bundled kube-flannel.yml is customised structurally, not with sed: its net-conf.json gets
the cluster's pod CIDR, and the kube-flannel container (when it runs with --kube-subnet-mgr)
selects its interface per node: env FLANNELD_IFACE from the downward API `status.hostIP` (the
node's InternalIP, i.e. the kubelet's --node-ip = the node's cluster.yaml address). Air-gapped
hosts often have no default route, so flannel's default (the default-route interface) cannot
be relied on; and one `--iface=<address>` in the cluster-wide DaemonSet only exists on one node:
flanneld on every other node logs "Failed to find interface to use that matches the interfaces
and/or regexes provided" and exits (flannel main.go, the LookupExtIface loop in main()). flannel
reads FLANNELD_<FLAG> for every flag not given on the command line (main.go
flagutil.SetFlagsFromEnv(flannelFlags, "FLANNELD")), and --iface takes an address as well as a
name (LookupExtIface: net.ParseIP, then ip.GetInterfaceByIP). Any --iface* argument in the
bundled manifest is removed, because a command-line flag would win over the env. flannel's
VXLAN MTU is left alone: flanneld derives it from the chosen interface (docs/cluster.md).
The result is written as JSON documents
(JSON is YAML, and it stays inside the subset the stand-ins read) to MANIFEST; STAMP records the
digest of what was applied, so a re-run applies nothing unless the manifest changed.
"""

import hashlib
import json
import os
from functools import partial
from typing import List, Optional

from installer.bundlecache import read_verified
from installer.format.errors import VerificationError
from installer.steps import Action, ActionStep, Context, calico, coredns, manifestdocs
from installer.steps.cnichoice import choice_problem, chosen
from installer.steps.loadbalancer import ADMIN_CONF, is_first

MANIFEST = "/etc/kubernetes/kubecrate/kube-flannel.yml"
STAMP = "/var/lib/kubecrate/cni-applied"
FLANNEL_CONTAINER = "kube-flannel"
IFACE_ENV = "FLANNELD_IFACE"
IFACE_FLAGS = ("--iface", "--iface-regex", "--iface-can-reach")


def bundled_manifest(ctx: Context) -> Optional[str]:
    """The bundle path of the chosen CNI's manifest: bundle.json's addons.<cni>.manifest,
    which the builder writes (installer/format/bundleinfo.py)."""
    addon = ctx.info.addons.get(chosen(ctx))
    return addon.manifest if addon else None


def customize(text: str, pod_cidr: str) -> str:
    """kube-flannel.yml with `pod_cidr` in net-conf.json and the per-node interface selection
    (FLANNELD_IFACE = status.hostIP) on the kube-flannel container."""
    docs = manifestdocs.load(text)
    for doc in docs:
        data = doc.get("data") if doc.get("kind") == "ConfigMap" else None
        if isinstance(data, dict) and "net-conf.json" in data:
            conf = json.loads(data["net-conf.json"])
            conf["Network"] = pod_cidr
            data["net-conf.json"] = json.dumps(conf, indent=2, sort_keys=True) + "\n"
        if doc.get("kind") == "DaemonSet":
            for container in manifestdocs.containers(doc):
                args = container.get("args")
                if container.get("name") == FLANNEL_CONTAINER and isinstance(args, list) and \
                        "--kube-subnet-mgr" in args:
                    select_iface_per_node(container)
    return manifestdocs.dump(docs)


def run_as_spc_t(text: str) -> str:
    """`selinux: enforcing` (docs/selinux.md): every DaemonSet of the CNI manifest runs its pods
    as spc_t. Their init containers write /opt/cni/bin and /etc/cni/net.d, and the agents
    /run/flannel or /var/lib/calico: host folders that a container_t process may not write and
    the kubelet does not relabel (hostPath volumes never are)."""
    docs = manifestdocs.load(text)
    for doc in docs:
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") \
            if doc.get("kind") == "DaemonSet" else None
        if isinstance(pod, dict):
            pod.setdefault("securityContext", {})["seLinuxOptions"] = {"type": "spc_t"}
    return manifestdocs.dump(docs)


def select_iface_per_node(container: dict) -> None:
    """Drop any --iface/--iface-regex/--iface-can-reach argument and set env FLANNELD_IFACE
    from the downward API status.hostIP (replacing an existing FLANNELD_IFACE*)."""
    args, kept, skip = container.get("args") or [], [], False
    for arg in args:
        text = str(arg)
        if skip:
            skip = False
            continue
        if text in IFACE_FLAGS:
            skip = True  # "--iface eth0": the value is the next argument
            continue
        if text.split("=", 1)[0] in IFACE_FLAGS:
            continue
        kept.append(arg)
    container["args"] = kept
    env = [e for e in container.get("env") or []
           if not (isinstance(e, dict) and str(e.get("name", "")).startswith(IFACE_ENV))]
    env.append({"name": IFACE_ENV,
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}})
    container["env"] = env


class CniStep(ActionStep):
    name = "cni"
    title = "The CNI (flannel or calico) from the bundle's addons/ and CoreDNS's forwarder " \
        "(first control-plane node)"

    def actions(self, ctx: Context) -> List[Action]:
        if not is_first(ctx):
            return []
        problem = choice_problem(ctx)
        source = bundled_manifest(ctx)
        if problem or source is None:
            raise VerificationError(problem or "bundle {} has no {} manifest".format(
                ctx.info.name, chosen(ctx)),
                hint="set networking.cni to one the bundle carries, or build the bundle with "
                     "that add-on (docs/cluster.md)")
        if not ctx.unpacked():
            return [Action("apply {} (pod CIDR {})".format(source, ctx.cluster.pod_cidr),
                           lambda: None)]
        raw = read_verified(os.path.join(ctx.bundle_dir, source), ctx.info.hashes[source], source)
        return manifest_actions(ctx, source, raw) + coredns.actions(ctx)


def running(ctx: Context) -> Optional[str]:
    """The CNI this (first control-plane) node applied, by the manifest it kept; None before
    the cni step ran."""
    for name, path in (("calico", calico.MANIFEST), ("flannel", MANIFEST)):
        if ctx.host.exists(path):
            return name
    return None


def manifest_actions(ctx: Context, source: str, raw: bytes) -> List[Action]:
    """The apply of the chosen CNI's manifest, the bundle's `source` (bytes `raw`) made right
    for this cluster; none when STAMP says exactly this text was applied and the kept copy
    holds it (install's re-run, and an upgrade whose bundle carries the same manifest)."""
    if chosen(ctx) == "calico":
        try:
            text = calico.customize(raw.decode("utf-8"), ctx.cluster.pod_cidr,
                                    ctx.info.major_release)
        except ValueError as err:
            raise VerificationError("{}: {}".format(source, err))
        target, how = calico.MANIFEST, "CALICO_IPV4POOL_CIDR {}, {} = {}, " \
            "FELIX_IPTABLESBACKEND = {}".format(
                ctx.cluster.pod_cidr, "IP_AUTODETECTION_METHOD", calico.AUTODETECTION,
                calico.iptables_backend(ctx.info.major_release))
    else:
        text = customize(raw.decode("utf-8"), ctx.cluster.pod_cidr)
        target, how = MANIFEST, "pod CIDR {} and {} = each node's status.hostIP".format(
            ctx.cluster.pod_cidr, IFACE_ENV)
    if ctx.cluster.enforcing:
        text = run_as_spc_t(text)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if (ctx.host.read_text(STAMP) or "").strip() == digest and \
            ctx.host.needs_write(target, text.encode("utf-8")) is None:
        return []
    return [Action("apply {} with {}".format(source, how),
                   partial(_apply, ctx, target, text, digest))]


def _apply(ctx: Context, target: str, text: str, digest: str) -> None:
    ctx.host.write(target, text)
    ctx.runner.run(["kubectl", "--kubeconfig", ADMIN_CONF, "apply", "-f", target],
                   timeout=300,
                   hint="kubectl applied what it could of {} and names what the apiserver "
                        "refused; a DaemonSet whose spec.selector changed (immutable) must be "
                        "deleted first (`kubectl delete daemonset NAME -n NAMESPACE`), then run "
                        "this again".format(target))
    ctx.host.write(STAMP, digest + "\n")  # only once all of it applied: a re-run retries
