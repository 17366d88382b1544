"""Preflight: enabled yum repos of the host that point outside the bundle.

An isolated host often keeps the repo files of its installation image (CentOS-Base.repo with
mirrorlist.centos.org, a site's Satellite, EPEL). They do no harm to kubecrate, which runs
yum with `--disablerepo=* --enablerepo=kubecrate` (installer/steps/repo.py) and never edits
them, but every yum run by hand on the host waits on them, and an auditor asks why a host
"without internet" names internet hosts. Preflight names each one (a warning, not a failure).
"""

import configparser
import glob
import os
from typing import List

from installer.steps import Context
from installer.steps.findings import PASS, WARN, Finding
from installer.steps.repo import REPO_FILE

URL_KEYS = ("baseurl", "mirrorlist", "metalink")
LOCAL_SCHEMES = ("file:", "/")


def outside_repos(root_path) -> List[tuple]:
    """(file, repo id, url) of every enabled repo whose URLs are not local files."""
    found = []
    for path in sorted(glob.glob(root_path("/etc/yum.repos.d/*.repo"))):
        if os.path.basename(path) == os.path.basename(REPO_FILE):
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(path)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # yum itself would complain; not this check's business
        for section in parser.sections():
            enabled = parser.get(section, "enabled", fallback="1").strip().lower()
            if enabled in ("0", "false", "no", "off"):
                continue
            for key in URL_KEYS:
                for url in parser.get(section, key, fallback="").split():
                    if url and not url.startswith(LOCAL_SCHEMES):
                        found.append(("/etc/yum.repos.d/" + os.path.basename(path), section,
                                      url))
                        break
                else:
                    continue
                break
    return found


def check_outside_repos(ctx: Context) -> List[Finding]:
    found = outside_repos(ctx.host.path)
    if not found:
        return [Finding(PASS, "yum-repos", "no enabled yum repo points outside the bundle")]
    return [Finding(WARN, "yum-repos", "yum repo {} in {} is enabled and points outside the "
                    "bundle ({}); install uses only the bundle's repo for its own transactions "
                    "and leaves the file alone".format(repo, path, url),
                    "yum-config-manager --disable {} (or enabled=0 in {}) so that yum run by "
                    "hand does not wait on it".format(repo, path))
            for path, repo, url in found]
