"""The hosts' real interpreters for the tests that run the .pyz: CPython 3.6 (CentOS 7's
python3 is 3.6.8; EL8's platform-python is 3.6) and 2.7 (a CentOS 7 minimal host has only
that), from pyenv on the machine image. A missing interpreter FAILS the test with how to get
it: the installer's own Python is never silently left untested.

`locale_variants()` are the environments an operator's session gives the installer: an ssh
login or cron without LANG (`env -i`), LANG=C, a Debian workstation's LANG=C.UTF-8, and a
locale the host does not have (as C.UTF-8 on CentOS 7, whose glibc lacks it).
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lab.tools import LabSetupError

PYENV = Path(os.environ.get("PYENV_ROOT") or "~/.pyenv").expanduser() / "versions"
PY36 = Path(os.environ.get("KUBECRATE_PYTHON36") or PYENV / "3.6.15/bin/python3.6")
PY27 = Path(os.environ.get("KUBECRATE_PYTHON27") or PYENV / "2.7.18/bin/python2.7")
# EL9's python3 (BaseOS python3-3.9): the same .pyz runs there
PY39 = Path(os.environ.get("KUBECRATE_PYTHON39") or PYENV / "3.9.18/bin/python3.9")

HOW_TO = ("the machine image carries it under pyenv; elsewhere `pyenv install {version}` "
          "(or set {variable} to such an interpreter)")


def _interpreter(path: Path, want: Tuple[int, int], variable: str) -> Path:
    version = "{}.{}".format(*want)
    if not os.access(str(path), os.X_OK):
        raise LabSetupError("CPython {} is not at {}: the installer is tested on the hosts' real "
                    "Python; {}".format(version, path, HOW_TO.format(
                        version={(3, 6): "3.6.15", (3, 9): "3.9.18"}.get(want, "2.7.18"),
                        variable=variable)))
    probe = subprocess.run([str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    found = probe.stdout.decode("ascii", "replace").strip()
    if found != version:
        raise LabSetupError("{} is Python {!r}, not {} ({})".format(path, found, version, variable))
    return path


def python36() -> Path:
    """CPython 3.6, or the test fails saying how to get it."""
    return _interpreter(PY36, (3, 6), "KUBECRATE_PYTHON36")


def python39() -> Path:
    """CPython 3.9 (EL9's python3), or the test fails saying how to get it."""
    return _interpreter(PY39, (3, 9), "KUBECRATE_PYTHON39")


def python27() -> Path:
    """CPython 2.7, or the test fails saying how to get it."""
    return _interpreter(PY27, (2, 7), "KUBECRATE_PYTHON27")


def python3_dir(folder: Path) -> Path:
    """A folder holding `python3` -> CPython 3.6 only: put it first on PATH and the .pyz's sh
    preamble starts the installer with 3.6, as on a CentOS 7 host."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "python3"
    if not link.exists():
        link.symlink_to(python36())
    return folder


def python3_shim(folder: Path, interpreter: Optional[Path] = None) -> Path:
    """A folder with a host's `python3` for hosts whose tools are stand-ins: CPython 3.6 (or
    `interpreter`, e.g. python39() for an EL9 host) when the .pyz's preamble probes for Python
    or starts the installer (both with -I; each such start is logged in `python36-runs`, with
    the interpreter's path first), the test's own Python for everything else, since the
    stand-ins for host tools (not Python at all on a real host) are `#!/usr/bin/env python3`
    scripts that need 3.7+. The installer passes PATH on to the commands it runs."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python3"
    chosen = interpreter or python36()
    shim.write_text('#!/bin/sh\ncase ${{1:-}} in -I) echo "{} $*" >> {}; exec {} "$@" ;; '
                    'esac\nexec {} "$@"\n'.format(chosen, folder / "python36-runs", chosen,
                                                  sys.executable))
    shim.chmod(0o755)
    return folder


def python36_runs(folder: Path) -> str:
    """What a python3_shim folder's python3 ran on CPython 3.6 (one line of arguments each)."""
    log = folder / "python36-runs"
    return log.read_text() if log.exists() else ""


def operator_variables(env: Dict[str, str], python_dir: Path) -> Dict[str, str]:
    """`env` as an operator's session without a locale has it (no LANG, LC_* or PYTHON*),
    with `python_dir` first on PATH."""
    kept = {k: v for k, v in env.items()
            if k != "LANG" and not k.startswith(("LC_", "PYTHON"))}
    kept["PATH"] = "{}:{}".format(python_dir, env.get("PATH", "/usr/bin:/bin"))
    return kept


def locale_variants() -> List[Tuple[str, Dict[str, str]]]:
    """(test id, locale variables) for every session an operator may start the installer in."""
    return [("env-i", {}), ("LANG=C", {"LANG": "C"}), ("LANG=C.UTF-8", {"LANG": "C.UTF-8"}),
            ("absent-locale", {"LANG": "kc_XX.UTF-8"}), ("LC_ALL=C", {"LC_ALL": "C",
                                                                      "LANG": "C.UTF-8"})]


def operator_env(python_dir: Path, home: Path, **variables: str) -> Dict[str, str]:
    """What `env -i` leaves plus a login's PATH and HOME: no LANG unless given."""
    return {"PATH": "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".format(python_dir),
            "HOME": str(home), **variables}
