"""Dependency closure of requested RPMs against an assumed-installed base, in pure Python.

    result = resolve(["docker-ce-20.10.24", "keepalived", "/usr/bin/python3"], repos,
                     arch="x86_64", base=core_base(repos, "x86_64"))
    result.packages          # what the bundle must carry, sorted
    explain(result, "fuse3-libs")

Rules (the closure yum and repotrack compute; docs/recipe.md): only the target arch and noarch
(never i686), the best repo priority per package name (yum-plugin-priorities: lower wins), the
newest EVR unless pinned or a requirement needs another, nothing the base already provides, a
base package upgraded only when a requirement needs a newer one (and then every base package
that depended on the old one is upgraded too), alternatives chosen by a fixed policy, Obsoletes
honoured, Conflicts reported. The same input always gives the same output.
"""

from __future__ import annotations

import collections
import difflib
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from builder.errors import BuildError
from builder.rpm.metadata import Dep, Package, no_gc
from builder.rpm.pkgindex import Index, index_for
from builder.rpm.vercmp import EVR, evr_key, overlaps, rpmvercmp

__all__ = ["AssumedBase", "Reason", "Resolution", "ResolveError", "explain", "resolve"]

_MAX_RESTARTS = 50


class ResolveError(BuildError):
    """A requested package does not exist, a requirement cannot be met, or packages conflict."""


class AssumedBase(NamedTuple):
    """What the target host is assumed to have installed already (recorded in bundle.json)."""

    kind: str  # "group" (comps, @core by default), "rpm-qa" (a host's package list), "none"
    source: str  # "@core from base", the rpm -qa file, "none"
    packages: Tuple[Package, ...] = ()
    missing: Tuple[str, ...] = ()  # group members or listed packages the repos do not have

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "source": self.source,
                "packages": sorted(p.nevra for p in self.packages),
                "missing": sorted(self.missing)}


NO_BASE = AssumedBase("none", "none")


class Reason(NamedTuple):
    """Why a package is in the closure: asked for, or needed by `parent` through `requirement`."""

    requested: Optional[str] = None
    parent: Optional[str] = None  # nevra
    requirement: Optional[Dep] = None
    note: str = ""


class Resolution(NamedTuple):
    arch: str
    requested: Tuple[str, ...]
    packages: Tuple[Package, ...]  # to ship, sorted by name, arch, EVR
    reasons: Mapping[str, Reason]  # by nevra
    base: AssumedBase
    in_base: Mapping[str, str]  # request -> the base package that already satisfies it
    replaces: Tuple[Tuple[str, str], ...]  # (shipped nevra, base nevra it upgrades/obsoletes)
    repos: Tuple[str, ...]
    skipped: Tuple[str, ...] = ()  # rich dependencies left to the target's yum/dnf

    def package(self, name: str) -> Optional[Package]:
        return next((p for p in self.packages if p.name == name or p.nevra == name), None)


def resolve(requests: Sequence[str], repos: Sequence[Any], *, arch: str = "x86_64",
            base: AssumedBase = NO_BASE) -> Resolution:
    """The closure of `requests` (names, `name-version[-release]` pins, or provides such as
    `/usr/bin/python3`) over `repos` (objects with `id`, `priority`, `packages` and optionally
    `files()` giving filelists by pkgid) that `base` lacks. Raises ResolveError naming every
    unknown request, unmet requirement and conflict, before anything is downloaded."""
    forced: Dict[str, int] = {}
    with no_gc():
        index = index_for(repos, arch, base)
        for _ in range(_MAX_RESTARTS):
            solver = _Solver(index, arch, base, forced)
            result = solver.run(requests)
            if result is not None:
                return result
            forced = solver.forced
    raise ResolveError("resolution did not settle on one version per package name")


