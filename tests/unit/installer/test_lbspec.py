"""Load-balancer and kubeadm settings: defaults, and validation errors that name the key."""

import pytest
from lab import lbsamples

from installer.format import lbspec


def test_defaults_for_services_mode():
    lb = lbspec.parse_load_balancer({"interface": "eth0", "auth_pass": "pw"}, lbsamples.VIP,
                                    None, lbsamples.CONTROL_PLANES)
    assert (lb.mode, lb.port, lb.apiserver_port, lb.router_id) == ("services", 8443, 6443, 51)
    assert lb.unicast_peers == ("10.213.0.11", "10.213.0.12", "10.213.0.13")
    assert [lb.priority(p.name) for p in lb.peers] == [200, 199, 198]
    assert lb.is_first("cp1") and not lb.is_first("cp2")
    assert lb.keepalived_image == "docker.io/osixia/keepalived:2.0.20"


def test_external_mode_keeps_6443_and_needs_no_vrrp_settings():
    lb = lbspec.parse_load_balancer({"mode": "external"}, None, None, lbsamples.CONTROL_PLANES)
    assert (lb.port, lb.interface, lb.auth_pass, lb.unicast_peers) == (6443, None, "", ())
    assert not lb.on_control_planes


@pytest.mark.parametrize("overrides,key,words", [
    ({"vip": "10.99.0.100"}, "control_plane.vip", "outside the control-plane nodes' subnet"),
    ({"vip": "10.213.0.12"}, "control_plane.vip", "address of node cp2"),
    ({"vip": "10.213.0.255"}, "control_plane.vip", "not a host address"),
    ({"vip": None}, "control_plane.vip", "needs a virtual IP"),
    ({"port": 6443}, "control_plane.port", "also the apiserver port"),
    ({"router_id": 256}, "load_balancer.router_id", "from 1 to 255"),
    ({"router_id": 0}, "load_balancer.router_id", "from 1 to 255"),
    ({"auth_pass": "ninechars"}, "load_balancer.auth_pass", "1 to 8 characters"),
    ({"auth_pass": ""}, "load_balancer.auth_pass", "1 to 8 characters"),
    ({"auth_pass": "a b"}, "load_balancer.auth_pass", "1 to 8 characters"),
    ({"interface": None}, "load_balancer.interface", "required"),
    ({"interface": "eth0 x"}, "load_balancer.interface", "not an interface name"),
    ({"mode": "static-pod"}, "load_balancer.mode", "did you mean 'static-pods'"),
    ({"routerid": 5}, "load_balancer.routerid", "did you mean 'router_id'"),
    ({"unicast_peers": ["10.213.0.100"]}, "load_balancer.unicast_peers[0]", "VIP"),
    ({"haproxy_image": "haproxy@sha256:" + "0" * 64}, "load_balancer.haproxy_image", "digest"),
    ({"peers": (lbspec.Peer("a", "10.213.0.11"), lbspec.Peer("b", "10.213.0.11"))},
     "nodes[1].address", "also the address of a"),
    ({"peers": (lbspec.Peer("a", "10.213.0.11"), lbspec.Peer("b", "10.213.1.11"))},
     "nodes[1].address", "not in 10.213.0.0/24"),
])
def test_invalid_load_balancer_names_the_key(overrides, key, words):
    with pytest.raises(lbspec.SpecError) as err:
        lbsamples.load_balancer(**overrides)
    assert err.value.message.startswith(key + ": ")
    assert words in err.value.diagnostics()
    assert lbspec.dotted(err.value.path) == key


def test_kubeadm_defaults_follow_the_runtime():
    assert lbsamples.kubeadm_1_23().cri_socket == "/var/run/dockershim.sock"
    k = lbsamples.kubeadm_1_28()
    assert (k.cri_socket, k.minor, k.kube_proxy_mode) == (
        "unix:///run/containerd/containerd.sock", 28, "iptables")


@pytest.mark.parametrize("call,key,words", [
    (lambda: lbsamples.kubeadm_1_23(cri_socket="unix:///var/run/dockershim.sock"),
     "kubeadm.cri_socket", "exactly '/var/run/dockershim.sock'"),
    (lambda: lbsamples.kubeadm_1_23(kubernetes_version="v1.23.16"),
     "kubeadm.kubernetes_version", "differs from the bundle's"),
    (lambda: lbsamples.kubeadm_1_23(kube_proxy_mode="ipvsadm"),
     "kubeadm.kube_proxy_mode", "did you mean 'ipvs'"),
    (lambda: lbsamples.kubeadm_1_23(image_repository="https://registry.k8s.io"),
     "kubeadm.image_repository", "not an image repository"),
    (lambda: lbspec.parse_kubeadm(None, "v1.28.15", "registry.k8s.io", "docker", "a:1",
                                  "10.244.0.0/16", "10.96.0.0/12"),
     "runtime", "no dockershim"),
    (lambda: lbspec.parse_kubeadm(None, "v1.23.17", "registry.k8s.io", "docker", "a:1",
                                  "10.96.0.0/16", "10.96.0.0/12"),
     "networking.service_cidr", "overlaps"),
])
def test_invalid_kubeadm_settings_name_the_key(call, key, words):
    with pytest.raises(lbspec.SpecError) as err:
        call()
    assert err.value.message.startswith(key + ": ")
    assert words in err.value.message
