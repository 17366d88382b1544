"""kubeadm's external etcd topology (cluster.yaml `etcd.external`) against the real etcd 3.5.1.

Three etcd hosts (scripts/lab/etcdlab.py) whose certificates come from the first one, as
kubeadm's "Set up a High Availability etcd cluster with kubeadm" has it: the etcd CA made on
etcd1 and copied to the others, each member's server and peer pair signed with it. The first
control plane holds the etcd CA and an apiserver-etcd-client pair copied from etcd1 (the
guide's "Set up the first control plane node"); `kubeadm init` with ClusterConfiguration
etcd.external (the installer's rendering, tests/unit/installer/test_render_kubeadm.py) writes no
etcd.yaml and points the apiserver at the three members; a second control plane gets the
files with upload-certs. The apiserver stand-ins keep the cluster in that etcd over TLS, and
with one etcd host lost the cluster still writes.
"""

import json
import subprocess
import time

import pytest
from lab.etcdlab import EtcdLab

from installer import kubeadmconfig
from tests.integration import test_mirrorworld_standins as standins
from tests.integration.test_mirrorworld_standins import (
    CERT_KEY,
    TOKEN,
    VERSION,
    _ca_hash,
    _free_port,
)

tree, hosts = standins.tree, standins.hosts  # the release tree and --root hosts (fixtures)

pytestmark = pytest.mark.integration

FILES = ("etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key")
INIT = """\
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- token: "{token}"
certificateKey: "{key}"
localAPIEndpoint: {{advertiseAddress: 127.0.0.1, bindPort: {port}}}
nodeRegistration:
  name: cp1
  criSocket: /var/run/dockershim.sock
  kubeletExtraArgs: {{node-ip: 127.0.0.1}}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: {version}
controlPlaneEndpoint: "127.0.0.1:{port}"
etcd:
  external:
    endpoints: [{endpoints}]
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
"""
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {0}, namespace: default}}\n"


@pytest.fixture
def etcd(tmp_path):
    lab = EtcdLab(tmp_path / "etcd", ["etcd1", "etcd2", "etcd3"])
    lab.set_up_with_kubeadm()
    lab.start()
    yield lab
    lab.close()


def test_etcd_hosts_as_kubeadms_guide_sets_them_up(tmp_path):
    """The kubeadm stand-in's `init phase certs etcd-*` and `init phase etcd local` with
    kubecrate's etcd-host config: certificates for each host's name and address signed by the
    first host's CA, etcd.yaml with the guide's flags, and the refusals kubeadm makes."""
    lab = EtcdLab(tmp_path / "etcd", ["etcd1", "etcd2"])
    etcd2 = lab.host("etcd2")
    config = etcd2.root / "kubeadm-etcd.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
                      "kubernetesVersion: v1.23.17\n")
    refused = lab.kubeadm(etcd2, "init", "phase", "certs", "etcd-server", "--config",
                          str(config), check=False)
    assert refused.returncode == 1
    assert "error execution phase certs/etcd-server: couldn't load etcd/ca certificate " \
        "authority from /etc/kubernetes/pki" in refused.stderr
    config.write_text(config.read_text() + "etcd:\n  external:\n    endpoints: "
                      "[https://10.0.0.1:2379]\n")
    refused = lab.kubeadm(etcd2, "init", "phase", "etcd", "local", "--config", str(config),
                          check=False)
    assert "etcd static pod manifest cannot be generated for cluster using external etcd" in \
        refused.stderr and not etcd2.manifest.exists()

    lab.set_up_with_kubeadm()
    pki = etcd2.root / "etc/kubernetes/pki"
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in",
                           str(pki / "etcd/server.crt")], capture_output=True, text=True,
                          check=True).stdout
    assert "CN = etcd2" in text and "IP Address:{}".format(etcd2.address) in text
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(lab.hosts[0].root /
                               "etc/kubernetes/pki/etcd/ca.crt"), str(pki / "etcd/peer.crt")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    flags = etcd2.flags()
    assert flags["initial-cluster"] == "etcd1=https://{}:2380,etcd2=https://{}:2380".format(
        lab.hosts[0].address, etcd2.address)
    assert flags["listen-client-urls"] == "https://{}:2379".format(etcd2.address)
    assert flags["name"] == "etcd2" and flags["initial-cluster-state"] == "new"
    again = lab.kubeadm(etcd2, "init", "phase", "certs", "etcd-server", "--config",
                        str(etcd2.root / "etc/kubernetes/kubecrate/kubeadm-etcd.yaml"))
    assert "Using existing etcd/server certificate and key on disk" in again.stdout


