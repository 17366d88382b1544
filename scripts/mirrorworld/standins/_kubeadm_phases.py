"""`kubeadm init phase certs <etcd certificate>` and `kubeadm init phase etcd local`: what
kubeadm's "Set up a High Availability etcd cluster with kubeadm" runs on each etcd host
(kubernetes.io/docs/setup/production-environment/tools/kubeadm/setup-ha-etcd-with-kubeadm/).

- certs (cmd/kubeadm/app/phases/certs/certlist.go and certs.go): `etcd-ca` makes the etcd CA
  (kept when both files exist); `etcd-server` and `etcd-peer` a pair for the node name
  (nodeRegistration.name, else the host name) whose SANs are the name, localhost, the advertise
  address, 127.0.0.1, ::1 and etcd.local.serverCertSANs / peerCertSANs (GetEtcdAltNames,
  GetEtcdPeerAltNames); `etcd-healthcheck-client` (CN kube-etcd-healthcheck-client) and
  `apiserver-etcd-client` (CN kube-apiserver-etcd-client, O system:masters). An existing pair
  is kept ("Using existing ... certificate and key on disk"); without the etcd CA kubeadm stops
  (LoadCertificateAuthority: "couldn't load etcd/ca certificate authority from ...").
- etcd local (cmd/kubeadm/app/phases/etcd/local.go, CreateLocalEtcdStaticPodManifestFile):
  refused for etcd.external ("etcd static pod manifest cannot be generated for cluster using
  external etcd"); else etcd.yaml with getEtcdCommand's flags for this node, each overridden
  by etcd.local.extraArgs (BuildArgumentListFromMap), data-dir from etcd.local.dataDir.
"""

import os

import _etcdpod
import _kubeadm_config as config
import _pki
from _common import VERSION, StandinError, rooted, write_file
from _kubeadm_init import PhaseError, node_name

MANIFESTS = "/etc/kubernetes/manifests"
PKI = "/etc/kubernetes/pki"
CERTS = ("etcd-ca", "etcd-server", "etcd-peer", "etcd-healthcheck-client",
         "apiserver-etcd-client")


def _settings(cfg: dict):
    """(node name, advertise address, ClusterConfiguration) of a phase's --config."""
    init = cfg.get("InitConfiguration") or {}
    name = node_name(init.get("nodeRegistration") or {})
    advertise = str((init.get("localAPIEndpoint") or {}).get("advertiseAddress") or "127.0.0.1")
    return name, advertise, cfg.get("ClusterConfiguration") or {}


def certs(which: str, cfg: dict) -> None:
    """`kubeadm init phase certs WHICH` (one of CERTS)."""
    if which not in CERTS:
        raise StandinError("the stand-in makes only the etcd certificates with `init phase "
                           "certs` (%s), not %r" % (", ".join(CERTS), which))
    if which == "etcd-ca":
        if os.path.exists(_pki.pki_path("etcd/ca.crt")) and \
                os.path.exists(_pki.pki_path("etcd/ca.key")):
            print("[certs] Using existing etcd/ca certificate authority")
            return
        print('[certs] Generating "etcd/ca" certificate and key')
        _pki.make_ca("etcd/ca", "etcd-ca")
        return
    name, advertise, cluster = _settings(cfg)
    local = (cluster.get("etcd") or {}).get("local") or {}
    base = {"etcd-server": "etcd/server", "etcd-peer": "etcd/peer",
            "etcd-healthcheck-client": "etcd/healthcheck-client",
            "apiserver-etcd-client": "apiserver-etcd-client"}[which]
    if os.path.exists(_pki.pki_path(base + ".crt")) and \
            os.path.exists(_pki.pki_path(base + ".key")):
        print("[certs] Using existing %s certificate and key on disk" % base)
        return
    if not (os.path.exists(_pki.pki_path("etcd/ca.crt")) and
            os.path.exists(_pki.pki_path("etcd/ca.key"))):
        raise PhaseError("certs/" + which, "couldn't load etcd/ca certificate authority "
                          "from %s" % PKI)
    print('[certs] Generating "%s" certificate and key' % base)
    if which in ("etcd-server", "etcd-peer"):
        extra = local.get("serverCertSANs" if which == "etcd-server" else "peerCertSANs") or []
        sans = list(dict.fromkeys([name, "localhost", advertise, "127.0.0.1", "::1"]
                                  + [str(s) for s in extra]))
        print("[certs] %s serving cert is signed for DNS names and IPs %s" % (base, sans))
        pair = _pki.make_cert("etcd/ca", name, sans=sans, server=True, client=True)
    elif which == "etcd-healthcheck-client":
        pair = _pki.make_cert("etcd/ca", "kube-etcd-healthcheck-client", client=True)
    else:
        pair = _pki.make_cert("etcd/ca", "kube-apiserver-etcd-client", "system:masters",
                              client=True)
    _pki.write_pair(base, pair)


def etcd_local(cfg: dict) -> None:
    """`kubeadm init phase etcd local --config`: this host's etcd.yaml."""
    name, advertise, cluster = _settings(cfg)
    etcd = cluster.get("etcd") or {}
    if etcd.get("external"):
        raise PhaseError("etcd/local", "etcd static pod manifest cannot be generated for "
                          "cluster using external etcd")
    local = etcd.get("local") or {}
    extra = config.extra_args(local.get("extraArgs"))
    if local.get("dataDir"):
        extra.setdefault("data-dir", str(local["dataDir"]))
    version = str(cluster.get("kubernetesVersion") or VERSION)
    image = config.images(version, cluster.get("imageRepository"))[5]
    if local.get("imageRepository") or local.get("imageTag"):
        repo, _, tag = image.rpartition(":")
        image = "%s/etcd:%s" % (local.get("imageRepository") or repo.rsplit("/", 1)[0],
                                local.get("imageTag") or tag)
    argv = _etcdpod.command(name, advertise, "%s=https://%s:2380" % (name, advertise),
                            extra=extra)
    print('[etcd] Creating static Pod manifest for local etcd in "%s"' % MANIFESTS)
    write_file(rooted(MANIFESTS + "/etcd.yaml"), _etcdpod.manifest(image, argv), 0o600)
