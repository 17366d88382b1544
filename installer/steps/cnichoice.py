"""Which CNI this cluster runs: cluster.yaml's networking.cni, checked against the CNIs whose
manifest the bundle carries (bundle.json addons.<cni>.manifest). Preflight, host prep (ports,
NetworkManager, modules) and the CNI step all ask here."""

from typing import List, Optional

from installer.format.cluster import CNIS
from installer.steps import Context


def carried(ctx: Context) -> List[str]:
    """The CNIs whose manifest the bundle carries (bundle.json addons.<cni>.manifest)."""
    return [name for name in CNIS if getattr(ctx.info.addons.get(name), "manifest", None)]


def chosen(ctx: Context) -> str:
    """cluster.yaml's networking.cni, else flannel, else the bundle's one CNI."""
    have = carried(ctx)
    return ctx.cluster.cni or ("flannel" if "flannel" in have or not have else have[0])


def choice_problem(ctx: Context) -> Optional[str]:
    """Why the chosen CNI cannot be applied from this bundle, naming file, key and bundle."""
    name, have = chosen(ctx), carried(ctx)
    if name in have:
        return None
    how = "networking.cni: {}".format(name) if ctx.cluster.cni else \
        "networking.cni unset (flannel by default)"
    return "{}: {}, but bundle {} carries no {} manifest (bundle.json addons: {})".format(
        ctx.cluster.source, how, ctx.info.name, name, ", ".join(have) or "none")
