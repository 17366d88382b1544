"""`fleet export`: the Ansible project that installs a whole cluster from one control node
(installer/fleet.py, docs/fleet.md); registered on the command group in installer/cli.py."""

import os
import sys

import click

from installer.cliopts import _begin, common_options, trusted_key


@click.group("fleet")
def fleet_group() -> None:
    """Many hosts from one control node, through Ansible (docs/fleet.md)."""


@fleet_group.command("export")
@click.option("--cluster", "cluster_path", required=True, type=click.Path(dir_okay=False),
              help="cluster.yaml: its nodes become the inventory, one group per role.")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(dir_okay=False),
              help="The signed bundle tar (X.tar.minisig beside it), copied to the first "
                   "control-plane node unless its cache holds it; the other nodes fetch it "
                   "from there.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="The folder to write the Ansible project into.")
@click.option("--pyz", "pyz_path", type=click.Path(dir_okay=False),
              help="The installer to copy to the hosts [default: this .pyz].")
@click.option("--key", "key_path", type=click.Path(dir_okay=False),
              help="minisign public key (.pub) to trust instead of the embedded one.")
@click.option("--forks", default=10, show_default=True, type=click.IntRange(1, 500),
              help="Hosts Ansible works on at once (ansible.cfg forks).")
@click.option("--worker-batch", "worker_batch", type=click.IntRange(1, 10000),
              help="Workers joined at once (the workers play's serial) [default: --forks].")
@common_options
def export_cmd(cluster_path, bundle_path, out, pyz_path, key_path, forks, worker_batch, root,
               dry_run, verbose):
    """Write a plain Ansible project into OUT that installs every node of cluster.yaml: the
    .pyz and cluster.yaml copied to each host, the bundle only to the first control-plane node
    (the others get what preflight reads, and fetch the bundle from the first node's bundle
    server when they join), `preflight` on every host first (any failure stops the run before
    a host changes), the first control-plane node, then the other control-plane nodes one at
    a time and the workers in batches, and each host's `status --json` at the end. Run it with
    `ansible-playbook site.yml` from OUT (ansible-core 2.14-2.16); `--check` runs `plan`."""
    from installer import fleet

    _begin(verbose, root, True)
    pyz = pyz_path or _this_pyz()
    if dry_run:
        click.echo("would write the Ansible project for {} into {}".format(cluster_path, out))
        return
    done = fleet.export(cluster_path, bundle_path, out, pyz, trusted_key(key_path), forks,
                        worker_batch)
    for name in done.files:
        click.echo(os.path.join(done.directory, name))
    click.echo("{} host(s); bundle.json {}; run: cd {} && ansible-playbook site.yml".format(
        done.hosts, done.digest, done.directory),
        err=True)


def _this_pyz() -> str:
    """The running .pyz (sys.argv[0]); in a checkout there is none to copy."""
    from installer.fleet import FleetError

    invoked = sys.argv[0] if sys.argv else ""
    if invoked.endswith(".pyz") and os.path.isfile(invoked):
        return os.path.abspath(invoked)
    raise FleetError("this installer is not running from a .pyz, so there is none to copy "
                     "to the hosts", hint="pass --pyz kubecrate-installer.pyz")


@click.command("serve-bundle")
@click.option("--address", required=True,
              help="This node's address: listened on, and the serving certificate's SAN.")
@click.option("--port", default=8447, show_default=True, type=click.IntRange(1, 65535))
@common_options
def serve_bundle_cmd(address, port, root, dry_run, verbose):
    """Serve the bundle the cluster runs to joining nodes (HTTPS, a certificate from the
    cluster CA; the bundle only to requests carrying the current, unexpired bootstrap token of
    ROOT/etc/kubernetes/kubecrate/join.yaml). Run by the kubecrate-bundle-server unit that
    install starts on the first control-plane node; runs until stopped."""
    from installer import bundleserve

    _begin(verbose, root, dry_run)
    if dry_run:
        click.echo("would serve the bundle cache of {} on https://{}:{}/".format(root, address,
                                                                                port))
        return
    bundleserve.serve(root, address, port)


@click.command("fetch-bundle")
@click.option("--join", "join_path", required=True, type=click.Path(dir_okay=False),
              help="join.yaml: its bundle_server, ca_cert_hash, token and bundle.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False),
              help="minisign public key (.pub) to trust instead of the embedded one.")
@common_options
def fetch_bundle_cmd(join_path, key_path, root, dry_run, verbose):
    """Fetch the bundle join.yaml names from the first control-plane node into
    ROOT/var/lib/kubecrate/bundles/<digest>/, pinned by its CA hash and checked as a copied
    bundle is; what `install --join join.yaml` without --bundle does first. A file that
    arrives damaged is fetched again (3 tries), then exit 3; nothing is cached unless
    complete and checked."""
    from installer import joinfile
    from installer.servedsource import served_source

    _begin(verbose, root, dry_run)
    source = served_source(joinfile.load(join_path), join_path)
    if dry_run:
        click.echo("would fetch bundle {} from {}".format(source.digest, source.location))
        return
    staged = source.stage(trusted_key(key_path), root)
    try:
        directory = staged.commit()
    finally:
        staged.discard()
    click.echo(directory)
