"""The kubeadm commands of `upgrade --bundle` on every node (installer/steps/upgradesteps.py):
the first control plane runs `kubeadm upgrade plan` and `apply`, the other control planes and
the workers `kubeadm upgrade node`; under `selinux: enforcing` every control plane passes
kubeadm its patches again (kubeadm keeps none from init or join), a worker has none."""

import json

import pytest
import yaml
from mirrorworld.releases import STANDINS

from installer import upgrade
from installer.format.errors import StepFailed
from installer.kubeadmconfig import SELINUX_PATCHES_DIR, SPC_T_PATCH
from installer.runner import Result
from installer.state import State
from installer.steps import run_steps, upgradesteps
from tests.unit.installer.test_ha_steps import CLUSTER, FakeHostRunner, make_ctx

PATCHES = ["--patches", SELINUX_PATCHES_DIR]


def kubeadm_calls(tmp_path, name, text):
    ctx = make_ctx(tmp_path, name, text=text)
    ctx.info.kubernetes_version = "v1.24.17"
    step = upgradesteps.ControlPlaneStep(upgrade.Upgrade(ctx, ctx.info, None, True))
    for action in step.actions(ctx):
        action.do()
    return ctx, [c for c in ctx.runner.calls if c[0] == "kubeadm"]


@pytest.mark.parametrize("selinux, name, wanted", [
    ("permissive", "cp1", [["kubeadm", "upgrade", "plan"],
                           ["kubeadm", "upgrade", "apply", "v1.24.17", "--yes"]]),
    ("permissive", "cp2", [["kubeadm", "upgrade", "node"]]),
    ("permissive", "w1", [["kubeadm", "upgrade", "node"]]),
    ("enforcing", "cp1", [["kubeadm", "upgrade", "plan"],
                          ["kubeadm", "upgrade", "apply", "v1.24.17", "--yes"] + PATCHES]),
    ("enforcing", "cp2", [["kubeadm", "upgrade", "node"] + PATCHES]),
    ("enforcing", "w1", [["kubeadm", "upgrade", "node"]]),
])
def test_each_node_runs_its_kubeadm_upgrade(tmp_path, selinux, name, wanted):
    ctx, calls = kubeadm_calls(tmp_path, name, CLUSTER + "selinux: {}\n".format(selinux))
    assert calls == wanted
    patch = tmp_path / name / SELINUX_PATCHES_DIR.lstrip("/") / "kube-apiserver+strategic.yaml"
    if PATCHES[0] in calls[-1]:  # the folder kubeadm is given holds the spc_t patches
        assert patch.read_text() == SPC_T_PATCH
    else:
        assert not patch.exists()


@pytest.mark.parametrize("manifest", [
    "spec:\n  containers:\n  - name: kube-apiserver\n"
    "    image: registry.k8s.io/kube-apiserver:v1.24.17\n",  # as kubeadm writes it
    '{"spec": {"containers": [{"image": "registry.k8s.io/kube-apiserver:v1.24.17", '
    '"name": "kube-apiserver"}]}}\n',  # a patched pod as JSON
])
def test_the_apiserver_manifest_names_its_version_in_yaml_and_json(tmp_path, manifest):
    ctx = make_ctx(tmp_path, "cp1")
    ctx.host.write(upgrade.APISERVER_MANIFEST, manifest)
    assert upgrade.Upgrade(ctx, ctx.info, None, True).apiserver_version() == "v1.24.17"


def test_the_kubeadm_stand_in_keeps_spc_t_through_an_upgrade_only_with_patches(tmp_path,
                                                                                monkeypatch):
    """The stand-in writes the static pods anew as kubeadm upgrade does: init's patches are
    gone unless --patches names them again (scripts/mirrorworld/standins/_kubeadm_upgrade.py
    regenerated)."""
    monkeypatch.setenv("KUBECRATE_ROOT", str(tmp_path))
    monkeypatch.syspath_prepend(str(STANDINS))
    import _kubeadm_init
    import _kubeadm_upgrade

    from installer.kubeadmconfig import selinux_patches

    for path, content in selinux_patches():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(content)
    pod = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\nspec:\n  containers:\n"
           "  - name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.30.14\n")
    patched = _kubeadm_init.apply_patches(pod, "kube-apiserver", SELINUX_PATCHES_DIR)
    new = "registry.k8s.io/kube-apiserver:v1.31.14"
    for patches, context in ((None, None), (SELINUX_PATCHES_DIR, {"type": "spc_t"})):
        got = yaml.safe_load(_kubeadm_upgrade.regenerated(patched, "kube-apiserver", new,
                                                          patches))
        assert got["spec"]["containers"][0]["image"] == new
        assert (got["spec"].get("securityContext") or {}).get("seLinuxOptions") == context
    unpatched = _kubeadm_upgrade.regenerated(pod, "kube-apiserver", new, None)
    assert unpatched == pod.replace("v1.30.14", "v1.31.14")


