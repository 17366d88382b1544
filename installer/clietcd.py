"""etcd and node-replacement commands of the installer: `etcd-backup`, `etcd-restore`,
`etcd-defrag`, `remove-node` (registered on the command group in installer/cli.py)."""

import contextlib
import os
import sys

import click

from installer.cliopts import _begin, common_options
from installer.format.errors import UsageError


def _echo(line: str) -> None:
    click.echo(line, err=True)


@contextlib.contextmanager
def _locked(root: str, dry_run: bool):
    from installer.host import Host
    from installer.state import HostLock

    if dry_run:
        yield
        return
    with HostLock(Host(root)):
        yield


@click.command("etcd-backup")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Write the snapshot here, with FILE.sha256, FILE.pki.tar and "
              "FILE.kubeadm.yaml beside it (never overwritten).")
@click.option("--out-dir", "out_dir", type=click.Path(file_okay=False),
              help="Write etcd-snapshot-<UTC time>.db (and its companions) into this folder "
              "and keep the newest --keep of them [with --schedule: "
              "/var/lib/kubecrate/etcd-backups].")
@click.option("--keep", "keep", type=int, default=7, show_default=True,
              help="With --out-dir or --schedule: how many snapshots to keep.")
@click.option("--schedule", "schedule", is_flag=True,
              help="Install a systemd timer (kubecrate-etcd-backup.timer) that runs "
              "`etcd-backup --out-dir DIR --keep N` at --on-calendar.")
@click.option("--on-calendar", "calendar", default="daily", show_default=True,
              help="With --schedule: when, as a systemd calendar expression.")
@click.option("--unschedule", "unschedule", is_flag=True, help="Remove the timer again.")
@common_options
def etcd_backup_cmd(out, out_dir, keep, schedule, calendar, unschedule, root, dry_run, verbose):
    """On a control-plane node: snapshot etcd with the etcdctl of the node's own etcd image,
    check it with etcdutl, and write it with its sha256 and, beside it, the cluster's CAs and
    service-account keys (FILE.pki.tar, 0600: keep it as safe as the snapshot) and kubeadm's
    ClusterConfiguration. Restore with etcd-restore (docs/cluster.md)."""
    from installer import etcdbackup, etcdtimer

    _begin(verbose, root, dry_run)
    if unschedule or schedule:
        if out or (unschedule and schedule):
            raise UsageError("--schedule and --unschedule take no --out (the timer writes "
                             "into --out-dir), and not each other")
    elif bool(out) == bool(out_dir):
        raise UsageError("give one of --out FILE, --out-dir DIR, --schedule or --unschedule")
    if unschedule:
        for change in etcdtimer.unschedule(root, dry_run):
            click.echo(("would " if dry_run else "") + change)
        return
    if schedule:
        folder = etcdbackup.check_out_dir(out_dir)
        program = os.path.abspath(sys.argv[0]) if sys.argv else ""
        for change in etcdtimer.schedule(root, program, folder, keep, calendar, dry_run):
            click.echo(("would: " if dry_run else "") + change)
        return
    if dry_run:
        click.echo("would write an etcd snapshot to {}".format(out or out_dir))
        return
    if out:
        digest, status = etcdbackup.backup(root, out, _echo)
        removed = []  # type: list
    else:
        out, status, removed = etcdbackup.rotate(root, os.path.abspath(out_dir), keep, _echo)
        digest = etcdbackup.verify(out)
    click.echo("wrote {}: revision {}, {} keys, {} bytes, sha256 {}".format(
        out, status.get("revision"), status.get("totalKey"), status.get("totalSize"), digest))
    click.echo("beside it: {0}.sha256, {0}.pki.tar (CA keys: keep it safe), "
               "{0}.kubeadm.yaml".format(os.path.basename(out)))
    for path in removed:
        click.echo("removed the older {} (--keep {})".format(path, keep))


@click.command("etcd-restore")
@click.argument("snapshot", type=click.Path(dir_okay=False))
@click.option("--all-control-planes", "all_control_planes", is_flag=True,
              help="Restore a cluster whose every control plane was lost: each control plane "
              "of cluster.yaml becomes a member; run it on each of them with the same "
              "SNAPSHOT.")
@common_options
def etcd_restore_cmd(snapshot, all_control_planes, root, dry_run, verbose):
    """On a control-plane node: restore etcd from SNAPSHOT (written by etcd-backup). The
    checksum in SNAPSHOT.sha256 is checked first (exit 3 and nothing changed when it fails),
    then etcdutl checks the snapshot itself. The static pods stop, the node's etcd data is
    replaced (the old data is kept beside it as member.before-restore-<time>), the pods start
    again. Without --all-control-planes the restored etcd has this node as its only member:
    the other control planes are reset and join again with fresh join-info."""
    from installer import etcdbackup

    _begin(verbose, root, dry_run)
    if dry_run:
        digest = etcdbackup.verify(os.path.abspath(snapshot))
        click.echo("would restore {} (sha256 {} checked)".format(snapshot, digest))
        return
    with _locked(root, dry_run):
        for change in etcdbackup.restore(root, snapshot, all_control_planes, _echo):
            click.echo(change)


@click.command("etcd-defrag")
@common_options
def etcd_defrag_cmd(root, dry_run, verbose):
    """On a control-plane node: defragment every etcd member, one at a time and the leader
    last, each checked healthy before the next. A NOSPACE alarm is cleared: the keyspace is
    compacted first, and the alarm disarmed at the end."""
    from installer import etcdmembers

    _begin(verbose, root, dry_run)
    for change in etcdmembers.defrag(root, dry_run, _echo):
        click.echo(("would: " if dry_run else "") + change)


@click.command("remove-node")
@click.argument("name")
@common_options
def remove_node_cmd(name, root, dry_run, verbose):
    """On a healthy control-plane node: take node NAME out of the cluster before it is
    rebuilt or replaced: drain it when it is Ready, remove its etcd member (a control plane),
    `kubectl delete node`. Refused when it would leave etcd without quorum, e.g. for the last
    healthy member. The rebuilt host then joins with fresh join-info (docs/cluster.md)."""
    from installer import etcdmembers

    _begin(verbose, root, dry_run)
    with _locked(root, dry_run):
        for change in etcdmembers.remove_node(root, name, dry_run, _echo):
            click.echo(("would: " if dry_run else "") + change)
