"""What rpm-md's primary.xml says about a package, as the builder keeps it: `Package` and its
`Dep` entries (read by builder/rpm/metadata.py), and the error for metadata that is missing,
malformed or does not match its checksum."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from builder.errors import BuildError
from builder.rpm.vercmp import EVR

__all__ = ["Dep", "Package", "RepodataError"]


class RepodataError(BuildError):
    """Repository metadata is missing, malformed, or does not match its checksum."""


class Dep(NamedTuple):
    """One rpm dependency entry: `name`, optionally `flags` (LT GT EQ LE GE) and an EVR;
    `pre` marks Requires(pre) (createrepo writes `pre="1"`)."""

    name: str
    flags: Optional[str] = None
    evr: Optional[EVR] = None
    pre: bool = False

    def __str__(self) -> str:
        if not self.flags or self.evr is None:
            return self.name
        op = {"LT": "<", "GT": ">", "EQ": "=", "LE": "<=", "GE": ">="}[self.flags]
        return f"{self.name} {op} {self.evr}"


class Package(NamedTuple):
    """One package of one repository, as primary.xml describes it.

    `sha256` is both the checksum of the .rpm file and the pkgid that filelists.xml and
    other.xml use; `location` is relative to the repo's baseurl ("Packages/x.rpm"); `files` are
    the "primary" files only (/etc/*, */bin/*, /usr/lib/sendmail); `xml` is the raw bytes of the
    `<package>` element, in the namespaces of primary.xml's root."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    repo: str
    location: str
    sha256: str
    size: int
    provides: Tuple[Dep, ...]
    requires: Tuple[Dep, ...]  # Requires and Requires(pre), in primary's order
    obsoletes: Tuple[Dep, ...]
    conflicts: Tuple[Dep, ...]
    files: Tuple[str, ...]
    sourcerpm: str = ""
    xml: bytes = b""

    @property
    def evr(self) -> EVR:
        return EVR(self.epoch, self.version, self.release)

    @property
    def nevra(self) -> str:
        """name-[epoch:]version-release.arch, as yum and dnf print it (no `0:`)."""
        if self.epoch:
            return f"{self.name}-{self.epoch}:{self.version}-{self.release}.{self.arch}"
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"

    @property
    def requires_pre(self) -> Tuple[Dep, ...]:
        return tuple(dep for dep in self.requires if dep.pre)

    @property
    def pkgid(self) -> str:
        return self.sha256

    def __repr__(self) -> str:
        return f"<Package {self.nevra} from {self.repo}>"