def explain(result: Resolution, name: str) -> List[str]:
    """The chain of requirements that brought package `name` (or a nevra) into the closure,
    from the request down; or why it is not there."""
    matches = [p for p in result.packages if name in (p.name, p.nevra)]
    if not matches:
        in_base = [p for p in result.base.packages if name in (p.name, p.nevra)]
        if in_base:
            return [f"{p.nevra} is not shipped: it is in the assumed base ({result.base.source})"
                    for p in in_base]
        raise ResolveError(f"{name} is neither in the closure nor in the assumed base",
                           hint="closure: " + ", ".join(p.name for p in result.packages))
    lines: List[str] = []
    for pkg in matches:
        chain: List[str] = []
        nevra: Optional[str] = pkg.nevra
        seen: Set[str] = set()
        while nevra and nevra not in seen and len(chain) <= len(result.packages):
            seen.add(nevra)
            reason = result.reasons.get(nevra)
            if reason is None:
                chain.append(f"{nevra} (assumed base)")
                break
            repo = next((p.repo for p in result.packages if p.nevra == nevra), "?")
            if reason.requested is not None:
                line = f"{nevra} ({repo}): requested as {reason.requested!r}"
            else:
                line = (f"{nevra} ({repo}): needed by {reason.parent} for "
                        f"{str(reason.requirement)!r}")
            chain.append(line + (f"; {reason.note}" if reason.note else ""))
            nevra = reason.parent
        lines.extend(("  " * depth) + line for depth, line in enumerate(reversed(chain)))
    return lines


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _Solver:
    def __init__(self, index: Index, arch: str, base: AssumedBase, forced: Dict[str, int]):
        self.index, self.repos, self.arch, self.base = index, index.repos, arch, base
        self.forced = dict(forced)
        self.pkgs, self.candidate, self.provides = index.pkgs, index.candidate, index.provides
        self.installed, self.by_name, self.rank = index.installed, index.by_name, index.rank
        self.obsoleted_by = index.obsoleted_by
        self.whatprovides = index.whatprovides

    def satisfies(self, i: int, dep: Dep) -> bool:
        return i in self.whatprovides(dep)

    # ------------------------------------------------------------------ the closure

    def run(self, requests: Sequence[str]) -> Optional[Resolution]:
        self.view: Set[int] = set(self.installed)
        self.chosen: Dict[str, int] = {}
        self.reasons: Dict[int, Reason] = {}
        self.demands: Dict[str, List[Tuple[Dep, str]]] = collections.defaultdict(list)
        self.queue: collections.deque = collections.deque()
        self.replaces: List[Tuple[str, str]] = []
        self.errors: List[str] = []
        self.skipped: List[str] = []
        self.restart = False
        in_base: Dict[str, str] = {}
        missing = []
        for text in requests:
            ids, dep = self._request(text)
            if not ids:
                missing.append(self._not_found(text))
                continue
            have = [i for i in self.whatprovides(dep) if i in self.view]
            if have:
                in_base[text] = self.pkgs[have[0]].nevra
                continue
            older = [b for b in self.installed if self.pkgs[b].name == dep.name and dep.evr
                     and evr_key(self.pkgs[b].evr) > evr_key(dep.evr)]
            if older:
                missing.append(f"{text!r} is older than the base's {self.pkgs[older[0]].nevra}, "
                               "and yum does not downgrade on install")
                continue
            self._take(ids, dep, Reason(requested=text), f"request {text!r}")
        if missing:
            raise ResolveError(
                "; ".join(missing) + f" (searched {', '.join(r.id for r in self.repos)})",
                hint="names, name-version[-release] pins and provides such as /usr/bin/foo work")
        changed = True
        while changed and not self.restart:
            while self.queue and not self.restart:
                self._requires(self.queue.popleft())
            changed = self._repair_base()
        if self.restart:
            return None
        self._check_conflicts()
        if self.errors:
            raise ResolveError("\n".join(dict.fromkeys(self.errors)))
        chosen = [self.chosen[name] for name in sorted(self.chosen)]  # one package per name
        nevras = [self.pkgs[i].nevra for i in chosen]
        return Resolution(
            arch=self.arch, requested=tuple(requests),
            packages=tuple(self.pkgs[i] for i in chosen),
            reasons={nevra: self.reasons[i] for i, nevra in zip(chosen, nevras)},
            base=self.base, in_base=in_base, replaces=tuple(sorted(set(self.replaces))),
            repos=tuple(r.id for r in self.repos), skipped=tuple(sorted(set(self.skipped))))

    def _request(self, text: str) -> Tuple[List[int], Dep]:
        """Candidates for one request, newest first, and the dependency it stands for."""
        if text in self.by_name:
            return list(self.by_name[text]), Dep(text)
        if not text.startswith("/"):
            for name, evr in _pin_splits(text):
                ids = [i for i in self.by_name.get(name, ())
                       if _pin_matches(evr, self.pkgs[i].evr)]
                if ids:
                    self.forced.setdefault(name, ids[0])
                    return ids, Dep(name, "EQ", self.pkgs[ids[0]].evr)
        dep = Dep(text)
        return [i for i in self.whatprovides(dep) if self.candidate[i]], dep

    def _not_found(self, text: str) -> str:
        others = sorted({self.pkgs[i].arch for _d, i in self.provides.get(text, ())})
        if others:
            return (f"no package {text!r} for {self.arch} (only for {', '.join(others)})")
        for name, evr in _pin_splits(text):
            if name in self.by_name and evr.version[:1].isdigit():
                have = ", ".join(str(self.pkgs[i].evr) for i in self.by_name[name])
                return f"no version of {name} matches {text!r} (available: {have})"
        close = difflib.get_close_matches(text, sorted(self.by_name), n=1)
        return f"no package {text!r}" + (f" (did you mean {close[0]!r}?)" if close else "")

    def _requires(self, i: int) -> None:
        pkg = self.pkgs[i]
        view, whatprovides, candidates = self.view, self.whatprovides, self.index.candidates
        nevra = ""
        for dep in pkg.requires:
            if dep.name.startswith(("rpmlib(", "(")):
                if dep.name[0] == "(":
                    self.skipped.append(f"{dep} (needed by {pkg.nevra})")
                continue
            provided = whatprovides(dep)
            if not view.isdisjoint(provided):
                continue
            ids = candidates(dep)
            if not ids:
                self.errors.append(self._unmet(dep, pkg, provided))
                continue
            nevra = nevra or pkg.nevra
            self._take(ids, dep, Reason(parent=nevra, requirement=dep), nevra, i)

    def _unmet(self, dep: Dep, pkg: Package, provided: Sequence[int]) -> str:
        message = (f"nothing provides {str(dep)!r} needed by {pkg.nevra} ({pkg.repo}); "
                   f"searched repos: {', '.join(r.id for r in self.repos)}")
        elsewhere = sorted({self.pkgs[p].nevra for p in provided})
        if elsewhere:
            message += f" (only {', '.join(elsewhere)}, which is not for {self.arch})"
        return message

    def _take(self, ids: Sequence[int], dep: Dep, reason: Reason, needer: str,
              parent: Optional[int] = None) -> None:
        """Choose one of the candidate providers `ids` of `dep` (needed by package `parent`, or
        asked for) and queue it."""
        pkgs, forced, rank = self.pkgs, self.forced, self.rank
        best: Dict[str, int] = {}
        for i in ids:
            name = pkgs[i].name
            pin = forced.get(name)
            if pin is not None and i != pin:
                continue
            have = best.get(name)
            if have is None or rank[i] < rank[have]:
                best[name] = i
        if not best:
            self.errors.append(self._clash(list(ids), dep, needer))
            return
        if len(best) > 1:
            kept = {n: i for n, i in best.items()
                    if self.obsoleted_by.get(i) not in best.values()}
            best = kept or best
        if len(best) == 1:
            (name, pick), = best.items()
            if self.chosen.get(name, pick) != pick:  # a name already chosen in another version
                self._reconcile(name, dep, needer)
                return
        else:
            parent_name = pkgs[parent].name if parent is not None else ""
            parent_src = (pkgs[self.chosen[parent_name]].sourcerpm
                          if parent_name in self.chosen else "")
            pick = min(best.values(), key=lambda i: (
                pkgs[i].name != dep.name,
                not (parent_src and pkgs[i].sourcerpm == parent_src),
                -_common_prefix(pkgs[i].name, parent_name),
                len(pkgs[i].name), pkgs[i].name))
            name = pkgs[pick].name
        self.demands[name].append((dep, needer))
        if name in self.chosen:
            return
        self._choose(pick, reason)

    def _choose(self, i: int, reason: Reason) -> None:
        pkg = self.pkgs[i]
        self.chosen[pkg.name] = i
        self.reasons[i] = reason
        self.view.add(i)
        installed = self.index.installed_by_name
        if installed:
            replaced = set(installed.get(pkg.name, ()))
            for dep in pkg.obsoletes:
                replaced.update(b for b in installed.get(dep.name, ())
                                if overlaps(dep.flags, dep.evr, "EQ", self.pkgs[b].evr))
            for b in sorted(replaced & self.view):
                self.view.discard(b)
                self.replaces.append((pkg.nevra, self.pkgs[b].nevra))
        self.queue.append(i)

    def _reconcile(self, name: str, dep: Dep, needer: str) -> None:
        """Two requirements want different versions of `name`: restart with the newest version
        that satisfies all of them, or report the clash."""
        wanted = self.demands[name] + [(dep, needer)]
        fits = [i for i in self.by_name[name]
                if all(self.satisfies(i, d) for d, _n in wanted)]
        if fits and self.forced.get(name) != fits[0]:
            self.forced[name] = fits[0]
            self.restart = True
            return
        self.errors.append(f"no single version of {name} satisfies all of: " + "; ".join(
            f"{d} (needed by {n})" for d, n in wanted))

    def _clash(self, ids: List[int], dep: Dep, needer: str) -> str:
        names = sorted({self.pkgs[i].name for i in ids})
        pins = ", ".join(self.pkgs[self.forced[n]].nevra for n in names if n in self.forced)
        return f"{str(dep)!r} needed by {needer} is not satisfied by the chosen {pins}"

    def _repair_base(self) -> bool:
        """Base packages that lost a provider to an upgrade are upgraded too (as yum does)."""
        before = set(self.installed)
        changed = False
        for b in sorted(self.installed & self.view):
            old = self.pkgs[b]
            for dep in old.requires:
                if dep.name.startswith(("rpmlib(", "(")):
                    continue
                provided = self.whatprovides(dep)
                if any(p in self.view for p in provided) or not any(p in before
                                                                    for p in provided):
                    continue
                newer = [i for i in self.by_name.get(old.name, ())
                         if evr_key(self.pkgs[i].evr) > evr_key(old.evr)
                         and self.pkgs[i].arch == old.arch]
                if not newer or old.name in self.chosen:
                    self.errors.append(f"the shipped packages break base package {old.nevra}: "
                                       f"it requires {str(dep)!r}, which they replace")
                    break
                self._choose(newer[0], Reason(parent=old.nevra, requirement=dep, note=(
                    f"upgrades base package {old.nevra}, whose requirement "
                    f"{str(dep)!r} the closure replaced")))
                self.demands[old.name].append((dep, old.nevra))
                changed = True
                break
        return changed

    def _check_conflicts(self) -> None:
        shipped = set(self.chosen.values())
        by_name: Dict[str, List[int]] = collections.defaultdict(list)
        for i in self.view:
            by_name[self.pkgs[i].name].append(i)
        for i in sorted(self.view):
            pkg = self.pkgs[i]
            for dep in pkg.conflicts:
                for other in self.whatprovides(dep):
                    if other != i and other in self.view and (i in shipped or other in shipped):
                        self.errors.append(f"{pkg.nevra} conflicts with {self.pkgs[other].nevra} "
                                           f"({dep})")
            for dep in pkg.obsoletes:
                for other in by_name.get(dep.name, ()):
                    o = self.pkgs[other]
                    if (o.name != pkg.name and other in shipped
                            and overlaps(dep.flags, dep.evr, "EQ", o.evr)):
                        self.errors.append(f"{pkg.nevra} obsoletes {o.nevra}; both are needed")


def _pin_splits(text: str) -> List[Tuple[str, EVR]]:
    """`name-version-release` then `name-version` readings of a pin, with an optional epoch."""
    out = []
    parts = text.rsplit("-", 2)
    if len(parts) == 3:
        out.append((parts[0], _evr(parts[1], parts[2])))
    parts = text.rsplit("-", 1)
    if len(parts) == 2:
        out.append((parts[0], _evr(parts[1], None)))
    return out


def _evr(version: str, release: Optional[str]) -> EVR:
    epoch, colon, rest = version.partition(":")
    if colon and epoch.isdigit():
        return EVR(int(epoch), rest, release)
    return EVR(-1, version, release)  # -1: any epoch


def _pin_matches(pin: EVR, evr: EVR) -> bool:
    return ((pin.epoch < 0 or pin.epoch == evr.epoch) and rpmvercmp(pin.version, evr.version) == 0
            and (pin.release is None or rpmvercmp(pin.release, evr.release or "") == 0))
