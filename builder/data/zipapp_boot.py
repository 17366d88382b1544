"""kubecrate-installer's start-up, run from inside the .pyz (as `_kubecrate_boot`), in place of
shiv's `_bootstrap`: the code that runs is the code the operator checked with minisign.

shiv 1.0.8 extracts site-packages once and then trusts the folder (its `--no-modify` check
covers `*.py` files only, after `.pth` files already ran), and it reads code-injecting variables
at every start: SHIV_PREPEND_PYTHONPATH, SHIV_EXTEND_PYTHONPATH, SHIV_ENTRY_POINT, SHIV_MODULE,
SHIV_CONSOLE_SCRIPT, SHIV_INTERPRETER (shiv/bootstrap/__init__.py `bootstrap`,
shiv/bootstrap/environment.py `Environment`). Here, on every start:

- the extracted folder `<SHIV_ROOT>/<name>_<build_id>/site-packages` must hold exactly the files
  listed in the zip's `kubecrate-site-packages.json` (path -> sha256, written at build time by
  builder/zipapp.py), as regular files that only their owner can write; anything else (an edited
  or added module, a `.pth`, a `__pycache__`, a symlink) is reported and the folder is extracted
  again from the zip under a lock;
- no bytecode is written or read from that folder (`sys.dont_write_bytecode`, and any
  `__pycache__` fails the check): a `.pyc` cannot be checked without compiling its source;
- only SHIV_ROOT is honoured; other SHIV_* variables are reported and removed;
- `__main__.py` has already restarted the interpreter with `-I` when it was not isolated
  (`python3 X.pyz` honours PYTHONPATH, PYTHONHOME, PYTHONINSPECT and the user site).

Python 3.6 and the standard library only.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import site
import stat
import sys
import tempfile
import zipfile

MANIFEST = "kubecrate-site-packages.json"
PREFIX = "site-packages/"
HONOURED = ("SHIV_ROOT",)
EXIT_PRECONDITION = 4  # installer.format.errors.ExitCode.PRECONDITION


class BootError(Exception):
    """The installer cannot start safely; the message says what to do."""


def _say(message):
    sys.stderr.write("kubecrate-installer: {}\n".format(message))


def drop_shiv_variables(environ=os.environ):
    """Remove every SHIV_* variable but SHIV_ROOT; returns their names (sorted)."""
    dropped = sorted(k for k in environ if k.startswith("SHIV_") and k not in HONOURED)
    for name in dropped:
        del environ[name]
    return dropped


def expected_files(archive):
    """{relative path under site-packages: sha256} as signed inside the .pyz."""
    return json.loads(archive.read(MANIFEST).decode("utf-8"))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def differences(site_packages, expected):
    """What differs between the folder and the signed list: [] when they are the same."""
    found = []
    seen = set()
    uid = os.geteuid()
    for folder in (os.path.dirname(site_packages), site_packages):
        if not os.path.isdir(folder) or os.path.islink(folder):
            return ["{}: missing".format(folder)]
        info = os.lstat(folder)
        if info.st_uid != uid or info.st_mode & 0o022:
            return ["{}: writable by another user".format(folder)]
    for folder, dirs, files in os.walk(site_packages):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, site_packages)
            info = os.lstat(path)
            if info.st_uid != uid or info.st_mode & 0o022:
                found.append("{}: writable by another user".format(rel))
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                found.append("{}: not a regular file".format(rel))
            elif rel not in expected:
                found.append("{}: not part of this installer".format(rel))
            elif _sha256(path) != expected[rel]:
                found.append("{}: changed".format(rel))
            seen.add(rel)
    found.extend("{}: missing".format(rel) for rel in sorted(set(expected) - seen))
    return sorted(found)


def _check_root(root):
    """The extraction root must be ours, or another user could swap a checked file before it
    is imported. Group or other write on our own folder (a umask of 002) is taken away: what
    may already have been put inside is caught by the check of the folder's contents."""
    info = os.stat(root)
    if info.st_uid != os.geteuid():
        raise BootError(
            "{} (SHIV_ROOT) belongs to uid {}, not to you (uid {}): another user could change "
            "the installer's code there. Use a folder only you can write, e.g. unset SHIV_ROOT "
            "(root: /var/lib/kubecrate/shiv)".format(root, info.st_uid, os.geteuid()))
    if info.st_mode & 0o022:
        os.chmod(root, stat.S_IMODE(info.st_mode) & ~0o022)


