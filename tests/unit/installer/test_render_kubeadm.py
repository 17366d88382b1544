"""kubeadm configs, v1beta3 up to 1.30 and v1beta4 from 1.31: golden files, and the fields whose
mistakes break an offline HA install (docs/cluster.md). Each config is also read with the
stand-ins' strict YAML reader, which the real kubeadm's decoder is at least as lenient as, and
checked against the stand-in's field lists of its API version (_kubeadm_schema.py)."""

import pytest
import yaml
from lab import lbsamples
from mirrorworld.standins import _extetcd, _kubeadm_schema
from mirrorworld.standins import _yaml as standin_yaml

from installer import kubeadmconfig
from installer.format.cluster import parse_cluster
from tests.golden_files import check_golden


def _docs(text):
    docs = list(yaml.safe_load_all(text))
    assert docs == standin_yaml.load_all(text)
    for doc in docs:
        assert _kubeadm_schema.unknown_fields(doc["kind"], doc, doc["apiVersion"]) == []
    return {doc["kind"]: doc for doc in docs}


def test_init_1_23_docker_matches_golden():
    text = kubeadmconfig.init_config(lbsamples.kubeadm_1_23(), lbsamples.node(
        lbsamples.CONTROL_PLANES[0]), lbsamples.TOKEN, lbsamples.CERT_KEY,
        cert_sans=[lbsamples.VIP])
    check_golden("kubeadm/init-1.23-docker.yaml", text)
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
    check_golden("kubeadm/init-1.28-containerd.yaml", text)
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
    check_golden("kubeadm/join-control-plane.yaml", cp)
    check_golden("kubeadm/join-worker.yaml", worker)
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


