"""etcd.external hosts that kubecrate installs: the etcd-certs.json file (installer/etcdcerts.py),
the etcd-host step's plan and refusals (installer/steps/etcdhost.py), the role's packages and
images, and preflight on an etcd host. The hosts themselves: tests/integration/
test_external_etcd.py."""

import os
import stat
from types import SimpleNamespace

import pytest

from installer import etcdcerts
from installer.format.bundleinfo import BundleImage
from installer.format.cluster import find_node, parse_cluster
from installer.format.errors import PreconditionError
from installer.render import render
from installer.steps import etcdhost, preflight_cluster
from tests.unit.installer.test_host_steps import GOOD, fake_ctx

ETCD = GOOD + ("cluster_name: lab\netcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n"
               "  - {name: etcd2, address: 10.0.0.32}\n")
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"


def certs_for(cluster, ca=PEM):
    return etcdcerts.EtcdCerts(cluster.name, etcdcerts.identity(cluster), {
        "ca_crt": ca, "ca_key": KEY, "client_crt": PEM, "client_key": KEY})


def etcd_ctx(tmp_path, name, certs=None, runtime="docker"):
    ctx = fake_ctx(tmp_path)
    ctx.cluster = parse_cluster(ETCD)
    ctx.node = find_node(ctx.cluster, [], name)
    ctx.info = SimpleNamespace(runtime=runtime, kubernetes_version="v1.23.17", images=(),
                               pause_image="registry.k8s.io/pause:3.6")
    ctx.etcd_certs, ctx.etcd_certs_path = certs, "/carried/etcd-certs.json" if certs else None
    return ctx


def test_the_certs_file_round_trips_and_is_written_0600(tmp_path):
    cluster = parse_cluster(ETCD)
    path = tmp_path / "etcd-certs.json"
    etcdcerts.write(str(path), certs_for(cluster))
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    loaded = etcdcerts.load(str(path), cluster)
    assert loaded == certs_for(cluster) and loaded.etcd_hosts == ["etcd1=10.0.0.31",
                                                                  "etcd2=10.0.0.32"]
    # a control plane gets the CA certificate and the client pair, never the CA key
    assert [p for p, _, _ in loaded.pairs(False)] == [
        "/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key"]
    assert [(p, m) for p, _, m in loaded.pairs(True)] == [
        ("/etc/kubernetes/pki/etcd/ca.crt", 0o644), ("/etc/kubernetes/pki/etcd/ca.key", 0o600)]


@pytest.mark.parametrize("other, words", [
    (ETCD.replace("cluster_name: lab", "cluster_name: prod"),
     "is of another cluster: prod with etcd hosts etcd1=10.0.0.31, etcd2=10.0.0.32, but "),
    (ETCD.replace("10.0.0.32", "10.0.0.33"), "with etcd hosts etcd1=10.0.0.31, etcd2=10.0.0.33"),
])
def test_a_certs_file_of_another_cluster_is_refused(tmp_path, other, words):
    path = tmp_path / "etcd-certs.json"
    etcdcerts.write(str(path), certs_for(parse_cluster(other)))
    with pytest.raises(PreconditionError) as err:
        etcdcerts.load(str(path), parse_cluster(ETCD))
    assert words in err.value.message and "is lab with etcd1=10.0.0.31" in err.value.message
    assert "the first etcd host etcd1 (10.0.0.31) writes " \
        "/etc/kubernetes/kubecrate/etcd-certs.json" in err.value.hint


def test_a_malformed_or_unreadable_certs_file_is_named(tmp_path):
    cluster = parse_cluster(ETCD)
    path = tmp_path / "etcd-certs.json"
    path.write_text('{"format": "kubecrate-etcd-certs/1", "ca_crt": "x"}')
    with pytest.raises(PreconditionError) as err:
        etcdcerts.load(str(path), cluster)
    assert err.value.message.startswith(str(path) + ": missing cluster_name; missing "
                                        "etcd_hosts; missing ca_key")
    with pytest.raises(PreconditionError) as err:
        etcdcerts.load(str(tmp_path / "none.json"), cluster)
    assert "cannot read {} (--etcd-certs FILE)".format(tmp_path / "none.json") in \
        err.value.message


def test_an_etcd_host_after_the_first_needs_the_certs_file(tmp_path):
    ctx = etcd_ctx(tmp_path, "etcd2")
    [finding] = preflight_cluster.check_external_etcd_files(ctx)
    assert (finding.level, finding.check) == ("fail", "etcd-certs")
    assert finding.message == "etcd2 is an etcd.external host after the first: install " \
        "needs --etcd-certs FILE, the etcd CA of this cluster"
    assert finding.fix.startswith("the first etcd host etcd1 (10.0.0.31) writes "
                                  "/etc/kubernetes/kubecrate/etcd-certs.json")
    with pytest.raises(PreconditionError):
        etcdhost.require_certs(ctx)
    ctx.etcd_certs = certs_for(ctx.cluster)
    ctx.etcd_certs_path = "/carried/etcd-certs.json"
    assert [f.level for f in preflight_cluster.check_external_etcd_files(ctx)] == ["pass"]
    # a host that holds another etcd CA is not overwritten
    ctx.host.write("/etc/kubernetes/pki/etcd/ca.crt", PEM.replace("MIIB", "MIIC"))
    [finding] = preflight_cluster.check_external_etcd_files(ctx)
    assert finding.level == "fail" and finding.message == "etcd2 holds another etcd CA than " \
        "/carried/etcd-certs.json: /etc/kubernetes/pki/etcd/ca.crt"


