"""calico's manifest made right for this cluster on every node (the calico half of cni.py).

The bundled calico.yaml (builder/data/calico.yaml.j2: calico's manifest install in VXLAN mode,
Kubernetes API datastore) is customised structurally, on the `calico-node` container of the
`calico-node` DaemonSet, by replacing these env entries (any earlier entry of the same name
goes, so the manifest's own defaults never win):
- CALICO_IPV4POOL_CIDR = cluster.yaml's pod_cidr. calico-node creates its default IPv4 pool
  from this variable, else from kubeadm-config's podSubnet, else 192.168.0.0/16 (calico
  node/pkg/lifecycle/startup/startup.go configureIPPools, extractKubeadmCIDRs), and it
  creates a pool outside the cluster's podSubnet without a word, so the installer always sets
  it: kube-proxy's clusterCIDR (kubeadm: podSubnet) must cover the pods' addresses.
- IP = autodetect and IP_AUTODETECTION_METHOD = kubernetes-internal-ip: every node takes the
  address calico uses for VXLAN from its own Node's first InternalIP (autodetection_methods.go
  autoDetectUsingK8sInternalIP), i.e. the kubelet's --node-ip = the node's cluster.yaml
  address. calico's default, first-found, takes the first address of the first interface not
  excluded by name (autoDetectCIDRFirstFound, DEFAULT_INTERFACES_TO_EXCLUDE): on a host with
  several NICs that may be a storage or management network the other nodes cannot reach, and
  `can-reach=<VIP>` picks the interface of the route to the VIP, which is the wrong one on a
  worker whose cluster network is not its default route. One value in the cluster-wide
  DaemonSet is right on every node only when it is read per node: the Node's InternalIP is.
- FELIX_IPTABLESBACKEND = NFT on EL8/EL9 (their iptables is iptables-nft: kube-proxy and the
  host write nf_tables), Legacy on EL7 (iptables 1.4, legacy only). felix's default, Auto,
  guesses from which backend already holds rules (felix/iptables: DetectBackend); the host's
  platform is known, so nothing is left to guess. Values: felix config_params.go
  IptablesBackend `oneof(legacy,nft,auto)`.
The result is written as JSON documents to MANIFEST, as cni.py does for flannel.
"""

from typing import Any, Dict

from installer.steps import manifestdocs

MANIFEST = "/etc/kubernetes/kubecrate/calico.yaml"
NODE_DAEMONSET = "calico-node"
NODE_CONTAINER = "calico-node"
AUTODETECTION = "kubernetes-internal-ip"
# the calico-node pods (smoke check) and the Node annotation calico writes with the address of
# this node's vxlan.calico device (libcalico-go lib/backend/k8s/conversion, KDD node
# annotations projectcalico.org/IPv4VXLANTunnelAddr)
NODE_LABEL = "k8s-app=calico-node"
TUNNEL_ADDR = "projectcalico.org/IPv4VXLANTunnelAddr"
# calico's VXLAN port (calico requirements "Network requirements": UDP 4789), its devices
# (NetworkManager must leave them alone: calico "Configure NetworkManager"), and the kernel
# modules felix needs with a VXLAN pool: ipsets for policy (ip_set, xt_set), the VXLAN device.
VXLAN_PORT = "4789/udp"
DEVICES = ("cali*", "vxlan.calico", "tunl*")
TRUSTED_INTERFACES = ("vxlan.calico",)
MODULES = ("ip_set", "xt_set", "vxlan")


def iptables_backend(major_release: str) -> str:
    """FELIX_IPTABLESBACKEND for the bundle's EL release: EL7 legacy, EL8 and later nft."""
    return "Legacy" if major_release in ("6", "7") else "NFT"


def customize(text: str, pod_cidr: str, major_release: str) -> str:
    """calico.yaml with the pool, autodetection and iptables backend of the module docstring
    on the calico-node container; raises ValueError if the manifest has no such container."""
    docs = manifestdocs.load(text)
    found = False
    for doc in docs:
        if doc.get("kind") != "DaemonSet" or \
                (doc.get("metadata") or {}).get("name") != NODE_DAEMONSET:
            continue
        for container in manifestdocs.containers(doc):
            if container.get("name") == NODE_CONTAINER:
                found = True
                set_env(container, {
                    "CALICO_IPV4POOL_CIDR": pod_cidr,
                    "IP": "autodetect",
                    "IP_AUTODETECTION_METHOD": AUTODETECTION,
                    "FELIX_IPTABLESBACKEND": iptables_backend(major_release)})
    if not found:
        raise ValueError("no {} container in a {} DaemonSet".format(NODE_CONTAINER,
                                                                    NODE_DAEMONSET))
    return manifestdocs.dump(docs)


def set_env(container: Dict[str, Any], values: Dict[str, str]) -> None:
    """Replace (or add) these env entries, keeping the others in order."""
    env = [e for e in container.get("env") or []
           if not (isinstance(e, dict) and e.get("name") in values)]
    env += [{"name": name, "value": value} for name, value in sorted(values.items())]
    container["env"] = env
