"""A bundle split into parts for removable media (builder/bundle/split.py writes them): the
signed index X.tar.parts, and a reader that streams the parts as one file, checking each part's
SHA-256 as it passes its end, so that a damaged part is named at once and nothing is joined on
disk. The bundle's own signature is still checked over the whole stream by bundle.walk()."""

import hashlib
import json
import os
from typing import Any, List, NamedTuple

from installer.format import minisig
from installer.format.errors import VerificationError

PARTS_FORMAT = "kubecrate-parts/1"
PARTS_SUFFIX = ".parts"
MAX_INDEX = 1 << 20
REPAIR = "copy that part again from the build workstation (its SHA-256 is in the index); " \
         "nothing was written"


class PartDamaged(VerificationError):
    """A part's bytes do not match the signed index: the precise cause, reported as such
    (not as the bundle signature failure it also leads to)."""


def part_name(bundle_name: str, number: int) -> str:
    return "{}.part-{:03d}".format(bundle_name, number)


class Part(NamedTuple):
    number: int
    path: str
    size: int
    sha256: str


class PartsIndex(NamedTuple):
    path: str
    bundle: str  # the bundle tar's name
    signature_path: str  # the bundle's own X.tar.minisig, beside the parts
    size: int
    parts: List[Part]


def index_for(location: str) -> str:
    """The index a `--bundle` names: X.tar.parts itself, or the index beside a part."""
    if location.endswith(PARTS_SUFFIX):
        return location
    head, _, number = location.rpartition(".part-")
    if head and number.isdigit():
        return head + PARTS_SUFFIX
    return location


def load_index(path: str, key: minisig.Trust) -> PartsIndex:
    """The index, after its signature (X.tar.parts.minisig) verified; every part present with
    its recorded size, else a VerificationError naming the part."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_INDEX + 1)
    except OSError as err:
        raise VerificationError("cannot read {}: {}".format(path, err.strerror))
    signature = minisig.load_signature(path + ".minisig")
    prehash = minisig.prehash()
    if prehash is None:
        raise VerificationError(
            "{}: a split bundle's index is signed over its BLAKE2b-512, which Python refuses "
            "on this host (FIPS mode)".format(path),
            hint="join the parts (cat X.tar.part-* > X.tar) and install from X.tar; "
                 + minisig.FIPS_HINT)
    prehash.update(raw)
    minisig.verify_digest(key, signature, prehash.digest(), path)
    try:
        document = json.loads(raw.decode("utf-8"))
        if document.get("format") != PARTS_FORMAT:
            raise ValueError("format {!r} is not {}".format(document.get("format"),
                                                            PARTS_FORMAT))
        folder = os.path.dirname(os.path.abspath(path))
        parts = [Part(number, os.path.join(folder, os.path.basename(str(p["name"]))),
                      int(p["size"]), str(p["sha256"]))
                 for number, p in enumerate(document["parts"], 1)]
        index = PartsIndex(path, str(document["bundle"]),
                           os.path.join(folder, os.path.basename(str(document["signature"]))),
                           int(document["size"]), parts)
    except (ValueError, KeyError, TypeError) as err:
        raise VerificationError("{}: not a kubecrate parts index: {}".format(path, err))
    if sum(p.size for p in parts) != index.size:
        raise VerificationError("{}: the parts add up to {} bytes, not the bundle's {}".format(
            path, sum(p.size for p in parts), index.size))
    for part in parts:
        try:
            found = os.path.getsize(part.path)
        except OSError as err:
            raise VerificationError("part {} of {} ({}) cannot be read: {}".format(
                part.number, index.bundle, part.path, err.strerror), hint=REPAIR)
        if found != part.size:
            raise VerificationError("part {} of {} ({}) is {} bytes, the index says {}".format(
                part.number, index.bundle, part.path, found, part.size), hint=REPAIR)
    return index


class PartsReader:
    """read() over the parts in order as one file; a part whose bytes do not hash to the
    index's SHA-256 raises VerificationError naming it as soon as its last byte was read."""

    def __init__(self, index: PartsIndex) -> None:
        self.index = index
        self._number = 0
        self._handle = None  # type: Any
        self._left = 0
        self._digest = hashlib.sha256()
        self._open(0)

    def _open(self, number: int) -> None:
        if self._handle is not None:
            self._handle.close()
        self._number = number
        part = self.index.parts[number]
        self._handle = open(part.path, "rb", buffering=0)
        self._left = part.size
        self._digest = hashlib.sha256()

    def _finish_part(self) -> None:
        part = self.index.parts[self._number]
        if self._digest.hexdigest() != part.sha256:
            raise PartDamaged(
                "part {} of {} ({}) is damaged: its SHA-256 is {}, the signed index says "
                "{}".format(part.number, self.index.bundle, part.path,
                            self._digest.hexdigest(), part.sha256), hint=REPAIR)

    def read(self, size: int = -1) -> bytes:
        while self._left == 0:
            if self._number + 1 >= len(self.index.parts):
                return b""
            self._open(self._number + 1)
        want = self._left if size is None or size < 0 else min(size, self._left)
        block = self._handle.read(want)
        if not block:
            raise PartDamaged("part {} of {} ({}) ended early".format(
                self._number + 1, self.index.bundle, self.index.parts[self._number].path),
                hint=REPAIR)
        self._digest.update(block)
        self._left -= len(block)
        if self._left == 0:
            self._finish_part()
        return block

    def seek(self, offset: int, whence: int = 0) -> int:
        """Only a return to the start (bundle.walk peeks at the first bytes)."""
        if offset != 0 or whence != 0:
            raise OSError("a parts stream seeks only to its start")
        self._open(0)
        return 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "PartsReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

