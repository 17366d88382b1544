"""The package index the dependency resolver (builder/rpm/resolve.py) looks things up in: every
package of the repos and the assumed-installed base, which are candidates, providers by name and
by file, versions newest first and what obsoletes what. It depends only on the metadata, the
target arch and the base, never on the requests, so one is kept across resolves.
"""

from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Tuple

from builder.rpm.records import Dep, Package
from builder.rpm.vercmp import evr_key, overlaps

if TYPE_CHECKING:
    from builder.rpm.resolve import AssumedBase

__all__ = ["Index", "index_for"]


class Index:
    """Everything the solver looks up that does not depend on the requests: the packages, which
    are candidates (target arch, best repo priority per name), providers by name and by file,
    versions by name, newest first, and what obsoletes what. Built once per repos, arch and base
    and kept (see `index_for`), so a second resolve over the same metadata starts solving at once;
    `whatprovides` answers are memoised per dependency."""

    def __init__(self, repos: Sequence[Any], arch: str, base: AssumedBase):
        self.repos = repos
        allowed = {arch, "noarch"}
        self.filelists_loaded = False
        self._what: Dict[Dep, Tuple[int, ...]] = {}
        self._candidates: Dict[Dep, Tuple[int, ...]] = {}
        best: Dict[str, int] = {}
        for repo in repos:
            priority = repo.priority
            for p in repo.packages:
                if p.arch in allowed and best.get(p.name, 1 << 30) > priority:
                    best[p.name] = priority
        # every repo's packages in order, then the base's (a base package also in a repo is
        # there twice: once a candidate, once installed)
        self.pkgs: List[Package] = []
        self.candidate: List[bool] = []
        for repo in repos:
            priority = repo.priority
            self.pkgs += repo.packages
            self.candidate += [p.arch in allowed and best.get(p.name) == priority
                               for p in repo.packages]
        first_base = len(self.pkgs)
        self.pkgs += base.packages
        self.candidate += [False] * len(base.packages)
        pkgs = self.pkgs
        self.by_name: Dict[str, List[int]] = collections.defaultdict(list)
        by_name = self.by_name
        for i in itertools.compress(range(first_base), self.candidate):
            by_name[pkgs[i].name].append(i)
        self.provides: Dict[str, List[Tuple[Dep, int]]] = collections.defaultdict(list)
        self.files: Dict[str, List[int]] = collections.defaultdict(list)
        provides, files = self.provides, self.files
        for i, p in enumerate(pkgs):
            for dep in p.provides:
                provides[dep.name].append((dep, i))
            # rpm adds `name = EVR` to every package; hand-made metadata may lack it. The last
            # provider of the name is this package if any of its provides named it.
            own = provides.get(p.name)
            if not own or own[-1][1] != i:
                provides[p.name].append((Dep(p.name, "EQ", p.evr), i))
            for path in p.files:
                files[path].append(i)
        self.installed = frozenset(range(first_base, len(pkgs)))
        self.installed_by_name: Dict[str, List[int]] = collections.defaultdict(list)
        for b in range(first_base, len(pkgs)):
            self.installed_by_name[pkgs[b].name].append(b)
        for ids in by_name.values():  # newest first; ties: earlier repo, then location
            if len(ids) > 1:
                ids.sort(key=lambda i: (evr_key(pkgs[i].evr), -i), reverse=True)
        self.rank = {i: r for ids in by_name.values() for r, i in enumerate(ids)}
        self.obsoleted_by: Dict[int, int] = {}
        for name in sorted(n for n, ids in by_name.items() if pkgs[ids[0]].obsoletes):
            newest = by_name[name][0]
            for dep in pkgs[newest].obsoletes:
                for i in by_name.get(dep.name, ()):
                    if pkgs[i].name != name and overlaps(dep.flags, dep.evr, "EQ", pkgs[i].evr):
                        self.obsoleted_by.setdefault(i, newest)

    def whatprovides(self, dep: Dep) -> Tuple[int, ...]:
        found = self._what.get(dep)
        if found is None:
            found = self._what[dep] = self._whatprovides(dep)
        return found

    def candidates(self, dep: Dep) -> Tuple[int, ...]:
        """The providers of `dep` the closure may take (target arch, best repo priority)."""
        found = self._candidates.get(dep)
        if found is None:
            candidate = self.candidate
            found = self._candidates[dep] = tuple(
                i for i in self.whatprovides(dep) if candidate[i])
        return found

    def _whatprovides(self, dep: Dep) -> Tuple[int, ...]:
        flags, evr = dep.flags, dep.evr
        if not flags or evr is None:
            found = [i for _pdep, i in self.provides.get(dep.name, ())]
        else:
            found = [i for pdep, i in self.provides.get(dep.name, ())
                     if overlaps(pdep.flags, pdep.evr, flags, evr)]
        if dep.name.startswith("/"):
            found += self.files.get(dep.name, ())
            if not found and not self.filelists_loaded:
                self._load_filelists()
                return self._whatprovides(dep)
        return tuple(dict.fromkeys(found))

    def _load_filelists(self) -> None:
        """Only now, for a file requirement primary.xml cannot answer, read filelists.xml."""
        self.filelists_loaded = True
        self._what.clear()  # earlier answers for files did not know these
        self._candidates.clear()
        by_pkgid: Dict[str, List[int]] = collections.defaultdict(list)
        for i, p in enumerate(self.pkgs):
            by_pkgid[p.sha256].append(i)
        for repo in self.repos:
            if not hasattr(repo, "files"):
                continue
            for pkgid, paths in repo.files().items():
                for i in by_pkgid.get(pkgid, ()):
                    for path in paths:
                        if i not in self.files[path]:
                            self.files[path].append(i)


_INDEXES: List[Tuple[Tuple[Any, ...], Index]] = []  # the last few, newest first


def index_for(repos: Sequence[Any], arch: str, base: AssumedBase) -> Index:
    """The Index of these repos (the same objects holding the same package tuples), arch and
    base, built now or kept from an earlier resolve."""
    key = (tuple(repos), tuple(r.packages for r in repos), tuple(r.priority for r in repos),
           arch, base)
    for n, (seen, index) in enumerate(_INDEXES):
        if (len(seen[0]) == len(key[0]) and all(a is b for a, b in zip(seen[0], key[0]))
                and all(a is b for a, b in zip(seen[1], key[1])) and seen[2:4] == key[2:4]
                and seen[4] is base):
            _INDEXES.insert(0, _INDEXES.pop(n))
            return index
    index = Index(repos, arch, base)
    _INDEXES.insert(0, (key, index))
    del _INDEXES[2:]
    return index
