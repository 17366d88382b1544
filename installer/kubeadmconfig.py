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
from typing import NamedTuple, Optional, Sequence

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


class NodeAddress(NamedTuple):
    name: str
    address: str


def init_config(k: Kubeadm, node: NodeAddress, token: str, certificate_key: str,
                apiserver_port: int = APISERVER_PORT, cert_sans: Sequence[str] = ()) -> str:
    """InitConfiguration + ClusterConfiguration + KubeletConfiguration (systemd cgroups) +
    KubeProxyConfiguration for the first control-plane node."""
    if not TOKEN_RE.match(token):
        raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
    if not CERTIFICATE_KEY_RE.match(certificate_key):
        raise ValueError("certificate key must be 64 lowercase hex digits")
    return render("kubeadm-init.yaml.j2", api=api_version(k.minor), k=k, node=node,
                  token=token, token_ttl=TOKEN_TTL,
                  certificate_key=certificate_key, apiserver_port=apiserver_port,
                  cert_sans=list(cert_sans))


def join_config(k: Kubeadm, node: NodeAddress, join: JoinInfo, control_plane: bool,
                apiserver_port: int = APISERVER_PORT) -> str:
    """JoinConfiguration for a worker, or with `control_plane` for another control-plane node
    (which then needs join.certificate_key)."""
    validate(join)
    if control_plane and not join.certificate_key:
        raise ValueError("a control-plane join needs join.yaml's certificate_key")
    return render("kubeadm-join.yaml.j2", api=api_version(k.minor), k=k, node=node, join=join,
                  control_plane=control_plane, apiserver_port=apiserver_port)


def refresh_config(kubernetes_version: str, token: Optional[str] = None,
                   certificate_key: Optional[str] = None, cri_socket: Optional[str] = None) -> str:
    """The 0600 config of `kubeadm token create --config` (with `token`) or `kubeadm init phase
    upload-certs --config` (with `certificate_key`): kubeadm refuses --certificate-key next to
    --config, and without kubernetesVersion it asks dl.k8s.io first."""
    if (token is None) == (certificate_key is None):
        raise ValueError("a refresh config carries either a token or a certificate key")
    if token is not None and not TOKEN_RE.match(token):
        raise ValueError("bootstrap token must match [a-z0-9]{6}.[a-z0-9]{16}")
    if certificate_key is not None and not CERTIFICATE_KEY_RE.match(certificate_key):
        raise ValueError("certificate key must be 64 lowercase hex digits")
    return render("kubeadm-refresh.yaml.j2", api=api_version(_minor(kubernetes_version)),
                  kubernetes_version=kubernetes_version, token=token,
                  token_ttl=TOKEN_TTL, certificate_key=certificate_key, cri_socket=cri_socket)
