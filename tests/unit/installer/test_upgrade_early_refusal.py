"""`upgrade --bundle NEW.tar` refuses what the signed bundle.json alone decides (exit 4, nothing
changed) before it hashes the bundle's files, as install refuses another release
(installer/session.py open_context's `refuse`): a skip of two minors, a downgrade, another
arch, a multi-minor bundle that lacks a minor. Each is seen with a bundle whose last file is
damaged: the refusal still comes, where hashing every file first would stop at the damage
(exit 3) after reading the whole bundle. A bundle signed by another key is still exit 3: the
signature is checked before bundle.json is believed (docs/security.md)."""

import pytest
from lab.bundles import make_key, make_source, pack_source

from installer.format.errors import ExitCode
from tests.unit.installer.test_upgrade_install_refusal import (
    damaged_copy,
    installed_node,
    installer,
    metadata,
    packed_releases,
)
from tests.unit.installer.test_upgrade_path import multi


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    top = tmp_path_factory.mktemp("early")
    key, public, packed = packed_releases(top, ("v1.29.15", "v1.30.14", "v1.31.14", "v1.32.9"))
    arm = metadata("v1.31.14")
    arm["target"]["arch"] = "aarch64"
    packed["aarch64"] = pack_source(make_source(top / "arm"), top / "arm" / "k8s.tar", key,
                                    metadata=arm, name="k8s-arm")
    other, _, _ = make_key(top / "other-key")
    packed["other-key"] = pack_source(make_source(top / "other"), top / "other" / "k8s.tar",
                                      other, metadata=metadata("v1.31.14"), name="k8s-other")
    path = [{"kubernetes_version": "v1.31.14", "name": "k8s-v1.31.14",
             "sha256": packed["v1.31.14"].manifest_sha256}]
    return {"top": top, "key": key, "public": public, "packed": packed, "path": path,
            "outer": make_source(top / "outer"), "cluster": top / "cluster.yaml"}


CASES = {
    "skip": ("v1.32.9", ExitCode.PRECONDITION,
             "version: bundle k8s-v1.32.9 carries Kubernetes v1.32.9 only; this node runs "
             "v1.30.14: kubeadm upgrades one minor version at a time (1.30 -> 1.31 -> 1.32)"),
    "downgrade": ("v1.29.15", ExitCode.PRECONDITION,
                  "version: bundle k8s-v1.29.15 carries Kubernetes v1.29.15, older than the "
                  "v1.30.14 this node runs: kubecrate does not downgrade"),
    "arch": ("aarch64", ExitCode.PRECONDITION,
             "bundle: bundle k8s-arm is for arch aarch64 but cp1 runs arch x86_64"),
    "missing-minor": ("multi", ExitCode.PRECONDITION,
                      "the intermediate releases the bundle carries (v1.31.14) lack 1.32"),
    "other-key": ("other-key", ExitCode.VERIFY_FAILED, "not with the trusted key"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_from_bundle_json_before_any_file_is_hashed(tmp_path, capfd, bundles, case):
    which, code, message = CASES[case]
    root = tmp_path / "root"
    before = installed_node(capfd, root, bundles)
    cache = root / "var/lib/kubecrate/bundles"
    folders = sorted(p.name for p in cache.iterdir())
    if which == "multi":  # the v1.33.7 bundle carrying v1.31 only
        bundle = multi(dict(bundles), capfd, tmp_path / "stepcache", bundles["path"])
        capfd.readouterr()  # the unpacks of its steps
    else:
        bundle = bundles["packed"][which]
    damaged = damaged_copy(bundle.path, tmp_path / "damaged.tar")
    got, out, err = installer(capfd, "upgrade", "--bundle", damaged, "--cluster",
                              bundles["cluster"], "--node", "cp1", "--key", bundles["public"],
                              "--root", root)
    assert got == code, out + err
    assert message in err, err
    if code == ExitCode.PRECONDITION:
        assert "is corrupt" not in err and "sha256" not in err, err
    assert (root / "var/lib/kubecrate/state.json").read_text() == before
    assert sorted(p.name for p in cache.iterdir()) == folders  # nothing staged or kept