def test_1_33_renders_v1beta4_with_its_field_shapes():
    """From 1.31 the configs are v1beta4: kubeletExtraArgs a list of {name, value}, the
    discovery timeout under `timeouts`; every field is one v1beta4 has (the stand-in's list)."""
    k = lbsamples.kubeadm_1_33()
    init = kubeadmconfig.init_config(k, lbsamples.node(lbsamples.CONTROL_PLANES[0]),
                                     lbsamples.TOKEN, lbsamples.CERT_KEY,
                                     cert_sans=[lbsamples.VIP])
    check_golden("kubeadm/init-1.33-v1beta4.yaml", init)
    worker = kubeadmconfig.join_config(k, lbsamples.WORKER, lbsamples.join_info(),
                                       control_plane=False)
    check_golden("kubeadm/join-worker-1.33-v1beta4.yaml", worker)
    cp = kubeadmconfig.join_config(k, lbsamples.node(lbsamples.CONTROL_PLANES[1]),
                                   lbsamples.join_info(), control_plane=True)
    refresh = kubeadmconfig.refresh_config("v1.33.7", token=lbsamples.TOKEN)
    docs = _docs(init)
    for text in (init, worker, cp, refresh):
        kinds = [d for d in yaml.safe_load_all(text) if d["apiVersion"].startswith("kubeadm")]
        assert kinds and {d["apiVersion"] for d in kinds} == {"kubeadm.k8s.io/v1beta4"}
        _docs(text)
    assert docs["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "10.213.0.11"}]
    assert docs["ClusterConfiguration"]["kubernetesVersion"] == "v1.33.7"
    assert docs["ClusterConfiguration"]["apiServer"]["certSANs"] == [lbsamples.VIP]
    join = _docs(worker)["JoinConfiguration"]
    assert join["timeouts"] == {"discovery": "5m0s"} and "timeout" not in join["discovery"]
    assert join["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "10.213.0.21"}]
    assert _docs(cp)["JoinConfiguration"]["controlPlane"]["certificateKey"] == lbsamples.CERT_KEY


@pytest.mark.parametrize("version,api", [("v1.30.14", "v1beta3"), ("v1.31.0", "v1beta4"),
                                         ("v1.34.1", "v1beta4")])
def test_the_api_version_follows_the_minor(version, api):
    text = kubeadmconfig.refresh_config(version, certificate_key=lbsamples.CERT_KEY)
    assert {d["apiVersion"] for d in yaml.safe_load_all(text)} == {"kubeadm.k8s.io/" + api}


def test_the_field_lists_refuse_the_other_versions_shapes():
    """What kubeadm's strict decoder refuses: a v1beta3 config's shapes under v1beta4, and the
    reverse (the stand-in's lists, checked here so that the golden files cannot drift)."""
    v1beta3 = kubeadmconfig.join_config(lbsamples.kubeadm_1_28(), lbsamples.WORKER,
                                        lbsamples.join_info(), control_plane=False)
    doc = yaml.safe_load(v1beta3)
    assert sorted(_kubeadm_schema.unknown_fields("JoinConfiguration", doc,
                                                 "kubeadm.k8s.io/v1beta4")) == [
        "discovery.timeout", "nodeRegistration.kubeletExtraArgs (want a list)"]
    v1beta4 = kubeadmconfig.join_config(lbsamples.kubeadm_1_33(), lbsamples.WORKER,
                                        lbsamples.join_info(), control_plane=False)
    doc = yaml.safe_load(v1beta4)
    assert sorted(_kubeadm_schema.unknown_fields("JoinConfiguration", doc,
                                                 "kubeadm.k8s.io/v1beta3")) == [
        "nodeRegistration.kubeletExtraArgs (want a map)", "timeouts"]


def test_external_etcd_names_the_hosts_and_the_files_kubeadm_documents():
    """cluster.yaml's etcd.external: ClusterConfiguration.etcd.external with each host's client
    URL and the etcd CA and apiserver-etcd-client pair the control planes hold; the stand-in
    kubeadm's validation (kubeadm's ValidateEtcd) accepts it."""
    cluster = parse_cluster(
        "control_plane: {vip: 10.213.0.100, port: 8443}\nnetworking: {}\n"
        "load_balancer: {interface: eth0, auth_pass: k8sVIP42}\n"
        "nodes:\n  - {name: cp1, address: 10.213.0.11, role: control-plane}\n"
        "etcd:\n  external:\n  - {name: etcd1, address: 10.213.0.31}\n"
        "  - {name: etcd2, address: 10.213.0.32}\n")
    text = kubeadmconfig.init_config(lbsamples.kubeadm_1_23(), lbsamples.node(
        lbsamples.CONTROL_PLANES[0]), lbsamples.TOKEN, lbsamples.CERT_KEY,
        etcd_endpoints=cluster.etcd_endpoints)
    check_golden("kubeadm/init-1.23-external-etcd.yaml", text)
    etcd = _docs(text)["ClusterConfiguration"]["etcd"]
    assert etcd == {"external": {
        "endpoints": ["https://10.213.0.31:2379", "https://10.213.0.32:2379"],
        "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
        "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key"}}
    assert _extetcd.etcd_errors({"etcd": etcd}) == []
    stacked = kubeadmconfig.init_config(lbsamples.kubeadm_1_23(), lbsamples.node(
        lbsamples.CONTROL_PLANES[0]), lbsamples.TOKEN, lbsamples.CERT_KEY)
    assert "etcd" not in _docs(stacked)["ClusterConfiguration"]


@pytest.mark.parametrize("external, message", [
    ({"endpoints": ["https://10.0.0.31:2379"], "certFile": "/e.crt", "keyFile": "/e.key"},
     'etcd.external: Invalid value: "": setting .Etcd.External.CertFile and '
     ".Etcd.External.KeyFile requires .Etcd.External.CAFile"),
    ({"endpoints": ["https://10.0.0.31:2379"], "caFile": "/ca.crt", "certFile": "/e.crt"},
     "either both or none of .Etcd.External.CertFile and .Etcd.External.KeyFile must be set"),
    ({"endpoints": ["http://10.0.0.31:2379"], "caFile": "/ca.crt", "certFile": "/e.crt",
      "keyFile": "/e.key"}, 'etcd.external.endpoints: Invalid value: "http://10.0.0.31:2379": '
     "the URL must be using the HTTPS scheme"),
    ({"endpoints": ["10.0.0.31:2379"]}, "the URL without scheme is not allowed"),
    ({"endpoints": ["https://10.0.0.31:2379"], "caFile": "pki/ca.crt"},
     'etcd.external.caFile: Invalid value: "pki/ca.crt": path is not absolute'),
])
def test_the_kubeadm_stand_in_refuses_what_validate_etcd_refuses(external, message):
    """kubeadm's ValidateEtcd (cmd/kubeadm/app/apis/kubeadm/validation/validation.go), as the
    stand-in kubeadm's config validation applies it."""
    assert message in "\n".join(_extetcd.etcd_errors({"etcd": {"external": external}}))
    both = {"etcd": {"local": {}, "external": external}}
    assert _extetcd.etcd_errors(both) == [
        'etcd: Invalid value: "": .Etcd.Local and .Etcd.External are mutually exclusive']


def test_etcd_host_config_is_the_guides_for_each_member():
    """The config of `kubeadm init phase certs etcd-*` / `init phase etcd local` on an
    etcd.external host: the guide's etcd.local (SANs and extraArgs on the host's address, the
    cluster of all members), in v1beta3 and v1beta4 shapes."""
    members = [kubeadmconfig.NodeAddress("etcd1", "10.213.0.31"),
               kubeadmconfig.NodeAddress("etcd2", "10.213.0.32")]
    text = kubeadmconfig.etcd_host_config(lbsamples.kubeadm_1_23(), members[1], members)
    check_golden("kubeadm/etcd-host-1.23.yaml", text)
    docs = _docs(text)
    local = docs["ClusterConfiguration"]["etcd"]["local"]
    assert local["serverCertSANs"] == local["peerCertSANs"] == ["10.213.0.32"]
    assert local["extraArgs"]["initial-cluster"] == \
        "etcd1=https://10.213.0.31:2380,etcd2=https://10.213.0.32:2380"
    assert local["extraArgs"]["listen-client-urls"] == "https://10.213.0.32:2379"
    assert "listen-metrics-urls" not in local["extraArgs"]  # kubeadm's 127.0.0.1:2381
    assert docs["InitConfiguration"]["localAPIEndpoint"] == {"advertiseAddress": "10.213.0.32"}
    v1beta4 = _docs(kubeadmconfig.etcd_host_config(lbsamples.kubeadm_1_33(), members[0],
                                                   members))
    assert {"name": "name", "value": "etcd1"} in \
        v1beta4["ClusterConfiguration"]["etcd"]["local"]["extraArgs"]
    with pytest.raises(ValueError, match="etcd3 is not one of the etcd members"):
        kubeadmconfig.etcd_host_config(lbsamples.kubeadm_1_23(),
                                       kubeadmconfig.NodeAddress("etcd3", "10.0.0.3"), members)
