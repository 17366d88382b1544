"""Sample load-balancer and kubeadm settings shared by the render golden tests, the real-tool
integration tests, the VIP failover e2e test and the failover and flapping benchmarks.
Addresses are in 10.213.0.0/24, a range that exists only inside the lab's network namespaces."""

import datetime
from typing import Any, Dict

from installer import joinfile
from installer.format import lbspec
from installer.kubeadmconfig import NodeAddress

VIP = "10.213.0.100"
CONTROL_PLANES = (lbspec.Peer("cp1", "10.213.0.11"), lbspec.Peer("cp2", "10.213.0.12"),
                  lbspec.Peer("cp3", "10.213.0.13"))
WORKER = NodeAddress("worker1", "10.213.0.21")
TOKEN = "abcdef.0123456789abcdef"
CERT_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
CA_HASH = "sha256:" + "5e" * 32
NOW = datetime.datetime(2024, 1, 1, 12, 0, 0)


def load_balancer(mode: str = "services", **overrides) -> lbspec.LoadBalancer:
    data: Dict[str, Any] = {"mode": mode, "interface": "eth0", "router_id": 51,
                            "auth_pass": "kc3cret1"}
    data.update(overrides)
    vip = data.pop("vip", VIP)
    port = data.pop("port", None)
    peers = data.pop("peers", CONTROL_PLANES)
    return lbspec.parse_load_balancer(data, vip, port, peers)


def kubeadm_1_23(**overrides) -> lbspec.Kubeadm:
    return lbspec.parse_kubeadm(overrides or None, "v1.23.17", "registry.k8s.io", "docker",
                                VIP + ":8443", "10.244.0.0/16", "10.96.0.0/12")


def kubeadm_1_28(**overrides) -> lbspec.Kubeadm:
    return lbspec.parse_kubeadm(overrides or None, "v1.28.15", "registry.k8s.io",
                                "containerd", VIP + ":8443", "10.244.0.0/16", "10.96.0.0/12")


def kubeadm_1_33(**overrides) -> lbspec.Kubeadm:
    return lbspec.parse_kubeadm(overrides or None, "v1.33.7", "registry.k8s.io",
                                "containerd", VIP + ":8443", "10.244.0.0/16", "10.96.0.0/12")


def join_info() -> joinfile.JoinInfo:
    return joinfile.new_join_info(VIP + ":8443", CA_HASH, NOW, TOKEN, CERT_KEY)


def node(peer) -> NodeAddress:
    return NodeAddress(peer.name, peer.address)
