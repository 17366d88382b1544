"""Multi-minor bundles (installer/upgradepath.py): one bundle carrying v1.31 and v1.32 beside its
own v1.33 is walked in order on a node that runs v1.30, each step's folder put into the cache
as its own bundle (its own signature checked); a run killed in the second step resumes there;
a bundle without a minor in between is refused (exit 4) naming it. The one-minor upgrade each
step runs (installer/upgrade.py run_in) is replaced by a recorder here: the stand-in kubeadm's
refusals are proven in tests/integration/test_standin_upgrade.py, the one-minor upgrade end to
end in tests/e2e/test_ha_static_pods.py."""

import json
import shutil

import pytest
from lab.bundles import make_source, pack_source

from installer import cli, session, upgrade, upgradepath
from installer.format.errors import ExitCode, PreconditionError, VerificationError
from installer.format.minisig import load_public_key
from installer.host import Host
from installer.state import State
from installer.steps.findings import FAIL, PASS, Finding
from tests.unit.installer.test_upgrade_install_refusal import installed_node, packed_releases
from tests.unit.installer.test_upgrade_install_refusal import metadata as refusal_metadata

VERSIONS = ("v1.30.14", "v1.31.14", "v1.32.9", "v1.33.7")


def metadata(version, path=()):
    data = refusal_metadata(version)
    if path:
        data["upgrade_path"] = list(path)
    return data


def unpacked(capfd, packed, public, root):
    with pytest.raises(SystemExit) as done:
        cli.main(["unpack", str(packed.path), "--key", str(public), "--root", str(root)])
    assert done.value.code == ExitCode.OK, capfd.readouterr().err
    return root / "var/lib/kubecrate/bundles" / packed.manifest_sha256


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    top = tmp_path_factory.mktemp("path")
    key, public, packed = packed_releases(top, VERSIONS[:3])
    path = [{"kubernetes_version": version, "name": "k8s-" + version,
             "sha256": packed[version].manifest_sha256} for version in VERSIONS[1:3]]
    return {"top": top, "key": key, "public": public, "packed": packed, "path": path,
            "outer": make_source(top / "outer"), "cluster": top / "cluster.yaml"}


def multi(bundles, capfd, root, path):
    """The v1.33 bundle carrying the steps of `path` (unpacked first into `root`'s cache)."""
    outer = bundles["top"] / ("outer-" + "-".join(s["kubernetes_version"] for s in path))
    if not outer.exists():
        shutil.copytree(str(bundles["outer"]), str(outer))
        for step in path:
            folder = unpacked(capfd, bundles["packed"][step["kubernetes_version"]],
                              bundles["public"], bundles["top"] / "stepcache")
            shutil.copytree(str(folder), str(outer / "steps" / step["sha256"]))
    return pack_source(outer, outer.with_suffix(".tar"), bundles["key"],
                       metadata=metadata(VERSIONS[3], path), name="k8s-v1.33.7")


def installed(capfd, bundles, root):
    """A node that runs the v1.30 bundle (what install leaves: state.json, kubelet.conf)."""
    installed_node(capfd, root, bundles)
    return Host(str(root))


class Recorder:
    """upgrade.run_in as far as the walk sees it: the step's bundle committed into the cache,
    state.json moved to it (upgrade.begin/finish); `crash_at` raises mid-step, after begin."""

    def __init__(self, crash_at=None, behind_at=None, refuse_at=None):
        self.walked = []
        self.crash_at, self.behind_at, self.refuse_at = crash_at, behind_at, refuse_at

    def __call__(self, ctx, options, drain, kubeconfig, plan_only, pause_when_behind=False):
        old = upgrade.load_old(ctx)
        self.walked.append((old.kubernetes_version, ctx.info.kubernetes_version))
        if ctx.info.kubernetes_version == self.refuse_at:
            raise PreconditionError("upgrade preflight failed on cp1 (1 check(s))")
        if plan_only:
            return session.Outcome(ctx.node.name, ctx.node.role, ctx.info.name, [], False, [])
        if ctx.info.kubernetes_version == self.behind_at and pause_when_behind:
            return session.Outcome(ctx.node.name, ctx.node.role, old.name, [Finding(
                FAIL, "order", "cp2 still run(s) a release older than " + old.kubernetes_version,
                "run `upgrade` with this bundle on cp2 first")], False, [], paused=True)
        if ctx.staged is not None:
            ctx.source_dir = ctx.staged.commit()
        upgrade.begin(ctx.host, old, ctx.info)
        if ctx.info.kubernetes_version == self.crash_at:
            self.crash_at = None
            raise KeyboardInterrupt("killed in the step to " + ctx.info.kubernetes_version)
        upgrade.finish(ctx, old)
        return session.Outcome(ctx.node.name, ctx.node.role, ctx.info.name,
                               [Finding(PASS, "version", "ok")], False, [])


