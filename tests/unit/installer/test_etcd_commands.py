"""The etcd commands' edges that need no etcd: status's etcd section, argument refusals, the
checksum check of etcd-restore, etcdctl's command line for each runtime (the commands
themselves run against a real etcd in tests/integration/test_etcd_care.py)."""

import click
import pytest
from click.testing import CliRunner

from installer import cli, etcdbackup
from installer.etcdctl import Etcdctl
from installer.format.errors import ExitCode, UsageError, VerificationError
from installer.runner import Runner


def test_status_prints_each_member_and_an_alarm():
    etcd = {"members": [{"name": "cp1", "endpoint": "https://10.0.0.11:2379",
                         "db_size_human": "1.1 MiB", "db_size_in_use_human": "916.0 KiB",
                         "leader": True}],
            "not_answering": ["https://10.0.0.12:2379"],
            "alarms": [{"alarm": "NOSPACE", "name": "cp1", "member": "2f2c"}]}

    @click.command()
    def show():
        cli._echo_etcd(etcd)

    out = CliRunner().invoke(show).output
    assert "cp1" in out and "1.1 MiB" in out and "916.0 KiB" in out and "leader" in out
    assert "https://10.0.0.12:2379 not answering" in " ".join(out.split())
    assert "etcd ALARM NOSPACE on member cp1 (2f2c): run `etcd-defrag`" in out


def test_etcd_backup_wants_exactly_one_destination(tmp_path):
    runner = CliRunner()
    for args in ([], ["--out", "a.db", "--out-dir", "b"], ["--schedule", "--out", "a.db"],
                 ["--schedule", "--unschedule"]):
        done = runner.invoke(cli.cli, ["etcd-backup", "--root", str(tmp_path)] + args)
        assert isinstance(done.exception, UsageError), (args, done.output)
        assert done.exception.exit_code == ExitCode.USAGE


def test_restore_refuses_a_missing_or_wrong_checksum_before_anything(tmp_path):
    snap = tmp_path / "snap.db"
    snap.write_bytes(b"etcd")
    with pytest.raises(VerificationError, match="snap.db.sha256 is missing"):
        etcdbackup.verify(str(snap))
    (tmp_path / "snap.db.sha256").write_text("0" * 64 + "  snap.db\n")
    with pytest.raises(VerificationError, match="checksum failed, nothing was changed: .*snap.db"):
        etcdbackup.verify(str(snap))


def test_etcdctl_runs_from_the_etcd_image_of_either_runtime():
    docker = Etcdctl(Runner(dry_run=True), "k8s.gcr.io/etcd:3.5.6-0", "docker", ["https://a:2379"])
    argv = docker.argv("etcdctl", ["member", "list"], writable=["/backups"])
    assert argv[:8] == ["docker", "run", "--rm", "--network", "host", "--entrypoint",
                        "/usr/local/bin/etcdctl", "-e"]
    assert "/etc/kubernetes/pki:/etc/kubernetes/pki:ro" in argv and "/backups:/backups" in argv
    assert argv[-3:] == ["k8s.gcr.io/etcd:3.5.6-0", "member", "list"]
    ctr = Etcdctl(Runner(dry_run=True), "registry.k8s.io/etcd:3.5.9-0", "containerd", ["x"])
    argv = ctr.argv("etcdutl", ["snapshot", "status", "/s.db"], mounts=["/"])
    assert argv[:6] == ["ctr", "-n", "k8s.io", "run", "--rm", "--net-host"]
    assert "type=bind,src=/etc/kubernetes/pki,dst=/etc/kubernetes/pki,options=rbind:ro" in argv
    assert argv[argv.index("registry.k8s.io/etcd:3.5.9-0") + 2] == "/usr/local/bin/etcdutl"


def test_etcd_commands_refuse_an_external_etcd_cluster_naming_its_hosts(tmp_path):
    """With etcd.external the control planes have no etcd member: etcd-backup, etcd-restore,
    etcd-defrag and remove-node say so, instead of "etcd.yaml is missing"."""
    import json

    from installer.etcdnode import open_node
    from installer.format.errors import PreconditionError

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "control_plane: {vip: 10.0.0.100}\nnetworking: {}\n"
        "load_balancer: {interface: eth0, auth_pass: k8sVIP42}\n"
        "nodes:\n  - {name: cp1, address: 10.0.0.11, role: control-plane}\n"
        "etcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n"
        "  - {name: etcd2, address: 10.0.0.32}\n")
    state = tmp_path / "root/var/lib/kubecrate/state.json"
    state.parent.mkdir(parents=True)
    for name, role in (("cp1", "control-plane"), ("etcd2", "etcd")):  # on an etcd host too
        state.write_text(json.dumps({"version": 1, "cluster": str(cluster), "node": name,
                                     "role": role}))
        with pytest.raises(PreconditionError) as err:
            open_node(str(tmp_path / "root"), dry_run=True)
        assert "keeps etcd on the dedicated hosts of etcd.external (etcd1, etcd2)" in \
            err.value.message and "etcdctl" in err.value.hint
        assert err.value.exit_code == ExitCode.PRECONDITION
    # renew-certs on an etcd host says what it is and how its certificates are renewed
    from installer import session

    with pytest.raises(PreconditionError) as err:
        session.renew_certs(str(tmp_path / "root"), dry_run=True)
    assert err.value.message == "etcd2 is an etcd.external host: renew-certs renews a " \
        "control-plane node's certificates"
    assert "`kubeadm certs renew etcd-server`" in err.value.hint


def test_renew_certs_refuses_a_node_its_cluster_yaml_no_longer_names(tmp_path):
    """state.json names a node that cluster.yaml has since lost (edited, or another file at
    that path): renew-certs says which node and which file, instead of an AttributeError."""
    import json

    from installer import session
    from installer.format.errors import PreconditionError

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "control_plane: {vip: 10.0.0.100}\nnetworking: {}\n"
        "load_balancer: {interface: eth0, auth_pass: k8sVIP42}\n"
        "nodes:\n  - {name: cp1, address: 10.0.0.11, role: control-plane}\n")
    state = tmp_path / "root/var/lib/kubecrate/state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"version": 1, "cluster": str(cluster), "node": "cp9",
                                 "role": "control-plane"}))
    with pytest.raises(PreconditionError) as err:
        session.renew_certs(str(tmp_path / "root"), dry_run=True)
    assert err.value.message == "{} names no node cp9, the node {} says this host is".format(
        cluster, state)
    assert "cluster.yaml" in err.value.hint
