"""The package data of the mirror world's yum repositories (yum_packages.yaml for CentOS 7.9 and
Docker CE, yum_el8.yaml for the EL8/EL9 slice): `load()` reads it into Packages and refuses
what the repositories built from it (scripts/mirrorworld/yum.py) could not honestly serve.
"""

from __future__ import annotations

import pathlib
import re
from typing import NamedTuple

import yaml

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE / "yum_packages.yaml"
EL8 = HERE / "yum_el8.yaml"
COMPRESS = ("gz", "zstd")
PKG_KEYS = {"name", "evr", "arch", "repo", "requires", "requires_pre", "requires_post",
            "provides", "obsoletes", "conflicts", "files", "dirs", "module"}
DEP_LISTS = ("requires", "requires_pre", "requires_post", "provides", "obsoletes", "conflicts")
# Everything that reaches a spec file: no '%' (macros), no newlines, no shell metacharacters.
SAFE = re.compile(r"^[A-Za-z0-9_.+:/()<>=~@ -]+$")
EVR = re.compile(r"^(?:(\d+):)?([^-:\s]+)-([^-:\s]+)$")


class YumWorldError(RuntimeError):
    """The package data is invalid or a tool failed; the message says which and why."""


class Package(NamedTuple):
    name: str
    epoch: int
    version: str
    release: str
    arch: str
    repo: str
    deps: dict  # DEP_LISTS key -> tuple of rpm dependency strings
    files: tuple
    dirs: tuple
    module: str = ""  # "name:stream" of a modular package

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.epoch}:{self.version}-{self.release}.{self.arch}"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"


def load(path: pathlib.Path = DATA) -> dict:
    """Read and check the package data: unknown keys, bad EVRs, unsafe strings, paths owned by
    two packages, i686 packages outside /usr/lib, and dependencies nothing provides are errors."""
    raw = yaml.safe_load(path.read_text())
    packages = []
    for i, entry in enumerate(raw["packages"]):
        where = f"{path.name}: packages[{i}] ({entry.get('name', '?')})"
        unknown = set(entry) - PKG_KEYS
        if unknown:
            raise YumWorldError(f"{where}: unknown key(s) {sorted(unknown)}")
        match = EVR.match(str(entry.get("evr", "")))
        if not match or "name" not in entry:
            raise YumWorldError(f"{where}: needs name and evr as [epoch:]version-release")
        repo = entry.get("repo", "base")
        if repo not in raw["repos"]:
            raise YumWorldError(f"{where}: unknown repo {repo!r}")
        deps = {k: tuple(str(d) for d in entry.get(k) or ()) for k in DEP_LISTS}
        module = str(entry.get("module", ""))
        if module:
            mname, _, mstream = module.partition(":")
            if mstream not in ((raw.get("modules") or {}).get(mname) or {}).get("streams", {}):
                raise YumWorldError(f"{where}: module {module!r} is not under `modules`")
            if not raw["repos"][repo].get("modules"):
                raise YumWorldError(f"{where}: modular, but repo {repo!r} publishes no modules")
        pkg = Package(entry["name"], int(match.group(1) or 0), match.group(2), match.group(3),
                      entry.get("arch", "x86_64"), repo, deps,
                      tuple(entry.get("files") or ()), tuple(entry.get("dirs") or ()), module)
        strings = [pkg.name, pkg.version, pkg.release, *pkg.files, *pkg.dirs]
        strings += [d for ds in deps.values() for d in ds]
        bad = [s for s in strings if not SAFE.match(s)]
        if bad or pkg.arch not in ("x86_64", "i686", "noarch", "aarch64"):
            raise YumWorldError(f"{where}: unsafe value(s) {bad or [pkg.arch]}")
        packages.append(pkg)
    packages += _aarch64_builds(raw["repos"], packages, path.name)
    _check(packages)
    names = {pkg.name for pkg in packages}
    missing = [n for g in raw["comps"]["groups"].values()
               for kind in ("mandatory", "default", "optional") for n in g.get(kind, ())
               if n not in names]
    if missing:
        raise YumWorldError(f"{path.name}: comps names packages that do not exist: {missing}")
    bad_compress = [r for r, v in raw["repos"].items() if v.get("compress", "gz") not in COMPRESS]
    if bad_compress:
        raise YumWorldError(f"{path.name}: repos {bad_compress}: compress is one of {COMPRESS}")
    return {"keys": raw["keys"], "repos": raw["repos"], "comps": raw["comps"],
            "modules": raw.get("modules") or {}, "packages": packages}


def _aarch64_builds(repos: dict, packages: list, where: str) -> list:
    """aarch64 builds a repo's `aarch64` key asks for: `twin` (this repo is the aarch64 tree
    of another: its x86_64 packages rebuilt for aarch64, its noarch ones as they are, as
    Rocky's and Docker's aarch64 trees carry the same noarch RPMs) or `also` (a multi-arch repo
    like pkgs.k8s.io's: every x86_64 package of it also built for aarch64 beside it)."""
    out = []
    for rid, repo in repos.items():
        spec = repo.get("aarch64")
        if spec is None:
            continue
        source = repo.get("twin") if spec == "twin" else rid
        if spec not in ("twin", "also") or source not in repos:
            raise YumWorldError(f"{where}: repos.{rid}: aarch64 is `twin` (with `twin: REPO`) "
                                "or `also`")
        for pkg in packages:
            if pkg.repo == source and pkg.arch == "x86_64":
                out.append(pkg._replace(arch="aarch64", repo=rid))
            elif pkg.repo == source and pkg.arch == "noarch" and spec == "twin":
                out.append(pkg._replace(repo=rid))
    return out


def _check(packages: list) -> None:
    owners: dict = {}
    provided = set()
    problems = []
    seen = set()
    for pkg in packages:
        if (pkg.nevra, pkg.repo) in seen:
            problems.append(f"{pkg.nevra} is listed twice")
        seen.add((pkg.nevra, pkg.repo))
        provided.add(pkg.name)
        provided.update(p.split()[0] for p in pkg.deps["provides"])
        provided.update(pkg.files)
        if pkg.arch == "x86_64":
            provided.add(f"{pkg.name}(x86-64)")
        # an aarch64 host never installs x86_64 packages: its own owners
        family = "aarch64" if pkg.arch == "aarch64" else "x86"
        for path in pkg.files:
            owner = owners.setdefault((path, family), (pkg.name, pkg.arch))
            if owner != (pkg.name, pkg.arch):
                problems.append(f"{path} owned by {owner} and {pkg.name}.{pkg.arch}")
            # Multilib: an i686 library beside its x86_64 twin must not share a single path.
            if pkg.arch == "i686" and not path.startswith("/usr/lib/"):
                problems.append(f"{pkg.nevra} owns {path} outside /usr/lib")
    for pkg in packages:
        for kind in ("requires", "requires_pre", "requires_post"):
            problems += [f"{pkg.nevra}: nothing provides {d}" for d in pkg.deps[kind]
                         if d.split()[0] not in provided]
    if problems:
        raise YumWorldError("package data: " + "; ".join(problems))
