"""Unpack: put the bundle into <root>/var/lib/kubecrate/bundles/<digest>/. install has already
read and checked it once into a staging folder beside the cache (installer/source.py); this
step renames that folder into place. A bundle already in the cache was checked file by file
when install opened it, so a reinstall copies nothing."""

from typing import List

from installer.steps import Action, ActionStep, Context


class UnpackStep(ActionStep):
    name = "unpack"
    title = "Verify and unpack the bundle into the cache"

    def actions(self, ctx: Context) -> List[Action]:
        if ctx.unpacked():
            ctx.source_dir = ctx.bundle_dir
            if ctx.staged is not None and ctx.staged.pending():  # a cache without its signature
                return [Action("keep the bundle's signature in " + ctx.bundle_host_dir,
                               ctx.staged.commit)]
            return []
        return [Action("unpack {} into {}".format(ctx.bundle_path, ctx.bundle_host_dir),
                       lambda: self._unpack(ctx))]

    def _unpack(self, ctx: Context) -> None:
        if ctx.host.dry_run or ctx.staged is None:
            ctx.runner.echo("would unpack {} into {}".format(ctx.bundle_path, ctx.bundle_dir))
            return
        ctx.source_dir = ctx.staged.commit()
