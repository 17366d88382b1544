"""The real dnf on a private root: a dnf.conf and reposdir of their own (never the machine's
repos), gpgcheck=1 everywhere, and the installed packages read back with rpm --root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

Repos = Dict[str, Tuple[str, Sequence[str]]]  # id -> (baseurl, gpgkey URLs)


def write_config(folder: Path, repos: Repos) -> Tuple[Path, Path]:
    """dnf.conf and a reposdir under `folder` holding exactly `repos`; returns both paths."""
    repos_d = folder / "repos.d"
    repos_d.mkdir(parents=True)
    lines: List[str] = []
    for rid, (baseurl, keys) in repos.items():
        lines += [f"[{rid}]", f"name={rid}", f"baseurl={baseurl}", "enabled=1", "gpgcheck=1",
                  "repo_gpgcheck=0", f"gpgkey={' '.join(keys)}", ""]
    (repos_d / "test.repo").write_text("\n".join(lines))
    conf = folder / "dnf.conf"
    conf.write_text("[main]\ngpgcheck=1\nrepo_gpgcheck=0\ninstall_weak_deps=False\n"
                    f"reposdir={repos_d}\ncachedir={folder / 'cache'}\nkeepcache=False\n"
                    "plugins=False\n")
    return conf, repos_d


def dnf(root: Path, conf: Path, repos_d: Path, *args: str, check: bool = True,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """`dnf -y --installroot ROOT ARGS` for an x86_64 EL7 root; raises with dnf's output when
    `check` and it fails."""
    argv = [shutil.which("dnf") or "dnf", "-y", "--installroot", str(root), "--config",
            str(conf), f"--setopt=reposdir={repos_d}", "--releasever=7", "--forcearch=x86_64",
            "--noplugins", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"dnf {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def installed(root: Path) -> Dict[str, List[str]]:
    """name -> every "version-release.arch" installed in `root`."""
    out = subprocess.run([shutil.which("rpm") or "rpm", "--root", str(root), "-qa", "--qf",
                          "%{NAME} %{VERSION}-%{RELEASE}.%{ARCH}\n"],
                         capture_output=True, text=True, check=True).stdout
    found: Dict[str, List[str]] = {}
    for line in out.splitlines():
        name, vra = line.split()
        found.setdefault(name, []).append(vra)
    return found


def repoquery(folder: Path, baseurls: Dict[str, str], platform: str = "el8") -> List[str]:
    """name-[epoch:]version-release.arch of every package real dnf offers from `baseurls` (id ->
    URL) on a host whose platform stream is `platform`: dnf applies module metadata, default
    streams and platform contexts itself (no GPG checks: only the metadata is read)."""
    repos_d = folder / "repos.d"
    repos_d.mkdir(parents=True)
    (repos_d / "query.repo").write_text("".join(
        f"[{rid}]\nname={rid}\nbaseurl={url}\ngpgcheck=0\n" for rid, url in baseurls.items()))
    conf = folder / "dnf.conf"
    conf.write_text(f"[main]\nreposdir={repos_d}\ncachedir={folder / 'cache'}\nplugins=False\n"
                    f"module_platform_id=platform:{platform}\n")
    (folder / "root").mkdir()
    out = subprocess.run(
        [shutil.which("dnf") or "dnf", "-q", "--installroot", str(folder / "root"), "--config",
         str(conf), f"--setopt=reposdir={repos_d}", f"--releasever={platform[2:]}",
         "--forcearch=x86_64", "--noplugins", "repoquery", "--qf", "%{name}-%{evr}.%{arch}"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())
