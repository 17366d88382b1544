"""Write a delta bundle: what a new bundle (the result) has that an older one (the base) lacks.

    report = write_delta(result_tar, base_tar, key, out_dir)

Both tars are verified with the signing key first. Every result file whose SHA-256 some base
file has is taken from the base on the host (by path); the image archive is split into the
bytes the base archive lacks (tar headers, the metadata, new blobs: `delta/<path>.pieces`) and
segments copied from the base's archive (the blobs both share), so a changed image costs its
new blobs, not the archive; every other file is carried whole. The delta also carries the
result's bundle.json and the result tar's signature (`delta/bundle.json`,
`delta/bundle.minisig`), so the assembled cache folder is the one unpacking the full result
gives. Before anything is packed, every pieces plan is replayed here against the base's bytes
and must reproduce the result file byte for byte. The format: installer/format/delta.py.

The delta is gzip-compressed: besides new blobs and RPMs (already compressed) it holds JSON
(bundle.json, the SBOM) and tar headers, which compress well.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Dict, List, NamedTuple, Optional, Sequence, Tuple, cast

from builder.bundle.keys import SecretKey
from builder.bundle.pack import pack
from builder.errors import BuildError
from installer.format import bundle as bundlemod
from installer.format import delta as deltamod
from installer.format import minisig
from installer.format.bundleinfo import read_sections
from installer.format.manifest import BundleManifest

__all__ = ["DeltaReport", "check_base", "delta_name", "write_delta"]

CHUNK = 1 << 20


class DeltaReport(NamedTuple):
    path: Path
    signature: Path
    size: int  # bytes of the delta tar
    result_size: int  # bytes of the full result tar
    base_name: str
    base_sha256: str
    carried: int  # result files carried whole
    pieced: int  # result files assembled from pieces
    reused: int  # result files taken whole from the base

    @property
    def saved(self) -> int:
        return self.result_size - self.size


def delta_name(result_name: str, base_sha256: str) -> str:
    """`<result>.delta-<12 hex of the base's bundle.json digest>`: a delta names its base."""
    return f"{result_name}.delta-{base_sha256[:12]}"


class _Bundle(NamedTuple):
    path: Path
    checked: bundlemod.Bundle
    signature_text: str

    @property
    def manifest(self) -> BundleManifest:
        return self.checked.manifest


def _verified(path: Path, trust: minisig.Trust, what: str) -> _Bundle:
    signature = bundlemod.signature_path_for(str(path))
    checked = bundlemod.verify(str(path), trust)
    if deltamod.read_plan(checked.manifest) is not None:
        raise BuildError(f"the {what} {path} is itself a delta",
                         hint="give the full bundle the hosts have unpacked")
    return _Bundle(path, checked, Path(signature).read_text(encoding="utf-8"))


def _base_trust(key: SecretKey, base_keys: Sequence[SecretKey]) -> minisig.Keyring:
    return minisig.Keyring(tuple(minisig.TrustedKey(k.public_key) for k in (key, *base_keys)))


def check_base(base_tar: Path, key: SecretKey, base_keys: Sequence[SecretKey] = ()) -> None:
    """What needs no byte of the base tar, before a build spends its time: its signature is
    by `key` (or one of `base_keys`) and its trusted comment names its bundle.json."""
    signature = minisig.load_signature(bundlemod.signature_path_for(str(base_tar)))
    minisig.check_comment(_base_trust(key, base_keys), signature, str(base_tar))
    if deltamod.base_named(signature.comment_fields()):
        raise BuildError(f"the base bundle {base_tar} is itself a delta",
                         hint="give the full bundle the hosts have unpacked")


def _members(tar: tarfile.TarFile) -> Dict[str, tarfile.TarInfo]:
    return {info.name: info for info in tar.getmembers() if info.isfile()}


def write_delta(result_tar: Path, base_tar: Path, key: SecretKey, out_dir: Path,
                created: Optional[int] = None, base_keys: Sequence[SecretKey] = ()
                ) -> DeltaReport:
    """Write `<out_dir>/<delta_name>.tar` (+ .minisig) taking `result_tar` from `base_tar`;
    `key` signs the delta and must have signed the result, the base may be signed by it or by
    one of `base_keys` (the key a rotation retires)."""
    result = _verified(result_tar, key.public_key, "bundle")
    base = _verified(base_tar, _base_trust(key, base_keys), "base bundle")
    base_sha = base.checked.manifest_sha256
    clash = [e.path for e in result.manifest.files if e.path.split("/", 1)[0] == "delta"]
    if clash:
        raise BuildError(f"{result_tar}: {clash[0]} is under delta/, which a delta bundle "
                         "keeps for itself")
    by_sha: Dict[str, str] = {}
    for entry in base.manifest.files:
        by_sha.setdefault(entry.sha256, entry.path)
    base_paths = base.manifest.by_path()
    result_archive = read_sections(result.manifest.data).image_archive
    base_archive = read_sections(base.manifest.data).image_archive

    work = Path(tempfile.mkdtemp(prefix=".kubecrate-delta-", dir=out_dir))
    try:
        tree = work / "tree"
        tree.mkdir()
        planned: List[deltamod.Planned] = []
        counts = {"delta": 0, "pieces": 0, "base": 0}
        with tarfile.open(result_tar, "r:*") as new_tar, \
                tarfile.open(base_tar, "r:*") as old_tar:
            new_members, old_members = _members(new_tar), _members(old_tar)
            for entry in result.manifest.files:
                item = deltamod.Planned(entry.path, entry.size, entry.mode, entry.sha256, "delta")
                same = base_paths.get(entry.path)
                if same is not None and same.sha256 == entry.sha256:
                    item = item._replace(source="base", base_path=entry.path)
                elif entry.sha256 in by_sha:
                    item = item._replace(source="base", base_path=by_sha[entry.sha256])
                elif entry.path == result_archive and base_archive in base_paths:
                    segments = _pieces(new_tar, new_members[entry.path], old_tar,
                                       old_members[base_archive], tree, entry.path,
                                       entry.sha256)
                    if segments is not None:
                        item = item._replace(source="pieces", base_path=base_archive,
                                             pieces=deltamod.pieces_path(entry.path),
                                             segments=segments)
                if item.source == "delta":
                    _extract(new_tar, new_members[entry.path], tree / entry.path)
                    (tree / entry.path).chmod(entry.mode)
                counts[item.source] += 1
                planned.append(item)
        (tree / deltamod.RESULT_MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (tree / deltamod.RESULT_MANIFEST).write_bytes(result.checked.manifest_raw)
        (tree / deltamod.RESULT_SIGNATURE).write_text(result.signature_text, encoding="utf-8")
        plan = deltamod.DeltaPlan(base.manifest.name, base_sha, result.manifest.name,
                                  result.checked.manifest_sha256, result_tar.stat().st_size,
                                  tuple(planned))
        name = delta_name(result.manifest.name, base_sha)
        packed = pack(tree, work / f"{name}.tar", key, name=name, compress="gzip",
                      metadata={deltamod.DELTA_KEY: plan.to_json()},
                      created=result.manifest.created if created is None else created,
                      comment_fields={deltamod.COMMENT_DELTA_BASE: base_sha})
        final = out_dir / packed.path.name
        final_sig = out_dir / packed.signature_path.name
        os.replace(packed.path, final)  # the work folder is inside out_dir: plain renames
        os.replace(packed.signature_path, final_sig)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DeltaReport(final, final_sig, packed.size, plan.result_size, base.manifest.name,
                       base_sha, counts["delta"], counts["pieces"], counts["base"])


def _extract(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(info)
    if source is None:  # pragma: no cover - only regular files are asked for
        raise BuildError(f"{info.name} is not a regular file")
    with source, open(target, "xb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def _pieces(new_tar: tarfile.TarFile, new_info: tarfile.TarInfo, old_tar: tarfile.TarFile,
            old_info: tarfile.TarInfo, tree: Path, path: str, sha256: str
            ) -> Optional[Tuple[deltamod.Segment, ...]]:
    """The segments rebuilding the result's image archive from new bytes (written to
    `tree`/delta/<path>.pieces) and the blobs the base archive shares; None when nothing is
    shared. Replayed against the base's bytes before it is returned."""
    new_file = cast(IO[bytes], new_tar.extractfile(new_info))
    old_file = cast(IO[bytes], old_tar.extractfile(old_info))
    try:
        with tarfile.open(fileobj=old_file, mode="r:") as old_archive:
            shared = {info.name: info for info in old_archive.getmembers()
                      if info.isfile() and info.name.startswith("blobs/")}
        with tarfile.open(fileobj=new_file, mode="r:") as new_archive:
            reuse = [info for info in new_archive.getmembers()
                     if info.isfile() and info.name in shared
                     and shared[info.name].size == info.size and info.size > 0]
    except tarfile.TarError:
        return None  # not an image archive (a bundle packed by hand): carried whole
    if not reuse:
        return None
    segments: List[deltamod.Segment] = []
    literal = tree / deltamod.pieces_path(path)
    literal.parent.mkdir(parents=True, exist_ok=True)
    position = 0  # in the new archive
    written = 0  # into the literal file
    with open(literal, "xb") as out:
        def take(upto: int) -> None:
            nonlocal position, written
            if upto > position:
                new_file.seek(position)
                _copy(new_file, upto - position, out)
                segments.append(deltamod.Segment("delta", written, upto - position))
                written += upto - position
                position = upto

        for info in sorted(reuse, key=lambda i: i.offset_data):
            take(info.offset_data)
            segments.append(deltamod.Segment("base", shared[info.name].offset_data, info.size))
            position += info.size
        take(new_info.size)
    _replay(segments, literal, old_file, new_info.size, sha256, path)
    return tuple(segments)


def _copy(source: IO[bytes], length: int, out: IO[bytes]) -> None:
    while length:
        block = source.read(min(CHUNK, length))
        if not block:
            raise BuildError("a bundle member ended early while the delta was written")
        out.write(block)
        length -= len(block)


def _replay(segments: List[deltamod.Segment], literal: Path, base: IO[bytes], size: int,
            sha256: str, path: str) -> None:
    digest = hashlib.sha256()
    with open(literal, "rb") as pieces:
        for segment in segments:
            source = pieces if segment.source == "delta" else base
            source.seek(segment.offset)
            left = segment.length
            while left:
                block = source.read(min(CHUNK, left))
                if not block:
                    raise BuildError(f"{path}: a delta segment reads past its source's end")
                digest.update(block)
                left -= len(block)
    if sum(s.length for s in segments) != size or digest.hexdigest() != sha256:
        raise BuildError(f"{path}: the delta's pieces do not rebuild the bundle's file "
                         f"(sha256 {digest.hexdigest()}, expected {sha256})",
                         hint="this is a kubecrate bug; build without --base")
