"""What the operator hands the installer and where it writes, checked so that an OS error
becomes a message naming the file and saying what to do: a bundle that is
a FIFO or a folder ("Illegal seek"), a full disk ("No space left on device" without a path).
"""

import contextlib
import errno
import os
import stat
from typing import Iterator

from installer.format.errors import KubecrateError, UsageError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class DiskFull(KubecrateError):
    """The file system ran out of space (or quota) while the installer wrote to it."""


def require_regular_file(path: str, what: str = "bundle") -> None:
    """UsageError unless `path` is a regular file (following links): a pipe or a device
    cannot serve the bundle (its start is read twice to tell gzip from tar)."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise UsageError("{} {} cannot be read: {}".format(what, path, err.strerror),
                         hint="check the path" if err.errno == errno.ENOENT else None)
    if stat.S_ISREG(info.st_mode):
        return
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
    raise UsageError("{} {} is {}, not a regular file".format(what, path, kind),
                     hint="copy it to a regular file and pass that, or pass the {}'s cache "
                          "folder".format(what))


@contextlib.contextmanager
def naming_full_disk(path: str, doing: str) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT inside the block into DiskFull naming `path` (the file or folder
    being written) and the space left on its file system."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull("no space left on the file system holding {} while {}{}".format(
            path, doing, _free(path)),
            hint="free space there (or give the cache a bigger disk) and re-run; what was "
                 "half-written has been removed") from err


def _free(path: str) -> str:
    folder = path
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        fs = os.statvfs(folder)
    except OSError:
        return ""
    return " ({} MiB free)".format(fs.f_bavail * fs.f_frsize // (1 << 20))