def options(bundles, root, tar):
    return session.Options(str(tar.path), str(bundles["cluster"]),
                           load_public_key(str(bundles["public"])), str(root), "cp1")


def test_each_minor_in_order_and_a_killed_step_resumes(tmp_path, capfd, bundles, monkeypatch):
    root = tmp_path / "root"
    host = installed(capfd, bundles, root)
    tar = multi(bundles, capfd, root, bundles["path"])
    recorder = Recorder(crash_at="v1.32.9")
    monkeypatch.setattr(upgrade, "run_in", recorder)
    with pytest.raises(KeyboardInterrupt):
        upgradepath.walk(options(bundles, root, tar), False, None, False)
    assert recorder.walked == [("v1.30.14", "v1.31.14"), ("v1.31.14", "v1.32.9")]
    state = State.load(host).data
    assert state["bundle"] == bundles["packed"]["v1.31.14"].manifest_sha256  # 1.31 is done
    assert state["upgrade"]["to"] == bundles["packed"]["v1.32.9"].manifest_sha256
    cache = root / "var/lib/kubecrate/bundles"
    for version in VERSIONS[1:3]:  # each step its own cache folder, its signature kept
        folder = cache / bundles["packed"][version].manifest_sha256
        assert json.loads((folder / "bundle.json").read_text())["kubernetes_version"] == \
            version
        assert (folder / "bundle.minisig").exists()

    recorder.walked = []
    outcome = upgradepath.walk(options(bundles, root, tar), False, None, False)
    assert recorder.walked == [("v1.31.14", "v1.32.9"), ("v1.32.9", "v1.33.7")]
    assert [f.message for f in outcome.findings if f.check == "step"] == [
        "step 1 of 2: v1.32.9 from steps/" + bundles["packed"]["v1.32.9"].manifest_sha256,
        "step 2 of 2: v1.33.7"]
    assert State.load(host).data["bundle"] == tar.manifest_sha256

    recorder.walked = []  # upgraded: the walk has nothing left but the bundle's own step
    upgradepath.walk(options(bundles, root, tar), False, None, False)
    assert recorder.walked == [("v1.33.7", "v1.33.7")]


def test_a_missing_minor_is_refused_naming_it(tmp_path, capfd, bundles, monkeypatch):
    root = tmp_path / "root"
    host = installed(capfd, bundles, root)
    before = (root / "var/lib/kubecrate/state.json").read_text()
    tar = multi(bundles, capfd, root, bundles["path"][:1])  # 1.31 only: 1.32 is missing
    monkeypatch.setattr(upgrade, "run_in", Recorder())
    with pytest.raises(PreconditionError) as refused:
        upgradepath.walk(options(bundles, root, tar), False, None, False)
    assert "bundle k8s-v1.33.7 carries Kubernetes v1.33.7; this node runs v1.30.14: kubeadm " \
        "upgrades one minor version at a time (1.30 -> 1.31 -> 1.32 -> 1.33), and the " \
        "intermediate releases the bundle carries (v1.31.14) lack 1.32" in refused.value.message
    assert State.load(host).data["bundle"] != tar.manifest_sha256
    assert (root / "var/lib/kubecrate/state.json").read_text() == before


@pytest.mark.parametrize("item, words", [
    ({"sha256": "abc"}, "upgrade_path[0].sha256: not a SHA-256"),
    ({"kubernetes_version": 131}, "needs the strings kubernetes_version, name, sha256"),
    ({"kubernetes_version": "1.31"}, "not a Kubernetes version: '1.31'"),
])
def test_a_malformed_path_names_its_key(item, words):
    good = {"kubernetes_version": "v1.31.14", "name": "k8s-1.31", "sha256": "a" * 64}
    with pytest.raises(VerificationError) as bad:
        upgradepath.read_path({"upgrade_path": [dict(good, **item)]})
    assert words in bad.value.message


