"""Atomic file replacement: every file the installer writes on a host appears whole or not at
all, so a killed run never leaves a half-written config behind.

A replaced file keeps its SELinux label. The temporary file is a new inode labelled from its
folder's type (or a type transition), not from the policy's file context of the target
path, and rename(2) keeps the new inode's label: /etc/docker/daemon.json or a file with a
specific type would end up mislabelled, which an enforcing host (or a later `setenforce 1`)
punishes with AVC denials. So the old file's `security.selinux` attribute is copied onto the
new inode before the rename, exactly what `restorecon` would restore for a correctly labelled
host, without needing restorecon's policy (which under --root would be the wrong host's).
"""

import errno
import os
import tempfile
from typing import BinaryIO, Callable, Optional

from installer.hostfiles import naming_full_disk

SELINUX_XATTR = "security.selinux"


def _label_of(path: str) -> Optional[bytes]:
    """The SELinux label of `path`, or None (no such file, no label, no xattr support)."""
    try:
        return os.getxattr(path, SELINUX_XATTR, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def replace_file(target: str, fill: Callable[[BinaryIO], object], mode: int) -> None:
    """Write a new file beside `target` through `fill(handle)`, fsync it, give it `mode` and
    rename it over `target`. The temporary file is created 0600, so a secret is never readable
    by others, and is removed on any failure."""
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                               suffix=".kubecrate-tmp", dir=folder)
    try:
        with naming_full_disk(target, "writing it"), os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        label = _label_of(target)
        if label is not None and label != _label_of(tmp):
            os.setxattr(tmp, SELINUX_XATTR, label, follow_symlinks=False)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
