"""libsolv (the `solv` wheel, Linux only) as the resolver's test oracle, on the same repodata.

Each repo is handed to libsolv as a primary.xml written from the Package records' raw XML,
restricted to the target arch and noarch (our rule: i686 never); the assumed base becomes
libsolv's installed repo. Priorities map to libsolv's (higher wins there, lower in yum).
"""

import gzip
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

HEADER = (b'<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/'
          b'metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="%d">\n')


def write_primary(path: Path, packages: Sequence) -> Path:
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(HEADER % len(packages))
        for package in packages:
            out.write(package.xml + b"\n")
        out.write(b"</metadata>\n")
    return path


def nevra(solvable) -> str:
    evr = solvable.evr
    evr = evr[2:] if evr.startswith("0:") else evr
    return f"{solvable.name}-{evr}.{solvable.arch}"


class Oracle:
    """A libsolv pool over the repos; `solve(requests)` returns the NEVRAs to install."""

    def __init__(self, work: Path, repos: Iterable, installed: Sequence, arch: str = "x86_64"):
        import solv

        self.solv = solv
        self.pool = solv.Pool()
        self.pool.setarch(arch)
        allowed = {arch, "noarch"}
        work.mkdir(parents=True, exist_ok=True)
        for repo in repos:
            path = write_primary(work / f"{repo.id}.xml.gz",
                                 [p for p in repo.packages if p.arch in allowed])
            self._add(repo.id, path, 99 - repo.priority)
        if installed is not None:
            system = self._add("@System", write_primary(work / "system.xml.gz", installed), 0)
            self.pool.installed = system
        self.pool.addfileprovides()
        self.pool.createwhatprovides()

    def _add(self, name: str, path: Path, priority: int):
        repo = self.pool.add_repo(name)
        repo.priority = priority
        handle = self.solv.xfopen(str(path))
        repo.add_rpmmd(handle, None)
        handle.close()
        return repo

    def solve(self, requests: Sequence[str]) -> Tuple[List[str], List[str]]:
        """(NEVRAs libsolv would install, problems)."""
        solv = self.solv
        jobs = []
        flags = (solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_PROVIDES
                 | solv.Selection.SELECTION_CANON | solv.Selection.SELECTION_FILELIST)
        for text in requests:
            selection = self.pool.select(text, flags)
            if selection.isempty():
                return [], [f"no match for {text}"]
            jobs += selection.jobs(solv.Job.SOLVER_INSTALL)
        solver = self.pool.Solver()
        solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
        problems = solver.solve(jobs)
        if problems:
            return [], [str(p) for p in problems]
        transaction = solver.transaction()
        return sorted(nevra(s) for s in transaction.newsolvables()), []