def test_only_the_steps_above_the_node_are_walked():
    path = upgradepath.read_path({"upgrade_path": [
        {"kubernetes_version": v, "name": "k8s-" + v, "sha256": "a" * 64}
        for v in ("v1.31.14", "v1.32.9")]})
    assert [s.kubernetes_version for s in upgradepath.remaining(
        path, "v1.31.14", "v1.33.7", "b")] == ["v1.32.9"]
    assert upgradepath.remaining(path, "v1.32.9", "v1.33.7", "b") == []
    with pytest.raises(PreconditionError) as refused:  # 1.29 -> 1.33 lacks 1.30
        upgradepath.remaining(path, "v1.29.10", "v1.33.7", "b")
    assert "lack 1.30" in refused.value.message


def test_plan_shows_every_step_and_changes_nothing(tmp_path, capfd, bundles, monkeypatch):
    root = tmp_path / "root"
    installed(capfd, bundles, root)
    before = sorted(p.name for p in (root / "var/lib/kubecrate/bundles").iterdir())
    tar = multi(bundles, capfd, root, bundles["path"])
    recorder = Recorder()
    monkeypatch.setattr(upgrade, "run_in", recorder)
    outcome = upgradepath.walk(options(bundles, root, tar), False, None, True)
    assert recorder.walked == [("v1.30.14", "v1.31.14")]  # the first step's own plan
    steps = bundles["packed"]
    assert [f.message for f in outcome.findings if f.check == "step"] == [
        "step 1 of 3: v1.31.14 from steps/" + steps["v1.31.14"].manifest_sha256,
        "step 2 of 3: v1.32.9 from steps/" + steps["v1.32.9"].manifest_sha256,
        "then v1.32.9 from bundle k8s-v1.32.9: the same steps, once every node runs the "
        "release before it",
        "step 3 of 3: v1.33.7",
        "then v1.33.7 from bundle k8s-v1.33.7: the same steps, once every node runs the "
        "release before it"]
    assert sorted(p.name for p in (root / "var/lib/kubecrate/bundles").iterdir()) == before


def test_the_walk_pauses_where_other_nodes_must_take_a_step_first(tmp_path, capfd, bundles,
                                                                   monkeypatch):
    root = tmp_path / "root"
    host = installed(capfd, bundles, root)
    tar = multi(bundles, capfd, root, bundles["path"])
    monkeypatch.setattr(upgrade, "run_in", Recorder(behind_at="v1.32.9"))
    with pytest.raises(SystemExit) as done:
        cli.main(["upgrade", "--bundle", str(tar.path), "--cluster", str(bundles["cluster"]),
                  "--node", "cp1", "--key", str(bundles["public"]), "--root", str(root),
                  "--no-drain"])
    out = capfd.readouterr()
    assert done.value.code == ExitCode.OK, out.out + out.err
    assert "next step waits: cp2 still run(s) a release older than v1.31.14 -> run `upgrade` " \
        "with this bundle on cp2 first" in out.out, out.out
    assert "run `upgrade` again here once they have" in out.out
    assert json.loads(session.to_json(session.Outcome(
        "cp1", "control-plane", "k8s-v1.31.14", [], False, [], paused=True)))["paused"] is True
    assert State.load(host).data["bundle"] == bundles["packed"]["v1.31.14"].manifest_sha256
    assert "upgrade" not in State.load(host).data


def test_a_refused_first_step_leaves_the_cache_as_it_was(tmp_path, capfd, bundles,
                                                          monkeypatch):
    """Preflight refuses the first step (exit 4): neither the multi-minor bundle nor the step's
    is left in the cache, and state.json is as it was."""
    root = tmp_path / "root"
    installed(capfd, bundles, root)
    cache = root / "var/lib/kubecrate/bundles"
    before = sorted(p.name for p in cache.iterdir())
    state = (root / "var/lib/kubecrate/state.json").read_text()
    tar = multi(bundles, capfd, root, bundles["path"])
    monkeypatch.setattr(upgrade, "run_in", Recorder(refuse_at="v1.31.14"))
    with pytest.raises(PreconditionError):
        upgradepath.walk(options(bundles, root, tar), False, None, False)
    assert sorted(p.name for p in cache.iterdir()) == before
    assert (root / "var/lib/kubecrate/state.json").read_text() == state
