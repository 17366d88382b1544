"""Unpack: verify the bundle and extract it into <root>/var/lib/kubecrate/bundles/<digest>/
(installer/bundle.py); a bundle already in the cache is reused, so a reinstall copies nothing."""

from typing import List

from installer import bundle
from installer.hostfiles import naming_full_disk
from installer.steps import Action, ActionStep, Context


class UnpackStep(ActionStep):
    name = "unpack"
    title = "Verify and unpack the bundle into the cache"

    def actions(self, ctx: Context) -> List[Action]:
        if ctx.unpacked():
            ctx.source_dir = ctx.bundle_dir
            return []
        return [Action("unpack {} into {}".format(ctx.bundle_path, ctx.bundle_host_dir),
                       lambda: self._unpack(ctx))]

    def _unpack(self, ctx: Context) -> None:
        if ctx.host.dry_run:
            ctx.runner.echo("would unpack {} into {}".format(ctx.bundle_path, ctx.bundle_dir))
            return
        with naming_full_disk(bundle.cache_root(ctx.host.root),
                              "unpacking {}".format(ctx.bundle_path)):
            result = bundle.unpack(ctx.bundle_path, ctx.key, ctx.host.root,
                                   verified=ctx.verified)
        ctx.source_dir = result.directory
