"""kubeadm configuration files for `kubeadm init --config` and `kubeadm join --config`, rendered
from installer/templates/: v1beta3 up to Kubernetes 1.30, v1beta4 from 1.31, where kubeadm
introduced it (kubernetes/kubernetes#125029; v1beta3 is removed in 1.35, #136016). The fields
the templates use differ in two places: `nodeRegistration.kubeletExtraArgs` is a list of
{name, value} in v1beta4 (a map before), and JoinConfiguration's `discovery.timeout` moved to
`timeouts.discovery` (cmd/kubeadm/app/apis/kubeadm/{v1beta3,v1beta4}/types.go).

Everything is explicit because the hosts are offline: kubernetesVersion (else kubeadm asks
dl.k8s.io), imageRepository (the bundle's), criSocket (exactly /var/run/dockershim.sock for 1.23
with Docker), advertiseAddress and the kubelet's node-ip (hosts often have no default route).
The token and certificate key come from installer.joinfile, generated before init runs.
"""

import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

from installer.format.lbspec import APISERVER_PORT, Kubeadm
from installer.joinfile import CERTIFICATE_KEY_RE, TOKEN_RE, JoinInfo, validate
from installer.render import render

TOKEN_TTL = "24h0m0s"
V1BETA4_FROM = 31  # the first minor whose kubeadm reads v1beta4


def api_version(minor):
    # type: (int) -> str
    """The kubeadm config API a Kubernetes minor's kubeadm is given."""
    return "kubeadm.k8s.io/v1beta4" if minor >= V1BETA4_FROM else "kubeadm.k8s.io/v1beta3"


def _minor(kubernetes_version):
    # type: (str) -> int
    match = re.match(r"^v?1\.(\d+)\.", kubernetes_version)
    if not match:
        raise ValueError("not a Kubernetes version: {!r}".format(kubernetes_version))
    return int(match.group(1))


# `selinux: enforcing` (docs/selinux.md): kubeadm sets no SELinux options on its static pods
# (it dropped etcd's spc_t in kubernetes/kubernetes#49328) and the kubelet never relabels a
# hostPath volume (pkg/volume/hostpath/host_path.go: SELinuxRelabel false), so on a host whose
# runtime labels containers (container_t) etcd could not write /var/lib/etcd nor the apiserver
# read /etc/kubernetes/pki. kubeadm's patches (v1beta3 and v1beta4 `patches.directory`, files
# named target+strategic.yaml) run the four as spc_t, at pod level, where kubeadm once put
# etcd's (#40682); kubeadm#279 names spc_t as the way to keep SELinux on.
SELINUX_PATCHES_DIR = "/etc/kubernetes/kubecrate/patches"
SELINUX_PATCH_TARGETS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SPC_T_PATCH = """# Written by kubecrate (selinux: enforcing): the pod runs as spc_t.
spec:
  securityContext:
    seLinuxOptions:
      type: spc_t
"""


def selinux_patches() -> List[Tuple[str, str]]:
    """(path, content) of the kubeadm patches that run its static pods as spc_t."""
    return [("{}/{}+strategic.yaml".format(SELINUX_PATCHES_DIR, target), SPC_T_PATCH)
            for target in SELINUX_PATCH_TARGETS]


# etcd.external: the files kubeadm's "Set up the first control plane node" step of the
# external-etcd guide copies from an etcd host (kubernetes.io/docs/setup/production-environment/
# tools/kubeadm/high-availability/, external etcd nodes) and names in ClusterConfiguration; the
# apiserver-etcd-client pair is signed by the etcd CA on the first etcd host.
EXTERNAL_ETCD_CA = "/etc/kubernetes/pki/etcd/ca.crt"
EXTERNAL_ETCD_CERT = "/etc/kubernetes/pki/apiserver-etcd-client.crt"
EXTERNAL_ETCD_KEY = "/etc/kubernetes/pki/apiserver-etcd-client.key"


class NodeAddress(NamedTuple):
    name: str
    address: str


