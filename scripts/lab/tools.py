"""The real tools the lab drives, found or refused with how to get them."""

import shutil


class LabSetupError(RuntimeError):
    """This machine lacks something scripts/setup-dev or the machine image provides."""


def require_tool(name: str) -> str:
    """Path of a real tool that scripts/setup-dev installs; raise LabSetupError when it is
    missing, so that a broken setup fails a test (never skips it) instead of passing silently."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise LabSetupError(f"{name} is not installed: run scripts/setup-dev")
    return path