def _apply(host, name):
    path = host.root / (name + ".yaml")
    path.write_text(CONFIGMAP.format(name))
    return host.run("kubectl", "--kubeconfig", str(host.path("/etc/kubernetes/admin.conf")),
                    "apply", "-f", str(path), timeout=120)


def test_two_control_planes_on_three_external_etcd_hosts(etcd, hosts):
    cp1, cp2 = hosts("cp1"), hosts("cp2")
    port1, port2 = _free_port(), _free_port()
    config = cp1.root / "kubeadm-init.yaml"
    config.write_text(INIT.format(token=TOKEN, key=CERT_KEY, port=port1, version=VERSION,
                                  endpoints=", ".join(h.endpoint for h in etcd.hosts)))

    # kubeadm's preflight (checks.go, ExternalEtcdClientCertificates) before the files are there
    refused = cp1.run("kubeadm", "init", "--config", str(config), "--upload-certs")
    assert refused.returncode != 0
    assert "[ERROR ExternalEtcdClientCertificates]: /etc/kubernetes/pki/etcd/ca.crt doesn't " \
        "exist" in refused.stderr, refused.stderr
    assert not cp1.path("/etc/kubernetes/manifests").exists()

    etcd1 = etcd.host("etcd1")
    for name in FILES:  # copied from the first etcd host, as the guide does with scp
        target = cp1.path("/etc/kubernetes/pki/" + name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((etcd1.root / "etc/kubernetes/pki" / name).read_bytes())
    init = cp1.run("kubeadm", "init", "--config", str(config), "--upload-certs", timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr + etcd.logs()
    assert "External etcd mode: Skipping etcd/ca certificate authority generation" in init.stdout
    assert not cp1.path("/etc/kubernetes/manifests/etcd.yaml").exists()
    assert not cp1.path("/etc/kubernetes/pki/etcd/ca.key").exists()
    manifest = cp1.path("/etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    assert "--etcd-servers=" + ",".join(h.endpoint for h in etcd.hosts) in manifest

    # join-info's re-upload of the certificates (`init phase upload-certs --config`) names
    # etcd.external too: by default kubeadm uploads local etcd's CA, whose key is not here
    refresh = cp1.root / "refresh.yaml"
    refresh.write_text(kubeadmconfig.refresh_config(
        VERSION, certificate_key=CERT_KEY, etcd_endpoints=[h.endpoint for h in etcd.hosts]))
    again = cp1.run("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config",
                    str(refresh), "--kubeconfig", str(cp1.path("/etc/kubernetes/admin.conf")))
    assert again.returncode == 0, again.stdout + again.stderr

    # the second control plane gets the etcd client files with the certificates (copycerts.go)
    join = cp2.run("kubeadm", "join", "127.0.0.1:%d" % port1, "--token", TOKEN,
                   "--discovery-token-ca-cert-hash", _ca_hash(cp1), "--control-plane",
                   "--certificate-key", CERT_KEY, "--apiserver-advertise-address", "127.0.0.1",
                   "--apiserver-bind-port", str(port2), "--node-name", "cp2", timeout=120)
    assert join.returncode == 0, join.stdout + join.stderr
    for name in FILES:
        assert cp2.path("/etc/kubernetes/pki/" + name).read_bytes() == \
            cp1.path("/etc/kubernetes/pki/" + name).read_bytes(), name
    assert not cp2.path("/etc/kubernetes/manifests/etcd.yaml").exists()

    # both apiservers store in the same etcd: the Nodes are its keys
    keys = etcd1.etcdctl("get", "/registry/minions/", "--prefix", "--keys-only").stdout.split()
    assert keys == ["/registry/minions/cp1", "/registry/minions/cp2"], keys
    done = _apply(cp2, "from-cp2")
    assert done.returncode == 0, done.stdout + done.stderr

    # one etcd host lost: two of three still make a quorum, the cluster writes
    etcd.host("etcd3").down = True
    while etcd.host("etcd3").running():
        time.sleep(0.1)
    started = time.monotonic()
    done = _apply(cp1, "one-etcd-lost")
    assert done.returncode == 0, done.stdout + done.stderr + etcd.logs()
    assert time.monotonic() - started < 30
    stored = etcd1.etcdctl("get", "/registry/kubecrate.io/objects/v1/ConfigMap/default/"
                           "one-etcd-lost", "--print-value-only").stdout
    assert json.loads(stored)["metadata"]["name"] == "one-etcd-lost"