def test_the_kubeadm_stand_in_rides_out_the_endpoint_down_after_the_apiserver_restart(
        monkeypatch):
    """upgrade apply's upload-config retries while the API cannot be reached, as kubeadm's
    apiclient does (_kubeadm_upgrade.store_config): on a single control plane the endpoint's
    load balancer still holds the restarted apiserver DOWN for a moment (the 1.30 -> 1.33 walk
    of tests/e2e/test_ha_static_pods.py failed there); a refusal is not retried."""
    monkeypatch.syspath_prepend(str(STANDINS))
    import _kubeadm_upgrade
    from _common import StandinError

    class Endpoint:
        def __init__(self, failures):
            self.failures, self.calls = list(failures), []

        def call(self, method, path, body=None):
            self.calls.append((method, path))
            if self.failures:
                raise StandinError(self.failures.pop(0))
            return {}

    down = Endpoint(["unable to reach the API server at https://vip:8443: EOF"] * 3)
    _kubeadm_upgrade.store_config(down, {"kubernetesVersion": "v1.31.14"}, interval=0.01)
    assert len(down.calls) == 4
    refused = Endpoint(["PUT /api/v1/namespaces/kube-system/configmaps/kubeadm-config: "
                        "Forbidden"])
    with pytest.raises(StandinError, match="Forbidden"):
        _kubeadm_upgrade.store_config(refused, {}, interval=0.01)
    assert len(refused.calls) == 1
    gone = Endpoint(["unable to reach the API server at https://vip:8443: refused"] * 99)
    with pytest.raises(StandinError, match="unable to reach"):
        _kubeadm_upgrade.store_config(gone, {}, seconds=0.05, interval=0.01)


class Cluster(FakeHostRunner):
    """FakeHostRunner plus the kubectl an upgrade uses: get nodes, drain, uncordon."""

    def __init__(self, root, fail_drain=False):
        super().__init__(root)
        self.cordoned, self.fail_drain = set(), fail_drain

    def run(self, argv, check=True, readonly=False, timeout=0, hint=None, stdin=None):
        argv = [str(a) for a in argv]
        if argv[0] != "kubectl":
            return super().run(argv, check, readonly, timeout, hint, stdin)
        self.calls.append(argv)
        verb, name = argv[3], argv[4]
        if verb == "get":
            return Result(argv, 0, json.dumps({"items": [
                {"metadata": {"name": n}, "spec": {"unschedulable": n in self.cordoned}}
                for n in ("cp1", "cp2", "w1")]}), "")
        if verb == "drain":
            self.cordoned.add(name)
            if self.fail_drain:  # cordoned, then killed while evicting
                raise StepFailed("drain of {} interrupted".format(name))
        if verb == "uncordon":
            self.cordoned.discard(name)
        return Result(argv, 0, "", "")


def drain_and_uncordon(ctx, state=None, apply=True):
    up = upgrade.Upgrade(ctx, ctx.info, None, True)
    return run_steps(ctx, [upgradesteps.DrainStep(up), upgradesteps.UncordonStep(up)], state,
                     apply=apply)


def cluster_ctx(tmp_path, name, **kwargs):
    ctx = make_ctx(tmp_path, name)
    ctx.host.write("/etc/kubernetes/admin.conf", "x\n", 0o600)
    ctx.runner = Cluster(str(tmp_path / name), **kwargs)
    return ctx


def test_the_node_drained_is_uncordoned_in_the_same_run_and_after_a_killed_one(tmp_path):
    ctx = cluster_ctx(tmp_path, "cp2")
    reports = drain_and_uncordon(ctx, State.load(ctx.host))
    assert [r.changes for r in reports] == [
        ["kubectl drain cp2 --ignore-daemonsets --delete-emptydir-data"],
        ["kubectl uncordon cp2"]]
    assert not ctx.runner.cordoned and not ctx.host.exists(upgradesteps.DRAINED)

    ctx.runner = Cluster(str(tmp_path / "cp2"), fail_drain=True)
    with pytest.raises(StepFailed):
        drain_and_uncordon(ctx, State.load(ctx.host))
    assert ctx.runner.cordoned == {"cp2"}
    ctx.runner.fail_drain = False  # the re-run: cp2 is cordoned already, so no second drain
    rerun = drain_and_uncordon(ctx, State.load(ctx.host))
    assert [r.changes for r in rerun] == [[], ["kubectl uncordon cp2"]]
    assert not ctx.runner.cordoned


def test_plan_shows_the_uncordon_after_the_drain(tmp_path):
    ctx = cluster_ctx(tmp_path, "w1")
    ctx.runner.dry_run = True
    reports = drain_and_uncordon(ctx, apply=False)
    assert [r.changes for r in reports] == [
        ["kubectl drain w1 --ignore-daemonsets --delete-emptydir-data"],
        ["kubectl uncordon w1"]]
