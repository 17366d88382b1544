"""`upgrade --bundle NEW.tar`: the command (added to the group in installer/cli.py); the core is
installer/upgrade.py."""

import click

from installer.cliopts import (
    _begin,
    _options,
    _print_outcome,
    bundle_option,
    cluster_option,
    common_options,
    json_option,
    key_option,
    node_option,
)

no_drain_option = click.option(
    "--no-drain", "no_drain", is_flag=True,
    help="Do not drain and uncordon this node around its kubelet's upgrade (single-node labs).")
kubeconfig_option = click.option(
    "--kubeconfig", "kubeconfig", type=click.Path(dir_okay=False),
    help="Cluster-admin kubeconfig for a worker's drain and the cluster checks [default: "
    "ROOT/etc/kubernetes/admin.conf on a control plane].")


@click.command("upgrade")
@bundle_option
@cluster_option
@node_option
@no_drain_option
@kubeconfig_option
@key_option
@json_option
@common_options
def upgrade_cmd(bundle_path, cluster_path, node_name, no_drain, kubeconfig, key_path,
                as_json, root, dry_run, verbose):
    """Upgrade this node's cluster to the Kubernetes release of BUNDLE (one minor version
    at a time, kubeadm's way; docs/upgrades.md). Run it on every node in turn: the first
    control-plane node of cluster.yaml (kubeadm upgrade plan + apply), the other control
    planes, then the workers (kubeadm upgrade node). `plan --bundle` on the node shows the
    steps first.

    The bundle is verified as install verifies it (exit 3 when it fails) and its images
    are loaded before anything changes. Preflight refuses, with exit 4 and nothing
    changed: a downgrade, a skip of more than one minor (a bundle that carries the
    releases in between is walked one minor at a time), a bundle for another OS, arch or
    runtime, a node out of turn, a NotReady node or a control plane without its etcd
    member. The node is drained around its kubelet's upgrade (unless --no-drain) and
    uncordoned after; a worker needs --kubeconfig (cluster-admin) for that. Safe to re-run:
    after a crash it resumes where it stopped.
    """
    from installer import session, upgrade

    _begin(verbose, root, dry_run)
    outcome = upgrade.run(_options(bundle_path, cluster_path, key_path, root, node_name,
                                   dry_run), not no_drain, kubeconfig, plan_only=False)
    if as_json:
        click.echo(session.to_json(outcome))
        return
    _print_outcome(outcome, dry_run, " already runs bundle {}",
                   ": upgraded to bundle {}")
    if outcome.paused:  # a multi-minor bundle: the next step waits for the other nodes
        for finding in outcome.findings:
            if finding.level == "fail":
                click.echo("next step waits: {} -> {}".format(finding.message, finding.fix))
        click.echo("run `upgrade` again here once they have")
