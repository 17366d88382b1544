"""Installed packages the bundle conflicts with, and their removal by host prep.

On EL8 and later, containerd.io `Obsoletes: runc` and `Conflicts: runc` but, unlike on EL7, does
not provide runc, while podman and buildah require it (docker/containerd-packaging
rpm/containerd.spec; containerd/containerd#5417; docs/el8-el9.md): yum refuses the bundle on a
host that has them. The runbooks run `yum remove podman runc` first. kubecrate removes them only
when the bundle says so (the recipe's `remove`, bundle.json `remove_packages`), and then exactly
those: `rpm -e NAMES`, which refuses rather than take anything else along (yum's remove would
also take whatever requires them). Preflight proves it beforehand with `rpm -e --test`.

`reset --host` does not reinstall them: they came from the OS repos, not from the bundle.
"""

import re
from functools import partial
from typing import List, Sequence

from installer.steps import Action, Context

# What containerd.io conflicts with on EL8+ and what requires it; checked only when the
# role's packages include containerd.io.
CONFLICTING = ("podman", "buildah", "runc")
RUNTIME_PACKAGE = "containerd.io"


def installed(ctx: Context, names: Sequence[str]) -> List[str]:
    """Which of `names` the host's rpm database has (`rpm -q`, read-only)."""
    if not names:
        return []
    result = ctx.runner.query(["rpm", "-q"] + list(names))
    have = []
    for name, line in zip(names, result.stdout.splitlines()):
        if line.strip() and "not installed" not in line:
            have.append(name)
    return have


def conflicting(ctx: Context) -> List[str]:
    """The installed packages the role's bundle packages conflict with (EL8+ only: on EL7
    containerd.io provides runc and replaces it)."""
    if ctx.info.major_release == "7" or not bundle_installs(ctx, RUNTIME_PACKAGE):
        return []
    return installed(ctx, CONFLICTING)


def planned(ctx: Context) -> List[str]:
    """The installed packages host prep removes: the bundle's remove_packages found here."""
    return installed(ctx, tuple(getattr(ctx.info, "remove_packages", ()) or ()))


def removal_blockers(ctx: Context, names: Sequence[str]) -> List[str]:
    """rpm's complaints about removing exactly `names` (`rpm -e --test`, read-only): the other
    installed packages that need them. Empty when the removal takes nothing else along."""
    if not names:
        return []
    result = ctx.runner.query(["rpm", "-e", "--test"] + list(names))
    if result.returncode == 0:
        return []
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines()
             if "needed by" in line or line.strip().startswith("error")]
    return [line for line in lines if line] or ["rpm -e --test exited {}".format(
        result.returncode)]


def actions(ctx: Context) -> List[Action]:
    """Host prep: `rpm -e` of the bundle's remove_packages that are installed here."""
    names = planned(ctx)
    if not names:
        return []
    return [Action("remove {} (the bundle's remove_packages: {} conflicts with them)".format(
        " ".join(names), RUNTIME_PACKAGE), partial(ctx.runner.run, ["rpm", "-e"] + names))]


def bundle_installs(ctx: Context, name: str) -> bool:
    """Whether the role's bundle packages name `name` (plain, or name-version / name = EVR)."""
    return any(re.match(r"^{}(\s*[<>=]|-\d|$)".format(re.escape(name)), spec.strip())
               for spec in ctx.info.packages_for(ctx.node.role))
