"""What `kubectl get` shows beyond the objects the apiserver stand-in stores, from the model of
the cluster: each Node's Ready condition from the per-node CNI models (_podnet.py, _calico.py),
the pods the model says would run (CNI, CoreDNS, the etcd mirror pods) and the two Services a
kubeadm cluster starts with. kubectl.py and the kubeadm upgrade's health check use it."""

import json

import _calico
import _kubeadm_config
import _podexec
import _podnet
from _common import VERSION, StandinError


def cluster_config(client):
    """The ClusterConfiguration kubeadm init uploaded (ConfigMap kube-system/kubeadm-config),
    or {} before init."""
    try:
        cm = client.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        return json.loads((cm.get("data") or {}).get("ClusterConfiguration") or "{}")
    except (StandinError, ValueError):
        return {}


def node_status(client, nodes, objects, config=None):
    """Each Node's Ready condition from the per-node CNI model (_podnet.py for flannel,
    _calico.py for calico); flannel's own annotations (public-ip, backend-type:
    subnet/kube/kube.go AcquireLease) where it runs, calico's (projectcalico.org/IPv4Address
    and IPv4VXLANTunnelAddr) where calico-node runs; spec.podCIDR as kube-controller-manager
    allocates it from kubeadm's podSubnet (_podexec.pod_cidrs)."""
    subnet = ((config or {}).get("networking") or {}).get("podSubnet")
    cidrs = _podexec.pod_cidrs(nodes, subnet) if subnet else {}
    if _calico.calico_pods(objects):
        return _calico_status(nodes, objects, subnet or "", cidrs)
    for node in nodes:
        flannel = _podnet.flannel_on(node, objects)
        ready = flannel["running"]
        node["status"]["conditions"] = [{
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": flannel["message"]}]
        if node["metadata"]["name"] in cidrs:
            node.setdefault("spec", {})["podCIDR"] = cidrs[node["metadata"]["name"]]
        if flannel["running"]:
            node["metadata"].setdefault("annotations", {}).update({
                "flannel.alpha.coreos.com/public-ip": flannel["public_ip"],
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "kubecrate.standin/flannel-mtu": str(flannel["mtu"])})
    return nodes


def calico_results(nodes, objects, subnet):
    return {n["metadata"]["name"]: _calico.calico_on(nodes, n, objects, subnet) for n in nodes}


def _calico_status(nodes, objects, subnet, cidrs):
    results = calico_results(nodes, objects, subnet)
    for node in nodes:
        name = node["metadata"]["name"]
        calico = results[name]
        node["status"]["conditions"] = [{
            "type": "Ready", "status": "True" if calico["running"] else "False",
            "reason": "KubeletReady" if calico["running"] else "KubeletNotReady",
            "message": calico["message"]}]
        if name in cidrs:
            node.setdefault("spec", {})["podCIDR"] = cidrs[name]
        if calico["running"]:
            node["metadata"].setdefault("annotations", {}).update({
                _calico.ADDRESS: calico["address"], _calico.TUNNEL: calico["tunnel"],
                "kubecrate.standin/calico-pool": calico["pool"],
                "kubecrate.standin/calico-iptables-backend": calico["backend"]})
    return nodes


ENDPOINT_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"


def etcd_pods(client, nodes):
    """The etcd mirror pods of a stacked-etcd cluster: one per control-plane node that is an
    etcd member (the apiserver stand-ins' member list plays etcd's, docs/testing.md), labelled
    component=etcd as kubeadm's manifest is and annotated with its client URL, which is where
    kubeadm itself finds the members (cmd/kubeadm/app/util/etcd/etcd.go,
    getRawEtcdEndpointsFromPodAnnotation)."""
    try:
        members = client.call("GET", "/kubecrate/v1/state").get("members") or {}
    except StandinError:  # a store without members (the unit tests' fake): no etcd pods
        members = {}
    live = {key for key, entry in members.items() if not entry.get("deleted")}
    pods = []
    for node in nodes:
        endpoint = (node["metadata"].get("annotations") or {}).get(ENDPOINT_ANNOTATION)
        if not endpoint or endpoint not in live:
            continue
        name = node["metadata"]["name"]
        pod = _pod("etcd-" + name, "kube-system", {"component": "etcd",
                                                  "tier": "control-plane"}, name, True, "",
                   ("etcd", "etcd"))
        pod["metadata"]["annotations"] = {
            "kubeadm.kubernetes.io/etcd.advertise-client-urls":
                "https://%s:2379" % endpoint.rpartition(":")[0]}
        pods.append(pod)
    return pods


def synthetic_pods(client, nodes, objects, config=None):
    """The pods the model says would exist: one kube-flannel pod per node (DaemonSet), one
    CoreDNS pod per Ready node (the Deployment may land on any of them) and the etcd mirror
    pods (etcd_pods)."""
    pods = etcd_pods(client, nodes)
    try:
        cm = client.call("GET", "/api/v1/namespaces/kube-system/configmaps/coredns")
    except StandinError:
        cm = None
    corefile = _podnet.corefile(objects, {"kube-system/coredns": cm} if cm else {})
    flannel_pods = _podnet.flannel_pods(objects)
    calico_pods = _calico.calico_pods(objects)
    subnet = ((config or {}).get("networking") or {}).get("podSubnet") or ""
    calico = calico_results(nodes, objects, subnet) if calico_pods else {}
    coredns_image = [i for i in _kubeadm_config.images(VERSION, (config or {}).get(
        "imageRepository")) if "coredns" in i][0]
    for node in nodes:
        name = node["metadata"]["name"]
        ready = node["status"]["conditions"][0]["status"] == "True"
        if flannel_pods:
            flannel = _podnet.flannel_on(node, objects)
            container = flannel_pods[1]
            pods.append(_pod("kube-flannel-ds-" + name, "kube-flannel", {"app": "flannel"},
                             name, flannel["running"], flannel["message"],
                             (container.get("name", "kube-flannel"),
                              container.get("image", ""))))
        if calico_pods:
            pods.append(_pod("calico-node-" + name, "kube-system", {"k8s-app": "calico-node"},
                             name, calico[name]["running"], calico[name]["message"],
                             (_calico.CONTAINER, calico_pods[1].get("image", ""))))
        if ready:
            dns = _podnet.coredns_on(node, corefile)
            pods.append(_pod("coredns-" + name, "kube-system", {"k8s-app": "kube-dns"}, name,
                             dns["ready"], dns["message"], ("coredns", coredns_image)))
    return pods


def services(config):
    """The two Services a kubeadm cluster has from the start: `kubernetes` (the apiserver's,
    1st address of the service subnet) and kubeadm's `kube-dns` (addons/dns, the 10th)."""
    if not config:
        return []
    api_ip, dns_ip = _podexec.service_ips(
        (config.get("networking") or {}).get("serviceSubnet") or "10.96.0.0/12")
    return [{"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": address, "ports": ports}} for name, namespace, labels, address,
        ports in (
            ("kubernetes", "default", {"component": "apiserver", "provider": "kubernetes"},
             api_ip, [{"name": "https", "port": 443, "protocol": "TCP"}]),
            ("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, dns_ip,
             [{"name": "dns", "port": 53, "protocol": "UDP"},
              {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]))]


def _pod(name, namespace, labels, node, ready, message, container):
    """A Running pod whose one container runs when Ready, else waits in CrashLoopBackOff."""
    state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if ready else {
        "waiting": {"reason": "CrashLoopBackOff", "message": message}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": container[0],
                                                       "image": container[1]}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "message": message}],
                       "containerStatuses": [{"name": container[0], "image": container[1],
                                              "ready": ready, "state": state}]}}
