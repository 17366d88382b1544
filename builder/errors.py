"""The builder's errors: subclasses of the shared root, one per failure domain."""

from installer.format.errors import KubecrateError, UsageError, VerificationError

__all__ = ["BuildError", "KubecrateError", "SigningKeyError", "UsageError", "VerificationError"]


class BuildError(KubecrateError):
    """Something the build needs is wrong or missing (input files, mirrors, cache)."""


class SigningKeyError(BuildError):
    """A signing key file is unreadable, malformed, or its passphrase is wrong."""
