"""Errors of the registry client (builder/registry/client.py), one per failure a user can act on.

Every message names the image (canonical reference) and the URL that was tried, so that a
failed pull through a mirror says which mirror and which path were at fault.
"""

from __future__ import annotations

from builder.errors import BuildError, VerificationError

__all__ = [
    "BlobCorrupt",
    "ImageNotFound",
    "ManifestError",
    "PlatformNotFound",
    "PullFailed",
    "RegistryAuthError",
    "RegistryError",
    "RegistryUnreachable",
]


class RegistryError(BuildError):
    """A registry (or the mirror standing in for it) did not give what an image needs."""


class RegistryUnreachable(RegistryError):
    """No usable answer from the registry URL: refused, timed out, TLS failure, 5xx after
    retries."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials (or wants some and none were found)."""


class ImageNotFound(RegistryError):
    """The registry has no such repository, tag or digest."""


class PlatformNotFound(RegistryError):
    """The image exists, but not for the recipe's platform."""


class ManifestError(RegistryError):
    """A manifest is malformed, of an unsupported type, or not what its digest promised."""


class BlobCorrupt(RegistryError, VerificationError):
    """A blob's bytes do not hash to its digest (or its uncompressed layer to its diff ID);
    nothing of it was kept."""


class PullFailed(RegistryError):
    """Several images (or blobs) failed; `errors` holds each one's own error."""

    def __init__(self, errors: list[RegistryError], what: str = "images") -> None:
        lines = [f"{len(errors)} {what} could not be pulled:"]
        lines += [f"  - {e.message}" for e in errors]
        hints = sorted({e.hint for e in errors if e.hint})
        super().__init__("\n".join(lines), "; ".join(hints) or None)
        self.errors = errors
