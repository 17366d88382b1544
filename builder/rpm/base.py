"""The assumed-installed base of the target: what the resolver may take for granted on a host.

By default the comps group `core` of the target's base repo (a minimal install: mandatory and
default members and their closure, never optional ones, from that repo alone, as the install
media has it); or a host's own `rpm -qa` output; or nothing at all (the full closure).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from builder.rpm.metadata import Dep, Package
from builder.rpm.modules import module_view
from builder.rpm.repodata import load_repos
from builder.rpm.resolve import NO_BASE, AssumedBase, Resolution, ResolveError, resolve
from builder.rpm.vercmp import EVR

__all__ = ["NO_BASE", "base_from_spec", "group_base", "parse_rpm_qa", "resolve_from_preset",
           "rpm_qa_base"]

log = logging.getLogger(__name__)

_NEVRA = re.compile(r"\A(?P<name>.+)-(?:(?P<epoch>\d+|\(none\)):)?(?P<version>[^-:]+)"
                    r"-(?P<release>[^-]+)\.(?P<arch>[^.]+)\Z")


def group_base(repos: Sequence[Any], arch: str, group: str = "core",
               repo_id: Optional[str] = None) -> AssumedBase:
    """A minimal install: the closure of `group`'s mandatory and default members, resolved from
    the repo holding that group (the first that does, or `repo_id`) alone."""
    holders = [r for r in repos if (repo_id is None or r.id == repo_id) and group in r.groups()]
    if not holders:
        searched = ", ".join(r.id for r in repos if repo_id is None or r.id == repo_id)
        raise ResolveError(f"no comps group {group!r} in repo(s) {searched or repo_id}",
                           hint="give the base repo that carries comps, or use --base none")
    repo = holders[0]
    comps = repo.groups()[group]
    names = {p.name for p in repo.packages if p.arch in (arch, "noarch")}
    members = [n for n in dict.fromkeys(comps.mandatory + comps.default)]
    missing = tuple(n for n in members if n not in names)
    if missing:
        # Anaconda skips group members the media lacks (arch-specific firmware and the like).
        log.info("@%s: %d member(s) not in %s for %s: %s", group, len(missing), repo.id, arch,
                 ", ".join(missing))
    closure = resolve([n for n in members if n in names], [repo], arch=arch)
    return AssumedBase("group", f"@{group} from {repo.id}", closure.packages, missing)


def parse_rpm_qa(text: str, source: str = "rpm -qa") -> List[Tuple[str, int, str, str, str]]:
    """(name, epoch, version, release, arch) of every line of `rpm -qa` output: plain NEVRAs
    (`bash-4.2.46-34.el7.x86_64`), with an epoch (`bash-0:4.2...`), or
    `rpm -qa --qf '%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE}.%{ARCH}\\n'` lines. gpg-pubkey
    entries and blank or `#` lines are skipped."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("gpg-pubkey"):
            continue
        line = line.replace(" ", "-", 1) if " " in line else line
        match = _NEVRA.match(line)
        if not match:
            raise ResolveError(f"{source}:{number}: not a package NEVRA: {line!r}")
        epoch = match.group("epoch")
        out.append((match.group("name"), int(epoch) if epoch and epoch.isdigit() else 0,
                    match.group("version"), match.group("release"), match.group("arch")))
    return out


def rpm_qa_base(text: str, repos: Sequence[Any], source: str = "rpm -qa") -> AssumedBase:
    """The packages a real host lists. Each takes its provides and files from the same NEVRA
    in the repos, else from the same name and arch in another version (its own version still
    provided), else it provides only its name."""
    exact: Dict[Tuple[str, int, str, str, str], Package] = {}
    by_name: Dict[Tuple[str, str], Package] = {}
    for repo in repos:
        for p in repo.packages:
            exact.setdefault((p.name, p.epoch, p.version, p.release, p.arch), p)
            by_name.setdefault((p.name, p.arch), p)
    packages, approximate = [], []
    for key in parse_rpm_qa(text, source):
        name, epoch, version, release, arch = key
        if key in exact:
            packages.append(exact[key])
            continue
        like = by_name.get((name, arch))
        approximate.append(f"{name}-{version}-{release}.{arch}")
        own = EVR(epoch, version, release)
        provides = tuple(
            Dep(d.name, d.flags, own if d.evr == like.evr else d.evr, d.pre)
            for d in like.provides) if like else ()
        packages.append(Package(
            name=name, epoch=epoch, version=version, release=release, arch=arch,
            repo="@System", location="", sha256="", size=0, provides=provides, requires=(),
            obsoletes=(), conflicts=(), files=like.files if like else ()))
    if approximate:
        log.info("%s: %d package(s) not in the repos in that version: %s", source,
                 len(approximate), ", ".join(approximate))
    return AssumedBase("rpm-qa", source, tuple(packages), tuple(approximate))


def base_from_spec(spec: str, repos: Sequence[Any], arch: str) -> AssumedBase:
    """`@GROUP` (comps group of the base repo, `@core` by default), `none`, or the path of a
    file of `rpm -qa` output from a real host."""
    if spec == "none":
        return NO_BASE
    if spec.startswith("@"):
        return group_base(repos, arch, spec[1:])
    try:
        with open(spec, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ResolveError(f"--base {spec}: cannot read the rpm -qa file: {err.strerror}",
                           hint="use @core, @GROUP, none, or a file of `rpm -qa` output") from None
    return rpm_qa_base(text, repos, spec)


def resolve_from_preset(preset: Any, requests: Sequence[str], *, session: Any,
                        repo_ids: Optional[Sequence[str]] = None, base: str = "@core",
                        arch: str = "x86_64", cache: Any = None,
                        platform: Optional[str] = None) -> Resolution:
    """Load the preset's yum repos (all, in preset order, unless `repo_ids`), build the assumed
    base from `base` (see base_from_spec) and resolve `requests` against it, as dnf on a host
    of `platform` ("el8") would see modular repos."""
    view = module_view(load_repos(preset, list(repo_ids or preset.yum), session, cache=cache),
                       platform)
    view.check_requests(requests)
    return resolve(requests, view.repos, arch=arch, base=base_from_spec(base, view.repos, arch))
