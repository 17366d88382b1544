"""`fleet export` (installer/fleet.py): the Ansible project it writes for a cluster.yaml and a
signed bundle, and what it refuses before writing anything. The playbook itself runs against
namespace hosts in tests/e2e/test_fleet_install.py."""

import hashlib
import io
import os
import tarfile

import pytest
import yaml
from lab.bundles import make_key, signed_bundle

from installer import cli, fleet
from installer.format.errors import ExitCode

CLUSTER = """\
control_plane: {vip: 10.0.0.100}
networking: {}
load_balancer: {mode: services, interface: eth0, router_id: 51, auth_pass: k8sVIP42}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: cp2, address: 10.0.0.12, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
  - {name: w2, address: 10.0.0.22, role: worker}
"""


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    top = tmp_path_factory.mktemp("fleet")
    _, public, bundle = signed_bundle(top)
    (top / "cluster.yaml").write_text(CLUSTER)
    pyz = top / "kubecrate-installer.pyz"
    pyz.write_bytes(b"#!/bin/sh\n")
    return {"public": public, "bundle": bundle, "cluster": top / "cluster.yaml", "pyz": pyz,
            "top": top}


def export(capfd, kit, out, *extra):
    args = ["fleet", "export", "--cluster", str(kit["cluster"]), "--bundle", str(kit["bundle"]),
            "--out", str(out), "--pyz", str(kit["pyz"]), "--key", str(kit["public"])]
    with pytest.raises(SystemExit) as done:
        cli.main(args + list(extra))
    return done.value.code, capfd.readouterr()


def test_the_project_holds_the_inventory_by_role_and_the_bundle_digest(tmp_path, capfd, kit):
    code, printed = export(capfd, kit, tmp_path / "p", "--forks", "7", "--worker-batch", "3")
    assert code == ExitCode.OK, printed.err
    out = tmp_path / "p"
    groups = yaml.safe_load((out / "inventory.yml").read_text())["all"]["children"]
    assert groups["control_plane"]["hosts"] == {"cp1": {"ansible_host": "10.0.0.11"},
                                                "cp2": {"ansible_host": "10.0.0.12"}}
    assert list(groups["worker"]["hosts"]) == ["w1", "w2"]
    assert groups["first_control_plane"]["hosts"] == {"cp1": {}}
    with tarfile.open(str(kit["bundle"])) as tar:
        digest = hashlib.sha256(tar.extractfile("bundle.json").read()).hexdigest()
    data = yaml.safe_load((out / "fleet.yml").read_text())
    assert data == {"kubecrate_bundle": str(kit["bundle"]), "kubecrate_bundle_name": "k8s.tar",
                    "kubecrate_digest": digest, "kubecrate_worker_batch": 3}
    assert "forks = 7" in (out / "ansible.cfg").read_text()
    assert (out / "files/cluster.yaml").read_text() == CLUSTER
    assert os.stat(str(out / "files/kubecrate-installer.pyz")).st_mode & 0o777 == 0o755
    assert "ansible-playbook site.yml" in printed.err
    # what the joining nodes' preflight reads, checked: they fetch the bundle when they join
    with tarfile.open(str(out / "files" / (digest + ".preflight.tar"))) as tar:
        names = tar.getnames()
    assert digest + "/bundle.json" in names and digest + "/bundle.minisig" in names, names
    assert not [n for n in names if "/images" in n], names  # the bundle itself is not there


def test_the_preflight_view_serves_preflight_but_not_install(tmp_path, capfd, kit):
    from installer.format import minisig
    from installer.format.bundleinfo import wanted_for_preflight
    from installer.format.errors import PreconditionError, VerificationError
    from installer.source import open_source

    code, printed = export(capfd, kit, tmp_path / "p")
    assert code == ExitCode.OK, printed.err
    view = next((tmp_path / "p/files").glob("*.preflight.tar"))
    key = minisig.load_public_key(str(kit["public"]))
    source = open_source(str(view))
    with source.view(key, str(tmp_path / "root"), wanted_for_preflight) as seen:
        assert os.path.isfile(os.path.join(seen.directory, "bundle.json")) and not seen.cached
    assert not os.path.exists(seen.directory)  # the scratch folder is gone
    with pytest.raises(PreconditionError) as refused:
        source.stage(key, str(tmp_path / "root"))
    assert "--join join.yaml alone" in refused.value.message
    with tarfile.open(str(view)) as tar:  # bundle.json changed: refused
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    with tarfile.open(str(view), "w") as tar:
        for member, data in members:
            if member.name.endswith("/bundle.json"):
                data = data + b" "
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(VerificationError):
        with source.view(key, str(tmp_path / "root"), wanted_for_preflight):
            pass
    assert not (tmp_path / "root").exists()


def test_the_playbook_uses_ansible_core_builtins_only(tmp_path, capfd, kit):
    code, printed = export(capfd, kit, tmp_path / "p")
    assert code == ExitCode.OK, printed.err
    keywords = {"name", "when", "register", "changed_when", "check_mode", "loop", "vars",
                "delegate_to", "run_once", "until", "retries", "delay", "block", "rescue",
                "always"}
    modules = set()

    def walk(tasks):
        for task in tasks:
            for section in ("block", "rescue", "always"):
                walk(task.get(section, []))
            modules.update(k for k in task if k not in keywords)

    for play in yaml.safe_load((tmp_path / "p/site.yml").read_text()):
        walk(play.get("tasks", []))
    walk(yaml.safe_load((tmp_path / "p/tasks/install.yml").read_text()))
    assert modules and all(m.startswith("ansible.builtin.") for m in modules), modules


def test_a_bundle_signed_by_another_key_writes_nothing(tmp_path, capfd, kit):
    _, _, other = make_key(tmp_path / "other")
    code, printed = export(capfd, dict(kit, public=other), tmp_path / "p")
    assert code == ExitCode.VERIFY_FAILED, printed.err
    assert "not with the trusted key" in printed.err
    assert not (tmp_path / "p").exists()


def test_a_wrong_cluster_yaml_writes_nothing(tmp_path, capfd, kit):
    bad = tmp_path / "cluster.yaml"
    bad.write_text(CLUSTER.replace("role: worker", "role: wroker", 1))
    code, printed = export(capfd, dict(kit, cluster=bad), tmp_path / "p")
    assert code == ExitCode.USAGE, printed.err
    assert "nodes[2].role: 'wroker'" in printed.err
    assert not (tmp_path / "p").exists()


def test_a_cluster_with_etcd_hosts_is_refused_before_anything_is_written(tmp_path, capfd,
                                                                        kit):
    external = tmp_path / "cluster.yaml"
    external.write_text(CLUSTER + "etcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n")
    code, printed = export(capfd, dict(kit, cluster=external), tmp_path / "p")
    assert code == ExitCode.USAGE, printed.err
    assert "the playbook does not install etcd.external hosts (etcd1) in this version" in \
        printed.err and "etcd-certs.json goes to the others" in printed.err
    assert not (tmp_path / "p").exists()


def test_from_a_checkout_it_asks_for_the_pyz(monkeypatch):
    from installer.clifleet import _this_pyz

    monkeypatch.setattr("sys.argv", ["python3 -m installer"])
    with pytest.raises(fleet.FleetError) as raised:
        _this_pyz()
    assert "pass --pyz" in str(raised.value.hint)