def init_config(k: Kubeadm, node: NodeAddress, token: str, certificate_key: str,
                apiserver_port: int = APISERVER_PORT, cert_sans: Sequence[str] = (),
                patches_dir: Optional[str] = None, etcd_endpoints: Sequence[str] = ()) -> str:
    """InitConfiguration + ClusterConfiguration + KubeletConfiguration (systemd cgroups) +
    KubeProxyConfiguration for the first control-plane node; with `etcd_endpoints` (the client
    URLs of cluster.yaml's etcd.external hosts) ClusterConfiguration's etcd.external names them
    and the files the control planes hold for them."""
    if not TOKEN_RE.match(token):
        raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
    if not CERTIFICATE_KEY_RE.match(certificate_key):
        raise ValueError("certificate key must be 64 lowercase hex digits")
    return render("kubeadm-init.yaml.j2", api=api_version(k.minor), k=k, node=node,
                  token=token, token_ttl=TOKEN_TTL,
                  certificate_key=certificate_key, apiserver_port=apiserver_port,
                  cert_sans=list(cert_sans), patches_dir=patches_dir,
                  **_external_etcd(etcd_endpoints))


def _external_etcd(endpoints: Sequence[str]) -> dict:
    """The template values of ClusterConfiguration's etcd.external (none without endpoints)."""
    return {"etcd_endpoints": list(endpoints), "etcd_ca": EXTERNAL_ETCD_CA,
            "etcd_cert": EXTERNAL_ETCD_CERT, "etcd_key": EXTERNAL_ETCD_KEY}


def etcd_host_config(k: Kubeadm, node: NodeAddress, members: Sequence[NodeAddress],
                     metrics_on_address: bool = False) -> str:
    """The kubeadm config of an etcd.external host (`members`, this `node` among them) for
    `kubeadm init phase certs etcd-*` and `init phase etcd local`: the guide's etcd.local
    extraArgs, every URL on the host's address, the cluster of all members. With
    `metrics_on_address` etcd's metrics listen there too instead of on 127.0.0.1:2381 (hosts
    that share one loopback, as the tests' do)."""
    if node.name not in [m.name for m in members]:
        raise ValueError("{} is not one of the etcd members".format(node.name))
    args = [("name", node.name),
            ("initial-cluster", ",".join("{}=https://{}:2380".format(m.name, m.address)
                                         for m in members)),
            ("initial-cluster-state", "new"),
            ("listen-peer-urls", "https://{}:2380".format(node.address)),
            ("listen-client-urls", "https://{}:2379".format(node.address)),
            ("advertise-client-urls", "https://{}:2379".format(node.address)),
            ("initial-advertise-peer-urls", "https://{}:2380".format(node.address))]
    if metrics_on_address:
        args.append(("listen-metrics-urls", "http://{}:2381".format(node.address)))
    return render("kubeadm-etcd-host.yaml.j2", api=api_version(k.minor), k=k, node=node,
                  etcd_args=args)


def join_config(k: Kubeadm, node: NodeAddress, join: JoinInfo, control_plane: bool,
                apiserver_port: int = APISERVER_PORT, patches_dir: Optional[str] = None) -> str:
    """JoinConfiguration for a worker, or with `control_plane` for another control-plane node
    (which then needs join.certificate_key)."""
    validate(join)
    if control_plane and not join.certificate_key:
        raise ValueError("a control-plane join needs join.yaml's certificate_key")
    return render("kubeadm-join.yaml.j2", api=api_version(k.minor), k=k, node=node, join=join,
                  control_plane=control_plane, apiserver_port=apiserver_port,
                  patches_dir=patches_dir)


