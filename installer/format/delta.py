"""A delta bundle: the files a newer bundle (the *result*) has and an older one (the *base*)
lacks, and the plan that rebuilds the result from the two (builder/bundle/delta.py writes it).

A delta is an ordinary signed bundle tar, so bundle.walk() checks it like any other: its
signature, then every member against its own bundle.json. What makes it a delta:
- its signature's trusted comment names the base (`delta-base:<base bundle.json sha256>`), so
  a host learns which cache folder it needs before reading a byte of the tar;
- its bundle.json has a `delta` section (below) and its members are
  `delta/bundle.json` and `delta/bundle.minisig`: the result's bundle.json and the result
  tar's own signature, exactly what unpacking the full result bundle would keep in the cache;
  the result files the base lacks, at their own paths; and `delta/<path>.pieces`, the bytes
  of a file that is assembled from pieces (the image archive: new blobs and tar headers from
  the delta, the blobs it shares with the base's archive copied from there).

    delta: {format: 1,
            base: {name, bundle_json_sha256},
            result: {name, bundle_json_sha256, size},     (size: the full result tar's bytes)
            files: [{path, size, mode, sha256, from: delta},
                    {path, size, mode, sha256, from: base, base_path},
                    {path, size, mode, sha256, from: pieces, base_path, pieces,
                     segments: [[delta|base, offset, length], ...]}, ...]}

`files` is the result's whole file list with sizes and SHA-256s; it must equal the result
bundle.json's, whose digest the delta's signed bundle.json names. Every assembled file is
hashed while it is written and refused (exit 3, named) unless it matches, so the result in
the cache is byte for byte the full bundle's, whatever the plan says.

Python 3.6, stdlib only.
"""

import hashlib
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from installer.format.errors import VerificationError
from installer.format.manifest import CHUNK, BundleManifest, FileEntry, check_member_path

DELTA_KEY = "delta"
DELTA_FORMAT = 1
COMMENT_DELTA_BASE = "delta-base"
RESULT_MANIFEST = "delta/bundle.json"
RESULT_SIGNATURE = "delta/bundle.minisig"
PIECES_SUFFIX = ".pieces"
SOURCES = ("delta", "base", "pieces")
MAX_SEGMENTS = 1 << 20


class Segment(NamedTuple):
    source: str  # delta (the .pieces member) | base (the base file)
    offset: int
    length: int


