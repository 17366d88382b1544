"""Atomic file replacement: every file the installer writes on a host appears whole or not at
all (STYLE.md rule 8), so a killed run never leaves a half-written config behind."""

import os
import tempfile
from typing import BinaryIO, Callable

from installer.hostfiles import naming_full_disk


def replace_file(target: str, fill: Callable[[BinaryIO], None], mode: int) -> None:
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
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
