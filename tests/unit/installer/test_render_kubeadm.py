"""kubeadm v1beta3 configs: golden files, and the fields whose mistakes break an offline HA
install (docs/cluster.md). Each config is also read with the stand-ins' strict YAML
reader, which the real kubeadm's decoder is at least as lenient as."""

import pytest
import yaml
from mirrorworld.standins import _yaml as standin_yaml

from installer import kubeadmconfig
from tests import lbsamples


def _docs(text):
    docs = list(yaml.safe_load_all(text))
    assert docs == standin_yaml.load_all(text)
    return {doc["kind"]: doc for doc in docs}


def test_init_1_23_docker_matches_golden():
    text = kubeadmconfig.init_config(lbsamples.kubeadm_1_23(), lbsamples.node(
        lbsamples.CONTROL_PLANES[0]), lbsamples.TOKEN, lbsamples.CERT_KEY,
        cert_sans=[lbsamples.VIP])
    lbsamples.check_golden("kubeadm/init-1.23-docker.yaml", text)
    docs = _docs(text)
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["nodeRegistration"]["criSocket"] == "/var/run/dockershim.sock"
    assert init["nodeRegistration"]["kubeletExtraArgs"] == {"node-ip": "10.213.0.11"}
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.213.0.11", "bindPort": 6443}
    assert init["certificateKey"] == lbsamples.CERT_KEY
    assert init["bootstrapTokens"][0]["token"] == lbsamples.TOKEN
    assert cluster["kubernetesVersion"] == "v1.23.17"
    assert cluster["imageRepository"] == "registry.k8s.io"
    assert cluster["controlPlaneEndpoint"] == "10.213.0.100:8443"
    assert cluster["networking"]["podSubnet"] == "10.244.0.0/16"
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert docs["KubeProxyConfiguration"]["mode"] == "iptables"


def test_init_1_28_containerd_ipvs_matches_golden():
    text = kubeadmconfig.init_config(lbsamples.kubeadm_1_28(kube_proxy_mode="ipvs"),
                                     lbsamples.node(lbsamples.CONTROL_PLANES[0]),
                                     lbsamples.TOKEN, lbsamples.CERT_KEY)
    lbsamples.check_golden("kubeadm/init-1.28-containerd.yaml", text)
    docs = _docs(text)
    assert docs["InitConfiguration"]["nodeRegistration"]["criSocket"] == \
        "unix:///run/containerd/containerd.sock"
    assert docs["KubeProxyConfiguration"]["mode"] == "ipvs"
    assert "apiServer" not in docs["ClusterConfiguration"]


def test_join_configs_match_golden():
    k = lbsamples.kubeadm_1_23()
    cp = kubeadmconfig.join_config(k, lbsamples.node(lbsamples.CONTROL_PLANES[1]),
                                   lbsamples.join_info(), control_plane=True)
    worker = kubeadmconfig.join_config(k, lbsamples.WORKER, lbsamples.join_info(),
                                       control_plane=False)
    lbsamples.check_golden("kubeadm/join-control-plane.yaml", cp)
    lbsamples.check_golden("kubeadm/join-worker.yaml", worker)
    cp_doc = _docs(cp)["JoinConfiguration"]
    assert cp_doc["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.213.0.100:8443"
    assert cp_doc["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "10.213.0.12",
                                                           "bindPort": 6443},
                                      "certificateKey": lbsamples.CERT_KEY}
    worker_doc = _docs(worker)["JoinConfiguration"]
    assert "controlPlane" not in worker_doc
    assert worker_doc["nodeRegistration"]["kubeletExtraArgs"] == {"node-ip": "10.213.0.21"}


def test_control_plane_join_without_certificate_key_is_refused():
    info = lbsamples.join_info()._replace(certificate_key=None, certificate_key_expires=None)
    with pytest.raises(ValueError, match="certificate_key"):
        kubeadmconfig.join_config(lbsamples.kubeadm_1_23(), lbsamples.WORKER, info, True)


@pytest.mark.parametrize("token,key", [("ABCDEF.0123456789abcdef", lbsamples.CERT_KEY),
                                       (lbsamples.TOKEN, "0123")])
def test_init_refuses_malformed_secrets(token, key):
    with pytest.raises(ValueError):
        kubeadmconfig.init_config(lbsamples.kubeadm_1_23(), lbsamples.WORKER, token, key)