def refresh_config(kubernetes_version: str, token: Optional[str] = None,
                   certificate_key: Optional[str] = None, cri_socket: Optional[str] = None,
                   etcd_endpoints: Sequence[str] = ()) -> str:
    """The 0600 config of `kubeadm token create --config` (with `token`) or `kubeadm init phase
    upload-certs --config` (with `certificate_key`): kubeadm refuses --certificate-key next to
    --config, and without kubernetesVersion it asks dl.k8s.io first. With `etcd_endpoints`
    (external etcd) it names them as init's does: upload-certs takes the files to upload from
    this config alone (phases/copycerts/copycerts.go, certsToTransfer), and by default that is
    local etcd's CA, whose key an external-etcd control plane does not have."""
    if (token is None) == (certificate_key is None):
        raise ValueError("a refresh config carries either a token or a certificate key")
    if token is not None and not TOKEN_RE.match(token):
        raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
    if certificate_key is not None and not CERTIFICATE_KEY_RE.match(certificate_key):
        raise ValueError("certificate key must be 64 lowercase hex digits")
    return render("kubeadm-refresh.yaml.j2", api=api_version(_minor(kubernetes_version)),
                  kubernetes_version=kubernetes_version, token=token,
                  token_ttl=TOKEN_TTL, certificate_key=certificate_key, cri_socket=cri_socket,
                  **_external_etcd(etcd_endpoints))


# v1beta3 -> v1beta4, the changes `kubeadm config migrate` makes to the fields kubecrate's
# configs use (kubernetes/kubernetes#125029; cmd/kubeadm/app/apis/kubeadm/v1beta4/doc.go):
# every extraArgs / kubeletExtraArgs map becomes a list of {name, value}, JoinConfiguration's
# discovery.timeout moves to timeouts.discovery and ClusterConfiguration's
# apiServer.timeoutForControlPlane to InitConfiguration's
# timeouts.controlPlaneComponentHealthCheck.
KUBEADM_GROUP = "kubeadm.k8s.io/"
MIGRATED_HEADER = ("# Migrated by kubecrate upgrade from kubeadm.k8s.io/v1beta3 to v1beta4 for "
                   "{version}\n# (the changes of `kubeadm config migrate`).\n")


def _args_list(value):
    # type: (object) -> object
    if isinstance(value, dict):
        return [{"name": str(name), "value": str(item)} for name, item in sorted(value.items())]
    return value


def migrate(text, kubernetes_version):
    # type: (str, str) -> Optional[str]
    """`text` (kubecrate's kubeadm init or join config) at v1beta4 for `kubernetes_version`
    (kubernetesVersion set to it), or None when it needs no migration: the version is below
    1.31 or the file holds no v1beta3 document."""
    import yaml

    if _minor(kubernetes_version) < V1BETA4_FROM:
        return None
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    if not any(isinstance(d, dict) and d.get("apiVersion") == KUBEADM_GROUP + "v1beta3"
               for d in docs):
        return None
    timeout = None
    for doc in docs:
        if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith(
                KUBEADM_GROUP):
            continue
        doc["apiVersion"] = KUBEADM_GROUP + "v1beta4"
        registration = doc.get("nodeRegistration")
        if isinstance(registration, dict) and "kubeletExtraArgs" in registration:
            registration["kubeletExtraArgs"] = _args_list(registration["kubeletExtraArgs"])
        if doc.get("kind") == "ClusterConfiguration":
            doc["kubernetesVersion"] = kubernetes_version
            for part in ("apiServer", "controllerManager", "scheduler"):
                section = doc.get(part)
                if isinstance(section, dict) and "extraArgs" in section:
                    section["extraArgs"] = _args_list(section["extraArgs"])
            api_server = doc.get("apiServer")
            if isinstance(api_server, dict) and "timeoutForControlPlane" in api_server:
                timeout = api_server.pop("timeoutForControlPlane")
            local = (doc.get("etcd") or {}).get("local")
            if isinstance(local, dict) and "extraArgs" in local:
                local["extraArgs"] = _args_list(local["extraArgs"])
        discovery = doc.get("discovery")
        if doc.get("kind") == "JoinConfiguration" and isinstance(discovery, dict) and \
                "timeout" in discovery:
            doc.setdefault("timeouts", {})["discovery"] = discovery.pop("timeout")
    if timeout is not None:
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "InitConfiguration":
                doc.setdefault("timeouts", {})["controlPlaneComponentHealthCheck"] = timeout
    return MIGRATED_HEADER.format(version=kubernetes_version) + yaml.safe_dump_all(
        docs, default_flow_style=False, sort_keys=False, explicit_start=False)
