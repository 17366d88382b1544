"""kubecrate's kept kubeadm configs move from v1beta3 to v1beta4 when `upgrade` takes a
cluster to 1.31 (installer/kubeadmconfig.py migrate): the migrated 1.30 config says what the
1.31 render says, and the stand-in kubeadm of 1.31 decodes it strictly."""

import sys

import yaml
from mirrorworld.releases import STANDINS

from installer import kubeadmconfig
from installer.format.lbspec import Kubeadm
from installer.joinfile import JoinInfo

K130 = Kubeadm("v1.30.14", "registry.k8s.io", "10.0.0.100:8443", "10.244.0.0/16",
               "10.96.0.0/12", "containerd", "unix:///run/containerd/containerd.sock", "iptables",
               "cluster.local", "kubernetes")
K131 = K130._replace(kubernetes_version="v1.31.14")
NODE = kubeadmconfig.NodeAddress("cp1", "10.0.0.11")
TOKEN, KEY = "abcdef.0123456789abcdef", "ab" * 32
JOIN = JoinInfo("10.0.0.100:8443", TOKEN, "2030-01-01T00:00:00Z", "sha256:" + "1" * 64, KEY,
                "2030-01-01T00:00:00Z", None)


def _docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_migrated_init_and_join_configs_are_the_131_renders():
    old = kubeadmconfig.init_config(K130, NODE, TOKEN, KEY, 6443, ["10.0.0.100"])
    assert "kubeadm.k8s.io/v1beta3" in old
    new = kubeadmconfig.migrate(old, "v1.31.14")
    assert new.startswith("# Migrated by kubecrate upgrade")
    assert _docs(new) == _docs(kubeadmconfig.init_config(K131, NODE, TOKEN, KEY, 6443,
                                                         ["10.0.0.100"]))
    for control_plane in (True, False):
        old = kubeadmconfig.join_config(K130, NODE, JOIN, control_plane, 6443)
        assert _docs(kubeadmconfig.migrate(old, "v1.31.14")) == _docs(
            kubeadmconfig.join_config(K131, NODE, JOIN, control_plane, 6443))


def test_nothing_to_migrate_below_131_or_twice():
    old = kubeadmconfig.init_config(K130, NODE, TOKEN, KEY)
    assert kubeadmconfig.migrate(old, "v1.30.14") is None
    once = kubeadmconfig.migrate(old, "v1.31.14")
    assert kubeadmconfig.migrate(once, "v1.31.14") is None


def test_timeouts_and_extra_args_move_as_kubeadm_config_migrate_moves_them():
    old = ("apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n---\n"
           "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
           "kubernetesVersion: v1.30.14\napiServer:\n  timeoutForControlPlane: 4m0s\n"
           "  extraArgs:\n    bind-address: 0.0.0.0\n")
    init, cluster = _docs(kubeadmconfig.migrate(old, "v1.31.14"))
    assert init["timeouts"] == {"controlPlaneComponentHealthCheck": "4m0s"}
    assert cluster["apiServer"] == {"extraArgs": [{"name": "bind-address", "value": "0.0.0.0"}]}
    assert cluster["kubernetesVersion"] == "v1.31.14"


def test_the_131_stand_in_decodes_the_migrated_config(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECRATE_STANDIN_VERSION", "v1.31.14")
    monkeypatch.syspath_prepend(str(STANDINS))
    for name in [m for m in sys.modules if m.startswith("_kubeadm") or m in ("_common",
                                                                               "_yaml")]:
        monkeypatch.delitem(sys.modules, name)
    import _kubeadm_config

    path = tmp_path / "init.yaml"
    path.write_text(kubeadmconfig.migrate(kubeadmconfig.init_config(K130, NODE, TOKEN, KEY),
                                          "v1.31.14"))
    loaded = _kubeadm_config.load(str(path))
    assert loaded["ClusterConfiguration"]["kubernetesVersion"] == "v1.31.14"
