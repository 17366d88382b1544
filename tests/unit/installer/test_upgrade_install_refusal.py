"""install refuses another Kubernetes release on a node that runs a cluster (exit 4, nothing
changed) and names `upgrade --bundle` (installer/session.py install, installer/upgrade.py
is_upgrade), before its preflight: the e2e test of the upgrade (tests/e2e/test_ha_install.py)
checks the same on its upgraded cp1 in minutes, this in about a second."""

import json

import pytest
from lab.bundles import make_key, make_source, pack_source

from installer import cli
from installer.format.errors import ExitCode
from installer.host import Host
from installer.state import State
from tests.unit.installer.test_ha_steps import CLUSTER


def metadata(version):
    return {"target": {"os": "rocky", "release": "9.4", "arch": "x86_64"},
            "runtime": {"name": "containerd", "version": "1.7.27"},
            "kubernetes_version": version}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    top = tmp_path_factory.mktemp("refusal")
    key, _, public = make_key(top / "keys")
    packed = {version: pack_source(make_source(top / version), top / version / "k8s.tar", key,
                                   metadata=metadata(version), name="k8s-" + version)
              for version in ("v1.30.14", "v1.31.14")}
    (top / "cluster.yaml").write_text(CLUSTER)
    return {"public": public, "packed": packed, "cluster": top / "cluster.yaml"}


def installer(capfd, *args):
    with pytest.raises(SystemExit) as done:
        cli.main([str(a) for a in args])
    out = capfd.readouterr()
    return done.value.code, out.out, out.err


def test_install_of_the_next_release_on_an_installed_node_is_refused(tmp_path, capfd, bundles):
    root, old, new = tmp_path / "root", bundles["packed"]["v1.30.14"], \
        bundles["packed"]["v1.31.14"]
    code, _, err = installer(capfd, "unpack", old.path, "--key", bundles["public"], "--root",
                             root)
    assert code == ExitCode.OK, err
    # what install leaves on a node: state.json naming the bundle, the kubelet's kubeconfig
    host = Host(str(root))
    state = State.load(host)
    state.use_bundle(old.manifest_sha256)
    state.data.update(bundle_name="k8s-v1.30.14", node="cp1", role="control-plane")
    state.save()
    host.write("/etc/kubernetes/kubelet.conf", "apiVersion: v1\nkind: Config\n", 0o600)
    before = (root / "var/lib/kubecrate/state.json").read_text()

    code, out, err = installer(capfd, "install", "--bundle", new.path, "--cluster",
                               bundles["cluster"], "--node", "cp1", "--key", bundles["public"],
                               "--root", root)
    assert code == ExitCode.PRECONDITION, out + err
    assert "cp1 runs a cluster from another Kubernetes release than bundle k8s-v1.31.14 " \
        "(v1.31.14): install does not upgrade" in err, err
    assert "run `upgrade --bundle {}`".format(new.path) in err
    assert (root / "var/lib/kubecrate/state.json").read_text() == before
    assert json.loads(before)["bundle"] == old.manifest_sha256
    assert not (root / "var/lib/kubecrate/bundles" / new.manifest_sha256).exists()
