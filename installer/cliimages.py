"""`images push FILE.tar` (registered on the command group in installer/cli.py); the core is
installer/imagepush.py."""

import click

from installer.cliopts import _begin, _prog_name, common_options


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
    (the output names them) before pods use the image. Until then a pull the load balancer
    sends to one that lacks it gets 404 (the kubelet retries), and the image goes with this
    node.

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
    others = where.other_control_planes
    if others:
        click.echo("this control plane ({}, {}) serves {} now. Run `{} images push {}` on {} "
                   "too before pods use {}: each control plane serves its own copy (where it "
                   "is done already, the push changes nothing).".format(
                       where.node.name, where.node.address,
                       "them" if len(pushed) > 1 else "it", _prog_name(), tar_path,
                       ", ".join("{} ({})".format(n.name, n.address) for n in others),
                       "them" if len(pushed) > 1 else "it"))
