"""RPM resolution on a generated 12,000-package repodata: kubecrate's pure-Python resolver vs
libsolv (the `solv` wheel), both in-process, on the same primary.xml.gz files.

Each side loads the metadata (our streaming primary parser vs libsolv's `add_rpmmd`), builds its
provides index and computes the closure of the same requests, as `kubecrate lock` will; a second
row times the solve alone on already-loaded metadata. Both closures are checked to be equal.
"""

from __future__ import annotations

import gzip
import random
import time
from pathlib import Path
from typing import List, Tuple

from benchmarks.timing import Result, side_by_side
from builder.rpm.metadata import read_packages
from builder.rpm.resolve import resolve

RUNS = 9  # scripts/bench's default: a run takes seconds; more of them steady the medians

PACKAGES = 12_000
REPOS = ("os", "updates", "extras")
HEADER = ('<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/'
          'metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{n}">\n')


def _entry(name: str, flags: str = "", evr: Tuple[int, str, str] = (0, "", "")) -> str:
    if not flags:
        return f'<rpm:entry name="{name}"/>'
    epoch, ver, rel = evr
    return f'<rpm:entry name="{name}" flags="{flags}" epoch="{epoch}" ver="{ver}" rel="{rel}"/>'


def generate(folder: Path) -> Tuple[List[Path], List[str]]:
    """Three repos of 12,000 packages in all (a DAG of requires on names, sonames, files and
    versioned names; every requirement has one provider name) and 30 requests; cached."""
    paths = [folder / f"{repo}-primary.xml.gz" for repo in REPOS]
    rng = random.Random(4211)
    requests = [f"pkg{n:05d}" for n in rng.sample(range(PACKAGES - 2000, PACKAGES), 30)]
    if all(p.exists() for p in paths):
        return paths, requests
    folder.mkdir(parents=True, exist_ok=True)
    bodies: List[List[str]] = [[] for _ in REPOS]
    for n in range(PACKAGES):
        name = f"pkg{n:05d}"
        versions = 2 if n % 7 == 0 else 1  # some names also in updates, newer
        for v in range(versions):
            evr = (0, f"1.{n % 13}.{v}", f"{v + 1}.el7")
            repo = 1 if v else (2 if n % 11 == 0 else 0)
            provides = [_entry(name, "EQ", evr), _entry(f"{name}(x86-64)", "EQ", evr),
                        _entry(f"lib{name}.so.1()(64bit)")]
            requires = []
            for _ in range(rng.randint(0, 5) if n else 0):
                dep = rng.randrange(max(0, n - 3000), n)
                kind = rng.randrange(4)
                dname = f"pkg{dep:05d}"
                if kind == 0:
                    requires.append(_entry(dname))
                elif kind == 1:
                    requires.append(_entry(f"lib{dname}.so.1()(64bit)"))
                elif kind == 2:
                    requires.append(_entry(f"/usr/bin/{dname}"))
                else:
                    requires.append(_entry(dname, "GE", (0, "1.0", "1")))
            bodies[repo].append(
                f'<package type="rpm"><name>{name}</name><arch>x86_64</arch>'
                f'<version epoch="0" ver="{evr[1]}" rel="{evr[2]}"/>'
                f'<checksum type="sha256" pkgid="YES">{n:032x}{v:032x}</checksum>'
                f"<summary>{name}</summary><size package=\"1000\" installed=\"1\" archive=\"1\"/>"
                f'<location href="Packages/{name}-{evr[1]}-{evr[2]}.x86_64.rpm"/><format>'
                f"<rpm:sourcerpm>{name}.src.rpm</rpm:sourcerpm>"
                f"<rpm:provides>{''.join(provides)}</rpm:provides>"
                + (f"<rpm:requires>{''.join(requires)}</rpm:requires>" if requires else "")
                + f"<file>/usr/bin/{name}</file><file>/etc/{name}.conf</file></format></package>\n")
    for path, body in zip(paths, bodies):
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
            out.write(HEADER.format(n=len(body)))
            out.writelines(body)
            out.write("</metadata>\n")
    return paths, requests


class _Repo:
    def __init__(self, repo_id: str, path: Path):
        self.id, self.priority = repo_id, 99
        with gzip.open(path, "rb") as stream:
            self.packages = read_packages(stream, repo_id)


def ours_load_and_solve(paths: List[Path], requests: List[str]) -> List[str]:
    repos = [_Repo(repo, path) for repo, path in zip(REPOS, paths)]
    return [p.nevra for p in resolve(requests, repos).packages]


class _Libsolv:
    def __init__(self, paths: List[Path]):
        import solv

        self.solv = solv
        self.pool = solv.Pool()
        self.pool.setarch("x86_64")
        for repo_id, path in zip(REPOS, paths):
            handle = solv.xfopen(str(path))
            self.pool.add_repo(repo_id).add_rpmmd(handle, None)
            handle.close()
        self.pool.addfileprovides()
        self.pool.createwhatprovides()

    def solve(self, requests: List[str]) -> List[str]:
        solv = self.solv
        jobs = []
        for text in requests:
            jobs += self.pool.select(text, solv.Selection.SELECTION_NAME).jobs(
                solv.Job.SOLVER_INSTALL)
        solver = self.pool.Solver()
        if solver.solve(jobs):
            raise RuntimeError("libsolv found problems in the generated repodata")
        return sorted(f"{s.name}-{s.evr[2:] if s.evr.startswith('0:') else s.evr}.{s.arch}"
                      for s in solver.transaction().newsolvables())


def run(work: Path, runs: int) -> List[Result]:
    paths, requests = generate(work)
    ours = sorted(ours_load_and_solve(paths, requests))
    theirs = _Libsolv(paths).solve(requests)
    if ours != theirs:
        raise RuntimeError(f"closures differ: {len(ours)} vs {len(theirs)} packages")
    note = f"{PACKAGES} names, {len(requests)} requests, closure of {len(ours)} packages"
    full = side_by_side(runs, lambda: ours_load_and_solve(paths, requests),
                        lambda: _Libsolv(paths).solve(requests), lambda: None)
    repos = [_Repo(repo, path) for repo, path in zip(REPOS, paths)]
    loaded = _Libsolv(paths)
    solve_only = side_by_side(runs, lambda: resolve(requests, repos),
                              lambda: loaded.solve(requests), lambda: None)
    total = sum(len(r.packages) for r in repos)
    return [
        Result(name=f"resolve: load {total}-package primary.xml.gz and solve",
               ours="builder.rpm.metadata.read_packages + builder.rpm.resolve.resolve",
               peer="solv.Pool add_rpmmd + createwhatprovides + Solver.solve",
               ours_seconds=full[0], peer_seconds=full[1], goal=1.5, note=note),
        Result(name="resolve: solve only, metadata loaded",
               ours="builder.rpm.resolve.resolve", peer="solv Solver.solve",
               ours_seconds=solve_only[0], peer_seconds=solve_only[1], goal=4, note=note),
    ]


if __name__ == "__main__":  # quick look without rewriting docs/benchmarks.md
    start = time.perf_counter()
    for result in run(Path(".cache/bench/resolve"), 3):
        print(f"{result.name}: ours {result.ours_seconds}, libsolv {result.peer_seconds}, "
              f"ratio {result.ratio:.1f}x ({result.note})")
    print(f"total {time.perf_counter() - start:.1f} s")
