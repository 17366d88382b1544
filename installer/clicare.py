"""Housekeeping commands of the installer: `collect-logs` and `cache list|prune` (registered on
the command group in installer/cli.py)."""

import click

from installer.bundlecache import cache_root
from installer.cliopts import _begin, common_options, json_option


@click.command("collect-logs")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The archive to write (.tar.gz, mode 0600).")
@common_options
def collect_logs_cmd(out, root, dry_run, verbose):
    """One archive of what a support engineer asks for: state.json and the installer's run
    logs, the kubelet/docker/containerd/keepalived/haproxy journals, the configs kubecrate
    rendered, `rpm -qa`, os-release, the tail of dmesg, addresses and routes, and on a
    control-plane node `kubectl get` of nodes, pods and events.

    Secrets are removed: the bootstrap token's secret, the certificate key, private keys,
    kubeconfig key data and tokens, keepalived's auth_pass. Private key files, admin.conf and
    join.yaml are never read into it. INDEX.txt inside lists what was and was not collected.
    """
    from installer import supportlogs

    _begin(verbose, root, True)
    if dry_run:
        click.echo("would write {}".format(out))
        return
    index = supportlogs.collect(root, out)
    skipped = [line for line in index if line.startswith("-  ")]
    click.echo("wrote {} ({} item(s), {} not on this host or not collected: see INDEX.txt "
               "inside)".format(out, len(index) - len(skipped), len(skipped)))


@click.group("cache")
def cache_group() -> None:
    """The bundle cache (ROOT/var/lib/kubecrate/bundles): every unpack and install keeps a
    full copy of its bundle there. `cache list` shows them; `cache prune` removes all but the
    bundle in use, the one before it (the way back after an upgrade) and the newest one when
    it is not installed yet."""


@cache_group.command("list")
@json_option
@common_options
def cache_list_cmd(as_json, root, dry_run, verbose):
    """Every cached bundle, oldest first: digest, recipe, Kubernetes version, size on disk,
    when it was unpacked, and why `cache prune` would keep it."""
    import json

    from installer import cachecare

    _begin(verbose, root, True)
    entries = cachecare.list_cache(root)
    if as_json:
        click.echo(json.dumps([cachecare.as_json(e) for e in entries], indent=1,
                              sort_keys=True))
        return
    if not entries:
        click.echo("no bundle in the cache {}".format(cache_root(root)))
        return
    click.echo("{} bundle(s) in {}, {}:".format(
        len(entries), cache_root(root), cachecare.human_size(sum(e.size for e in entries))))
    for entry in entries:
        click.echo("  {}  {} ({})  {}  unpacked {}{}{}".format(
            entry.digest[:12], entry.name, entry.kubernetes_version,
            cachecare.human_size(entry.size), cachecare.as_json(entry)["unpacked"],
            "  (no image archive: pulled from the registry)" if entry.partial else "",
            "  [{}]".format(entry.keep) if entry.keep else ""))


@cache_group.command("prune")
@json_option
@common_options
def cache_prune_cmd(as_json, root, dry_run, verbose):
    """Remove the cached bundles nothing needs. Kept: the bundle in use and the one before it
    (state.json), and the newest one when it is not installed yet. With --dry-run, only list
    what would go. It refuses to run while an install holds the host lock.
    """
    import json

    from installer import cachecare

    _begin(verbose, root, dry_run)
    result = cachecare.prune(root, dry_run)
    if as_json:
        click.echo(json.dumps({"removed": [cachecare.as_json(e) for e in result.removed],
                               "kept": [cachecare.as_json(e) for e in result.kept],
                               "staging_removed": result.staging, "freed_bytes": result.freed,
                               "dry_run": bool(dry_run)}, indent=1, sort_keys=True))
        return
    verb = "would remove" if dry_run else "removed"
    for entry in result.removed:
        click.echo("{} {} ({}, {})".format(verb, entry.digest, entry.name,
                                         cachecare.human_size(entry.size)))
    for path in result.staging:
        click.echo("removed {}, left by a killed unpack".format(path))
    for entry in result.kept:
        click.echo("kept {} ({}): {}".format(entry.digest, entry.name, entry.keep))
    click.echo("{} {} bundle(s), {}".format(verb, len(result.removed),
                                            cachecare.human_size(result.freed)))
