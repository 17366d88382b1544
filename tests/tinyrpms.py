"""Tiny real RPMs and createrepo_c repositories for tests: a package is a name, an EVR, a few
dependencies and optionally a %{modularitylabel} (what EL8 module builds carry), built with
rpmbuild in well under a second, unsigned unless the test signs it."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
from typing import Dict, List, Optional, Sequence

from lab.tools import require_tool

_EVR = re.compile(r"^(?:(\d+):)?([^-:]+)-([^-:]+)$")


def _run(argv: List[str], cwd: Optional[pathlib.Path] = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=dict(os.environ, LC_ALL="C", TZ="UTC"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def build_rpm(out: pathlib.Path, name: str, evr: str, *, requires: Sequence[str] = (),
              provides: Sequence[str] = (), modularitylabel: str = "") -> pathlib.Path:
    """Build noarch `name-evr` into `out` (created) and return its path."""
    match = _EVR.match(evr)
    assert match, evr
    epoch, version, release = match.groups()
    top = out / ".rpmbuild" / f"{name}-{evr}"
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    lines = [f"Name: {name}", *([f"Epoch: {epoch}"] if epoch else []), f"Version: {version}",
             f"Release: {release}", f"Summary: {name} for kubecrate tests", "License: MIT",
             "BuildArch: noarch", "AutoReqProv: no",
             *(f"Requires: {r}" for r in requires), *(f"Provides: {p}" for p in provides),
             "%description", f"Tiny {name}.", "%files", ""]
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text("\n".join(lines))
    argv = [require_tool("rpmbuild"), "-bb", "--quiet", "--define", f"_topdir {top}",
            "--define", "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm"]
    if modularitylabel:
        argv += ["--define", f"modularitylabel {modularitylabel}"]
    _run(argv + [str(spec)])
    target = out / f"{name}-{version}-{release}.noarch.rpm"
    (top / "RPMS" / target.name).replace(target)
    return target


def createrepo_c_tool(name: str = "createrepo_c") -> str:
    """createrepo_c or modifyrepo_c >= 1.0 (zstd, today's defaults), from the createrepo_c
    wheel of the test extra: Debian's 0.17 cannot write zstd. Fails, never skips, without it."""
    import importlib.util

    import pytest

    spec = importlib.util.find_spec("createrepo_c")
    if spec is None or spec.origin is None:
        pytest.fail("the createrepo_c wheel is not installed: run scripts/setup-dev")
    tool = pathlib.Path(spec.origin).parent / "data" / "bin" / name
    if not os.access(tool, os.X_OK):
        pytest.fail(f"{tool} is missing from the createrepo_c wheel: run scripts/setup-dev")
    return str(tool)


def createrepo(repo: pathlib.Path, *, compress: str = "gz", groupfile: Optional[pathlib.Path]
               = None, modules: Optional[pathlib.Path] = None) -> pathlib.Path:
    """createrepo_c over `repo` with every file in `compress` (gz, xz, bz2, zstd), a comps file
    and a modules.yaml added as createrepo_c and modifyrepo_c publish them."""
    argv = [createrepo_c_tool(), "--quiet", "--checksum=sha256", "--no-database",
            f"--general-compress-type={compress}", "--excludes=.rpmbuild/*"]
    if groupfile is not None:
        argv += ["--groupfile", str(groupfile)]
    _run(argv + [str(repo)])
    if modules is not None:
        _run([createrepo_c_tool("modifyrepo_c"), "--mdtype=modules",
              f"--compress-type={'xz' if compress == 'gz' else compress}", str(modules),
              str(repo / "repodata")])
    return repo


def repomd_hrefs(repo: pathlib.Path) -> Dict[str, str]:
    """type -> location href of every repomd.xml entry."""
    import xml.etree.ElementTree as ET

    ns = "{http://linux.duke.edu/metadata/repo}"
    root = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    return {d.get("type"): d.find(ns + "location").get("href") for d in root.iter(ns + "data")}
