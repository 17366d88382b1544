"""A UTF-8 locale for the installer on Python 3.6, whatever locale the operator's session has.

click 8.0.4, the last release for Python 3.6, refuses to run when the preferred encoding is
ASCII ("Click will abort further execution because Python was configured to use ASCII ...":
click/_unicodefun.py `_verify_python_env`, called first thing in `BaseCommand.main` in
click/core.py). Python 3.6 reports ASCII whenever LC_ALL / LC_CTYPE / LANG name the C locale,
nothing at all (ssh without LANG, cron, kickstart %post), or a locale glibc does not have (a
Debian workstation forwards LANG=C.UTF-8; CentOS 7's glibc has no C.UTF-8). Python 3.7 and
later coerce such a locale to UTF-8 themselves (PEP 538), so only 3.6 hosts meet this.

`ensure_utf8()` switches LC_CTYPE, of this process and of every command it runs, to a UTF-8
locale that this host really has (`setlocale` succeeding is the test, as glibc decides), so that
click's check passes and text read from files and commands decodes as UTF-8. A host with no
UTF-8 locale at all still runs: click's check is then skipped (click itself writes to ASCII
terminals with replacement characters).
"""

import codecs
import locale
import os
import subprocess
from typing import Callable, Iterable, List, MutableMapping, Optional

# Tried first, without running `locale -a`: C.UTF-8 keeps the C locale's messages (Debian,
# EL8+, glibc >= 2.35); en_US.utf8 is in CentOS 7's glibc-common locale archive.
PREFERRED = ("C.UTF-8", "C.utf8", "en_US.UTF-8", "en_US.utf8")


def _is_ascii(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return True


def preferred_is_ascii() -> bool:
    """What click 8.0.4 checks: the preferred encoding under the environment's locale."""
    try:
        return _is_ascii(locale.getpreferredencoding())
    except Exception:  # click treats any failure here as ASCII too
        return True


def installed_utf8_locales(run: Callable[..., "subprocess.CompletedProcess"] = subprocess.run
                           ) -> List[str]:
    """The UTF-8 locales `locale -a` lists (none when the command is missing or fails)."""
    try:
        listed = run(["locale", "-a"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    names = [line.strip() for line in listed.decode("ascii", "replace").splitlines()]
    return sorted(n for n in names if n.lower().endswith((".utf-8", ".utf8")))


def ensure_utf8(environ: Optional[MutableMapping[str, str]] = None,
                candidates: Optional[Iterable[str]] = None) -> Optional[str]:
    """When the preferred encoding is ASCII, set LC_CTYPE (LC_ALL when the operator set
    that, since it overrides LC_CTYPE) to the first candidate locale glibc can load, in this
    process and in `environ` (os.environ: what commands run from here inherit). Returns the
    locale chosen, or None when nothing needed changing or no UTF-8 locale exists."""
    if not preferred_is_ascii():
        return None
    environ = os.environ if environ is None else environ
    variable = "LC_ALL" if environ.get("LC_ALL") else "LC_CTYPE"
    tried = set()
    for group in ((PREFERRED if candidates is None else tuple(candidates)),
                  installed_utf8_locales() if candidates is None else ()):
        for name in group:
            if name in tried:
                continue
            tried.add(name)
            try:
                locale.setlocale(locale.LC_CTYPE, name)
            except locale.Error:
                continue  # not on this host: glibc cannot load it
            environ[variable] = name
            if not preferred_is_ascii():
                return name
    return None


def allow_ascii_click() -> None:
    """The last resort on a host without any UTF-8 locale: skip click's ASCII refusal, which
    click.core imports by name from click._unicodefun (click 8.0.x)."""
    import click.core

    if hasattr(click.core, "_verify_python_env"):
        setattr(click.core, "_verify_python_env", lambda: None)  # noqa: B010 (private, 8.0.x only)
