"""Does each repo of the preset serve the recipe's EL release?

A preset's repo ids are the same across releases (baseos, appstream, docker-ce-stable), so a
recipe for EL9 can name a preset that only has EL8 repos and still resolve. The host's dnf
would then be handed packages built for another release. The release is read from the dist tags
in primary.xml (`.el8`, `.el8_5`, `module_el8.5.0+...`). A repo whose tagged packages all name
other releases is refused (builder/inputs/lock.py), naming the repo and its primary file.
Untagged repos (pkgs.k8s.io's `150500.1.1` releases) and repos mixing releases are left alone.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional

_DIST = re.compile(r"(?:^|[._+])el(\d+)(?=$|[._+])")


def dist_major(release: str) -> Optional[int]:
    """8 for "2.el8", "1.module_el8.5.0+911+f19012f9" and "4.el8_5"; None when untagged."""
    found = _DIST.search(release)
    return int(found.group(1)) if found else None


def el_release_problems(repos: Iterable, major: int) -> List[str]:
    """One line per repo whose dist-tagged packages are all of other EL releases than `major`,
    naming the repo and its primary file."""
    problems = []
    for repo in repos:
        majors: dict = {}
        for pkg in repo.packages:
            found = dist_major(pkg.release)
            if found is not None:
                majors.setdefault(found, pkg)
        if majors and major not in majors:
            primary = repo.repomd.files["primary"].href
            seen = ", ".join(f"EL{m} ({p.name}-{p.version}-{p.release})"
                             for m, p in sorted(majors.items()))
            problems.append(f"repo {repo.id} ({repo.config.url(primary)}) serves {seen}, "
                            f"no EL{major} package")
    return problems
