"""install refuses another Kubernetes release on a node that runs a cluster (exit 4, nothing
changed) and names `upgrade --bundle` (installer/session.py install, installer/upgrade.py
is_upgrade), before its preflight: the e2e test of the upgrade (tests/e2e/test_ha_install.py)
checks the same on its upgraded cp1 in minutes, this in about a second."""

import json
import shutil
import tarfile

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


def packed_releases(top, versions):
    """A key, its public key file and one small bundle per Kubernetes version, signed with
    it; cluster.yaml beside them."""
    key, _, public = make_key(top / "keys")
    packed = {version: pack_source(make_source(top / version), top / version / "k8s.tar", key,
                                   metadata=metadata(version), name="k8s-" + version)
              for version in versions}
    (top / "cluster.yaml").write_text(CLUSTER)
    return key, public, packed


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    top = tmp_path_factory.mktemp("refusal")
    _, public, packed = packed_releases(top, ("v1.30.14", "v1.31.14"))
    return {"public": public, "packed": packed, "cluster": top / "cluster.yaml"}


def damaged_copy(bundle, to):
    """A copy of `bundle` and its signature whose last file has one byte flipped: hashing the
    bundle's files stops there (exit 3), bundle.json (the first member) is intact."""
    shutil.copyfile(bundle, to)
    shutil.copyfile(str(bundle) + ".minisig", str(to) + ".minisig")
    with tarfile.open(bundle) as tar:
        last = [m for m in tar.getmembers() if m.isfile()][-1]
    assert last.name != "bundle.json" and last.size > 0
    with open(to, "r+b") as handle:
        handle.seek(last.offset_data + last.size - 1)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return to


def installer(capfd, *args):
    with pytest.raises(SystemExit) as done:
        cli.main([str(a) for a in args])
    out = capfd.readouterr()
    return done.value.code, out.out, out.err


def installed_node(capfd, root, bundles):
    """`root` as install leaves a node of the v1.30.14 bundle: the bundle in the cache,
    state.json naming it, the kubelet's kubeconfig. Returns state.json's text."""
    old = bundles["packed"]["v1.30.14"]
    code, _, err = installer(capfd, "unpack", old.path, "--key", bundles["public"], "--root",
                             root)
    assert code == ExitCode.OK, err
    host = Host(str(root))
    state = State.load(host)
    state.use_bundle(old.manifest_sha256)
    state.data.update(bundle_name="k8s-v1.30.14", node="cp1", role="control-plane")
    state.save()
    host.write("/etc/kubernetes/kubelet.conf", "apiVersion: v1\nkind: Config\n", 0o600)
    before = (root / "var/lib/kubecrate/state.json").read_text()
    assert json.loads(before)["bundle"] == old.manifest_sha256
    return before


def refused(capfd, root, bundles, bundle, *extra):
    """install with `bundle` on the installed node: refused (exit 4) for its release, naming
    `upgrade --bundle`, nothing of the new bundle kept."""
    new = bundles["packed"]["v1.31.14"]
    code, out, err = installer(capfd, "install", "--bundle", bundle, "--cluster",
                               bundles["cluster"], "--node", "cp1", "--key", bundles["public"],
                               "--root", root, *extra)
    assert code == ExitCode.PRECONDITION, out + err
    assert "cp1 runs a cluster from another Kubernetes release than bundle k8s-v1.31.14 " \
        "(v1.31.14): install does not upgrade" in err, err
    assert "run `upgrade --bundle {}`".format(bundle) in err
    assert not (root / "var/lib/kubecrate/bundles" / new.manifest_sha256).exists()
    assert not [p for p in (root / "var/lib/kubecrate/bundles").iterdir()
                if p.name.startswith(".")], "a staging folder was left behind"


def test_install_of_the_next_release_on_an_installed_node_is_refused(tmp_path, capfd, bundles):
    root = tmp_path / "root"
    before = installed_node(capfd, root, bundles)
    refused(capfd, root, bundles, bundles["packed"]["v1.31.14"].path)
    assert (root / "var/lib/kubecrate/state.json").read_text() == before


@pytest.mark.parametrize("dry_run", [False, True], ids=["install", "dry-run"])
def test_the_release_is_refused_from_bundle_json_before_any_file_is_hashed(tmp_path, capfd,
                                                                         bundles, dry_run):
    """The refusal comes from the signed bundle.json, the tar's first member: a user who runs
    install with the next release's bundle learns it in a second, not after every image was
    hashed. Seen here with a bundle whose last file is damaged: the refusal still comes (exit
    4), where hashing the files first would stop at the damage (exit 3)."""
    root = tmp_path / "root"
    before = installed_node(capfd, root, bundles)
    damaged = damaged_copy(bundles["packed"]["v1.31.14"].path, tmp_path / "k8s-v1.31.14.tar")
    refused(capfd, root, bundles, damaged, *(["--dry-run"] if dry_run else []))
    assert (root / "var/lib/kubecrate/state.json").read_text() == before