def _extract(archive, expected, target):
    """Extract site-packages into a fresh folder beside `target`, check it, and move it into
    place (the old one, if any, is removed)."""
    parent = os.path.dirname(target)
    fresh = tempfile.mkdtemp(prefix=".new-", dir=parent)
    try:
        for rel in sorted(expected):
            path = os.path.join(fresh, "site-packages", *rel.split("/"))
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "xb") as handle:
                handle.write(archive.read(PREFIX + rel))
            os.chmod(path, 0o644)
        for folder, dirs, _files in os.walk(fresh):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
        problems = differences(os.path.join(fresh, "site-packages"), expected)
        if problems:
            raise BootError("the .pyz does not match its own file list ({}): it is damaged; "
                            "check it with minisign -V".format(problems[0]))
        os.chmod(fresh, 0o755)
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.rename(target, os.path.join(old, "x"))
            os.rename(fresh, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(fresh, target)
    finally:
        if os.path.lexists(fresh):
            shutil.rmtree(fresh, ignore_errors=True)


def activate(archive_path):
    """Make the checked site-packages of the .pyz at `archive_path` importable, extracting it
    again when it differs from what the .pyz lists. Returns its path."""
    sys.dont_write_bytecode = True
    with zipfile.ZipFile(archive_path) as archive:
        environment = json.loads(archive.read("environment.json").decode("utf-8"))
        expected = expected_files(archive)
        root = os.environ.get("SHIV_ROOT") or environment.get("root") or "~/.shiv"
        root = os.path.abspath(os.path.expanduser(root))
        os.makedirs(root, mode=0o755, exist_ok=True)
        _check_root(root)
        name = "{}_{}".format(os.path.basename(os.path.realpath(archive_path)),
                              environment["build_id"])
        target = os.path.join(root, name)
        site_packages = os.path.join(target, "site-packages")
        if differences(site_packages, expected):
            with open(os.path.join(root, "." + name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                problems = differences(site_packages, expected)  # another run may have done it
                if problems:
                    if os.path.lexists(target):
                        shown = "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else "")
                        _say("{} differs from this installer ({}): extracting it again"
                             .format(site_packages, shown))
                    _extract(archive, expected, target)
    length = len(sys.path)
    index = next((i for i, p in enumerate(sys.path)
                  if os.path.basename(p) in ("site-packages", "dist-packages")), length)
    site.addsitedir(site_packages)
    sys.path[:] = sys.path[:index] + sys.path[length:] + sys.path[index:length]
    return site_packages


def main():
    """Check and activate the bundled packages, then run the installer's entry point."""
    dropped = drop_shiv_variables()
    if dropped:
        _say("ignoring {}: this installer runs only its own code".format(", ".join(dropped)))
    try:
        activate(sys.argv[0])
        with zipfile.ZipFile(sys.argv[0]) as archive:
            entry = json.loads(archive.read("environment.json").decode("utf-8"))["entry_point"]
    except BootError as err:
        _say(str(err))
        sys.exit(EXIT_PRECONDITION)
    except OSError as err:
        _say("cannot prepare the installer's packages: {}".format(err))
        sys.exit(EXIT_PRECONDITION if err.errno in (errno.EACCES, errno.EROFS) else 1)
    module, _, function = entry.partition(":")
    __import__(module)
    sys.exit(getattr(sys.modules[module], function)())
