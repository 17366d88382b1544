"""The installer's error root and exit codes (the README's exit-code table), shared with the
builder.

Core code raises these; the CLI edge catches them once and maps them to an ExitCode.
"""

import enum
from typing import Optional


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    VERIFY_FAILED = 3
    PRECONDITION = 4
    STEP_FAILED = 5
    INTERRUPTED = 130


EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed, "
    "4 precondition (preflight) failed, 5 a step failed, 130 interrupted."
)


class KubecrateError(Exception):
    """Root of every error kubecrate reports to a user: a message, an optional hint."""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        text = "error: " + self.message
        if self.hint:
            text += "\nhint: " + self.hint
        return text


class UsageError(KubecrateError):
    exit_code = ExitCode.USAGE


class VerificationError(KubecrateError):
    """A signature, digest, size or bundle-structure check failed: nothing was trusted."""

    exit_code = ExitCode.VERIFY_FAILED


class PreconditionError(KubecrateError):
    exit_code = ExitCode.PRECONDITION


class StepFailed(KubecrateError):
    exit_code = ExitCode.STEP_FAILED