class Planned(NamedTuple):
    path: str
    size: int
    mode: int
    sha256: str
    source: str  # delta | base | pieces
    base_path: str = ""
    pieces: str = ""
    segments: Tuple[Segment, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        data = {"path": self.path, "size": self.size, "mode": self.mode, "sha256": self.sha256,
                "from": self.source}  # type: Dict[str, Any]
        if self.base_path:
            data["base_path"] = self.base_path
        if self.source == "pieces":
            data["pieces"] = self.pieces
            data["segments"] = [list(s) for s in self.segments]
        return data


class DeltaPlan(NamedTuple):
    base_name: str
    base_sha256: str
    result_name: str
    result_sha256: str
    result_size: int  # bytes of the full result tar
    files: Tuple[Planned, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"format": DELTA_FORMAT,
                "base": {"name": self.base_name, "bundle_json_sha256": self.base_sha256},
                "result": {"name": self.result_name, "bundle_json_sha256": self.result_sha256,
                           "size": self.result_size},
                "files": [f.to_json() for f in self.files]}


def pieces_path(path: str) -> str:
    return "delta/{}{}".format(path, PIECES_SUFFIX)


def base_named(fields: Dict[str, str]) -> Optional[str]:
    """The base bundle.json digest a (checked) trusted comment names, or None: not a delta."""
    return fields.get(COMMENT_DELTA_BASE)


def _fail(where: str, what: str) -> "VerificationError":
    return VerificationError("bundle.json: {}: {}".format(where, what))


def _int(item: Dict[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(where + key, "missing or not a number >= 0")
    return value


def _str(item: Dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(where + key, "missing or not a string")
    return value


def read_plan(manifest: BundleManifest) -> Optional[DeltaPlan]:
    """The `delta` section of a delta's bundle.json, checked; None for a full bundle."""
    section = manifest.data.get(DELTA_KEY)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise _fail(DELTA_KEY, "not an object")
    if section.get("format") != DELTA_FORMAT:
        raise VerificationError(
            "bundle.json: delta.format {!r} is not supported (this installer reads {})".format(
                section.get("format"), DELTA_FORMAT),
            hint="use the kubecrate-installer.pyz built together with this delta")
    base, result = section.get("base"), section.get("result")
    if not isinstance(base, dict) or not isinstance(result, dict):
        raise _fail("delta.base/result", "not an object")
    carried = manifest.by_path()
    files = []
    items = section.get("files")
    if not isinstance(items, list):
        raise _fail("delta.files", "not a list")
    for index, item in enumerate(items):
        where = "delta.files[{}].".format(index)
        if not isinstance(item, dict):
            raise _fail(where[:-1], "not an object")
        path = check_member_path(_str(item, "path", where))
        source = _str(item, "from", where)
        if source not in SOURCES:
            raise _fail(where + "from", "{!r} is not one of {}".format(source, ", ".join(SOURCES)))
        planned = Planned(path, _int(item, "size", where), _int(item, "mode", where),
                          _str(item, "sha256", where), source)
        if source in ("base", "pieces"):
            planned = planned._replace(
                base_path=check_member_path(_str(item, "base_path", where)))
        if source == "delta" and path not in carried:
            raise _fail(where + "path", "{} is to come from the delta, which lacks it".format(
                path))
        if source == "pieces":
            pieces = check_member_path(_str(item, "pieces", where))
            if pieces not in carried:
                raise _fail(where + "pieces", "the delta lacks {}".format(pieces))
            planned = planned._replace(pieces=pieces,
                                       segments=_segments(item, where, planned.size))
        files.append(planned)
    return DeltaPlan(_str(base, "name", "delta.base."),
                     _str(base, "bundle_json_sha256", "delta.base."),
                     _str(result, "name", "delta.result."),
                     _str(result, "bundle_json_sha256", "delta.result."),
                     _int(result, "size", "delta.result."), tuple(files))


def _segments(item: Dict[str, Any], where: str, size: int) -> Tuple[Segment, ...]:
    raw = item.get("segments")
    if not isinstance(raw, list) or len(raw) > MAX_SEGMENTS:
        raise _fail(where + "segments", "not a list")
    segments = []
    for number, segment in enumerate(raw):
        if (not isinstance(segment, list) or len(segment) != 3 or segment[0] not in
                ("delta", "base") or not all(isinstance(n, int) and not isinstance(n, bool)
                                             and n >= 0 for n in segment[1:])):
            raise _fail("{}segments[{}]".format(where, number),
                        "not [delta|base, offset, length]")
        segments.append(Segment(segment[0], segment[1], segment[2]))
    if sum(s.length for s in segments) != size:
        raise _fail(where + "segments", "they add up to {} bytes, not the file's {}".format(
            sum(s.length for s in segments), size))
    return tuple(segments)


def check_result(plan: DeltaPlan, result: BundleManifest) -> None:
    """The plan's file list is the result bundle.json's, file for file."""
    planned = {f.path: (f.size, f.sha256) for f in plan.files}
    listed = {f.path: (f.size, f.sha256) for f in result.files}
    if planned != listed:
        differ = sorted(set(planned.items()) ^ set(listed.items()))
        raise VerificationError(
            "the delta's plan and {} disagree on {} file(s), first {}".format(
                RESULT_MANIFEST, len(differ), differ[0][0]))


Wanted = Callable[[str], bool]
OpenFile = Callable[[FileEntry], Any]  # a writable file object for a result file


def assemble(plan: DeltaPlan, delta_dir: str, base_dir: str, base: BundleManifest,
             result: BundleManifest, open_file: OpenFile,
             wanted: Optional[Wanted] = None) -> List[str]:
    """Write every result file (or the `wanted` ones) through `open_file`, from the delta's
    folder and the base's cache folder, each hashed as it is written; returns the paths
    written. Raises VerificationError naming the first file whose bytes are not the signed
    ones, or a base file that is missing or changed."""
    check_result(plan, result)
    expected = result.by_path()
    base_files = base.by_path()
    written = []
    for item in plan.files:
        if wanted is not None and not wanted(item.path):
            continue
        spec = expected[item.path]
        known = base_files.get(item.base_path)
        if item.source != "delta":
            if known is None:
                raise VerificationError(
                    "the delta takes {} from the base's {}, which the base bundle {} does not "
                    "list".format(item.path, item.base_path, plan.base_name))
            if item.source == "base" and (known.size, known.sha256) != (spec.size, spec.sha256):
                raise VerificationError(
                    "the delta takes {} from the base's {}, whose signed size and sha256 are "
                    "not the result's".format(item.path, item.base_path))
        with open_file(spec) as out:
            actual = _write_one(item, out, delta_dir, base_dir, known)
        if actual != spec.sha256:
            raise VerificationError(
                "{} assembled from the delta and its base has sha256 {} but the signed "
                "bundle.json says {}".format(item.path, actual, spec.sha256),
                hint="nothing was put into the cache; build the delta again against the base "
                     "bundle this host has ({})".format(plan.base_sha256))
        written.append(item.path)
    return written


def _write_one(item: Planned, out: Any, delta_dir: str, base_dir: str,
               known: Optional[FileEntry]) -> str:
    """Write one result file into `out`; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()

    def put(block: bytes) -> None:
        digest.update(block)
        out.write(block)

    if item.source == "delta":
        _copy(os.path.join(delta_dir, item.path), 0, item.size, put, item.path)
    elif item.source == "base":
        base_digest = hashlib.sha256()

        def both(block: bytes) -> None:
            base_digest.update(block)
            put(block)

        source = os.path.join(base_dir, item.base_path)
        _copy(source, 0, item.size, both, item.base_path)
        if known is not None and (base_digest.hexdigest() != known.sha256
                                  or os.path.getsize(source) != known.size):
            raise VerificationError(
                "{} in the base bundle's cache folder {} has changed (its first {} bytes have "
                "sha256 {}; its bundle.json says {} bytes, sha256 {})".format(
                    item.base_path, base_dir, item.size, base_digest.hexdigest(), known.size,
                    known.sha256),
                hint="remove that cache folder and unpack the base bundle tar again")
    else:
        pieces = os.path.join(delta_dir, item.pieces)
        source = os.path.join(base_dir, item.base_path)
        for segment in item.segments:
            if segment.source == "delta":
                _copy(pieces, segment.offset, segment.length, put, item.pieces)
            else:
                _copy(source, segment.offset, segment.length, put, item.base_path)
    return digest.hexdigest()


def _copy(path: str, offset: int, length: int, put: Callable[[bytes], None], what: str) -> None:
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise VerificationError("cannot read {} ({}): {}".format(what, path, err.strerror))
    with handle:
        handle.seek(offset)
        left = length
        while left:
            block = handle.read(min(CHUNK, left))
            if not block:
                raise VerificationError("{} ({}) ends before byte {}, which the delta "
                                        "needs".format(what, path, offset + length))
            put(block)
            left -= len(block)
