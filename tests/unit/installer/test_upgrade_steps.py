"""The kubeadm commands of `upgrade --bundle` on every node (installer/steps/upgradesteps.py):
the first control plane runs `kubeadm upgrade plan` and `apply`, the other control planes and
the workers `kubeadm upgrade node`; under `selinux: enforcing` every control plane passes
kubeadm its patches again (kubeadm keeps none from init or join), a worker has none."""

import pytest

from installer import upgrade
from installer.kubeadmconfig import SELINUX_PATCHES_DIR, SPC_T_PATCH
from installer.steps import upgradesteps
from tests.unit.installer.test_ha_steps import CLUSTER, make_ctx

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


def test_a_patched_apiserver_manifest_in_json_still_names_its_version(tmp_path):
    ctx = make_ctx(tmp_path, "cp1")
    ctx.host.write(upgrade.APISERVER_MANIFEST, '{"spec": {"containers": [{"image": '
                   '"registry.k8s.io/kube-apiserver:v1.24.17", "name": "kube-apiserver"}]}}\n')
    assert upgrade.Upgrade(ctx, ctx.info, None, True).apiserver_version() == "v1.24.17"