def test_the_first_etcd_host_plans_the_guides_steps(tmp_path):
    ctx = etcd_ctx(tmp_path, "etcd1")
    assert [f.level for f in preflight_cluster.check_external_etcd_files(ctx)] == ["pass"]
    planned = etcdhost.EtcdHostStep().check(ctx)
    assert planned == [
        "write /etc/kubernetes/kubecrate/kubelet-etcd.yaml, /etc/systemd/system/kubelet.service"
        ".d/20-etcd-service-manager.conf, restart the kubelet",
        "write /etc/kubernetes/kubecrate/kubeadm-etcd.yaml",
        "kubeadm init phase certs etcd-ca", "kubeadm init phase certs etcd-server",
        "kubeadm init phase certs etcd-peer", "kubeadm init phase certs etcd-healthcheck-client",
        "kubeadm init phase certs apiserver-etcd-client",
        "write /etc/kubernetes/kubecrate/etcd-certs.json", "kubeadm init phase etcd local"]
    second = etcd_ctx(tmp_path / "2", "etcd2", certs_for(ctx.cluster))
    planned = etcdhost.EtcdHostStep().check(second)
    assert planned[2:] == [
        "write the etcd CA from /carried/etcd-certs.json",
        "kubeadm init phase certs etcd-server", "kubeadm init phase certs etcd-peer",
        "kubeadm init phase certs etcd-healthcheck-client", "kubeadm init phase etcd local"]


@pytest.mark.parametrize("runtime, version, flags", [
    ("docker", "v1.23.17", " --pod-infra-container-image=registry.k8s.io/pause:3.6"),
    ("containerd", "v1.23.17", " --container-runtime=remote --container-runtime-endpoint="
     "unix:///run/containerd/containerd.sock --pod-infra-container-image="
     "registry.k8s.io/pause:3.6"),
    ("containerd", "v1.28.15", " --container-runtime-endpoint="
     "unix:///run/containerd/containerd.sock"),
])
def test_the_kubelet_drop_in_runs_the_kubelet_as_etcds_service_manager(tmp_path, runtime,
                                                                      version, flags):
    ctx = etcd_ctx(tmp_path, "etcd1", runtime=runtime)
    ctx.info.kubernetes_version = version
    text = render("20-etcd-service-manager.conf.j2", config=etcdhost.KUBELET_CONFIG,
                  flags=etcdhost.kubelet_flags(ctx))
    assert "\n[Service]\nExecStart=\nExecStart=/usr/bin/kubelet --config=/etc/kubernetes/" \
        "kubecrate/kubelet-etcd.yaml" + flags + "\nRestart=always\n" in text


def test_an_etcd_host_loads_the_pause_and_etcd_images_and_a_workers_packages():
    from installer.format.bundleinfo import BundleInfo

    images = tuple(BundleImage("registry.k8s.io/" + ref, "sha256:" + ref, 1, roles)
                   for ref, roles in (("pause:3.6", ("control-plane", "worker")),
                                      ("etcd:3.5.6-0", ("control-plane",)),
                                      ("kube-apiserver:v1.23.17", ("control-plane",))))
    fields = dict.fromkeys(BundleInfo._fields, "")
    fields.update(packages={"worker": ("kubelet", "kubeadm", "docker-ce"),
                            "control-plane": ("kubelet", "kubeadm", "kubectl", "docker-ce")},
                  images=images, pause_image="registry.k8s.io/pause:3.6")
    info = BundleInfo(**fields)
    assert info.packages_for("etcd") == ("kubelet", "kubeadm", "docker-ce")
    assert [i.reference for i in info.images_for("etcd")] == [
        "registry.k8s.io/pause:3.6", "registry.k8s.io/etcd:3.5.6-0"]


def test_status_on_an_etcd_host_says_what_it_is_and_each_members_health(capsys):
    from installer.cli import _echo_etcd

    _echo_etcd({"etcd_host": "etcd2", "members": [
        {"name": "etcd1", "endpoint": "https://10.0.0.31:2379", "healthy": True, "error": ""},
        {"name": "etcd2", "endpoint": "https://10.0.0.32:2379", "healthy": False,
         "error": "context deadline exceeded"}]})
    assert capsys.readouterr().out.splitlines() == [
        "etcd2: an etcd.external host (etcd as a static pod, no Kubernetes node)",
        "etcd members (health):",
        "  etcd1        https://10.0.0.31:2379       healthy",
        "  etcd2        https://10.0.0.32:2379       UNHEALTHY: context deadline exceeded"]


def test_upgrade_leaves_an_etcd_host_alone_and_says_so(tmp_path):
    from installer import upgrade

    ctx = etcd_ctx(tmp_path, "etcd1")
    with pytest.raises(PreconditionError) as err:
        upgrade.run_in(ctx, None, True, None, True)
    assert err.value.message == "etcd1 is an etcd.external host: upgrade upgrades the nodes, " \
        "not the etcd hosts, in this version"
    assert ctx.runner.calls == [] and not (tmp_path / "root").exists()
