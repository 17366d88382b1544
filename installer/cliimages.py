"""`images push FILE.tar` (registered on the command group in installer/cli.py); the core is
installer/imagepush.py."""

import click

from installer.cliopts import _begin, _prog_name, common_options
from installer.registrystore import REGISTRY_NODE_PORT


@click.group("images")
def images_group() -> None:
    """The images the control planes' registry serves (cluster.yaml images.mode: registry)."""


@images_group.command("push")
@click.argument("tar_path", metavar="FILE.tar", type=click.Path())
@common_options
def push_cmd(tar_path, root, dry_run, verbose):
    """Put the images of FILE.tar into this control plane's registry, from which containerd
    on every node pulls them through the load balancer (port 8008 of the control-plane
    endpoint), as it pulls the bundle's images. Pods then name the image as usual.

    \b
    Make FILE.tar on a connected machine with one of:
      docker save docker.io/acme/app:1.0 -o app.tar
      skopeo copy docker://docker.io/acme/app:1.0 docker-archive:app.tar:docker.io/acme/app:1.0
      skopeo copy docker://docker.io/acme/app:1.0 oci-archive:app.tar:docker.io/acme/app:1.0

    A gzip-compressed tar is read too. Each image needs a name and tag under a registry the
    bundle's images come from (docker.io, registry.k8s.io, ...): containerd sends only those
    to the cluster's registry.

    Every blob is checked against its digest before anything is written; a damaged or
    changed tar is refused (exit 3) naming the member, and the registry is left as it was.

    Each control plane serves its own copy: run the same command on every control plane
    before pods use the image. The output says which of the others lack it (their registries
    are asked) or do not answer. Until then a pull the load balancer
    sends to one that lacks it gets 404 and goes on to the control planes' own registries
    (hosts.toml), and the image goes with this node.

    Refused (exit 4) on a worker, on a Docker cluster, with images.mode: archive, and where
    no registry is served; a file that is not a tar is exit 2.
    """
    from installer import imagepush

    _begin(verbose, root, dry_run)
    where, pushed = imagepush.push(root, tar_path, dry_run)
    for item in pushed:
        click.echo("{} {} ({})".format(
            ("would push" if item.new else "already served:") if dry_run
            else ("pushed" if item.new else "already served:"), item.reference,
            item.manifest_digest))
    them = "them" if len(pushed) > 1 else "it"
    if not dry_run:
        click.echo("this control plane ({}, {}) serves {} now.".format(
            where.node.name, where.node.address, them))
    todo = []
    for node, lacking in imagepush.peers(root, where, pushed):
        label = "{} ({})".format(node.name, node.address)
        if lacking is None:
            click.echo("{}: its registry does not answer on port {}".format(
                label, REGISTRY_NODE_PORT))
        elif lacking:
            click.echo("{}: lacks {}".format(label, ", ".join(lacking)))
        else:
            click.echo("{}: serves {} too".format(label, them))
        if lacking != []:
            todo.append(label)
    if todo:
        click.echo("Run `{} images push {}` on {} too before pods use {}: each control plane "
                   "serves its own copy.".format(_prog_name(), tar_path, ", ".join(todo),
                                                 them))
    elif where.other_control_planes:
        click.echo("every control plane serves {}.".format(them))
