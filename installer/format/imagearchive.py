"""Read the bundle's image archive and stream out the subset of images a node needs.

The archive (written by builder/registry/image_archive.py) is one tar: `oci-layout`,
`index.json` (for
`ctr images import`), `manifest.json` (for `docker load`), then `blobs/sha256/<hex>`.
`docker load` copies its whole input under /var/lib/docker/tmp before loading, so the installer
pipes it only the images a role needs: `write_subset()` streams a smaller archive of the same
shape straight from the bundle file to a writable object (a pipe), with no temporary copy.

Python 3.6, stdlib only; tar parsing goes through installer.format.tarstream, which trusts nothing.
"""

import difflib
import hashlib
import json
import os
import re
import tarfile
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

from installer.format.errors import VerificationError
from installer.format.manifest import VerifiedReader
from installer.format.tarstream import BLOCK, TarReader

LAYOUT_NAME = "oci-layout"
INDEX_NAME = "index.json"
DOCKER_MANIFEST_NAME = "manifest.json"
BLOB_DIR = "blobs/sha256"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
METADATA = (LAYOUT_NAME, INDEX_NAME, DOCKER_MANIFEST_NAME)
MAX_METADATA = 16 << 20
CHUNK = 1 << 20
_BLOB = re.compile(r"\Ablobs/sha256/([0-9a-f]{64})\Z")


class ImageArchiveError(VerificationError):
    """The image archive is malformed, or lacks an image or blob that was asked for."""


class ArchivedImage(NamedTuple):
    reference: str  # full: registry.k8s.io/pause:3.6
    image_id: str  # sha256:<config digest>, what `docker images --no-trunc` shows
    manifest_digest: str  # what containerd records as the image's target
    platform: str  # os/arch[/variant], from index.json
    blobs: Tuple[str, ...]  # hex digests: manifest, config, layers


def dump_json(value: Any) -> bytes:
    """Compact JSON with keys in the order given: archive metadata, byte for byte stable."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class _Metadata(NamedTuple):
    layout: bytes
    oci_index: Dict[str, Any]  # index.json
    docker: List[Dict[str, Any]]
    images: List[ArchivedImage]  # in index.json order


def list_images(path: str) -> List[ArchivedImage]:
    """Every image in the archive at `path`, in index.json order."""
    return _read_metadata(path).images


def write_subset(path: str, references: Iterable[str], out: BinaryIO,
                 mtime: int = 0, sha256: Optional[str] = None) -> List[ArchivedImage]:
    """Stream to `out` a tar of the same shape holding only `references` (each blob once,
    checked against its digest) and return those images. Raises ImageArchiveError, naming
    the reference or blob, when the archive lacks one; `out` then holds a partial tar. With
    `sha256` (the archive's signed digest) the whole archive is hashed while it streams and
    a mismatch raises VerificationError before the tar's end marker is written, so the reader
    (docker load) gets a truncated tar and loads nothing."""
    meta = _read_metadata(path)
    wanted = _select(meta.images, references)
    names = {image.reference for image in wanted}
    needed = _needed(wanted)
    index = dict(meta.oci_index)
    index["manifests"] = [d for d in meta.oci_index.get("manifests", []) if _name(d) in names]
    docker = [dict(item, RepoTags=[t for t in item.get("RepoTags") or [] if t in names])
              for item in meta.docker
              if set(item.get("RepoTags") or []) & names]
    for name, data in ((LAYOUT_NAME, meta.layout), (INDEX_NAME, dump_json(index)),
                       (DOCKER_MANIFEST_NAME, dump_json(docker))):
        _write_member(out, name, data, mtime)
    for folder in ("blobs", BLOB_DIR):
        out.write(_header(folder, 0, 0o755, mtime, tarfile.DIRTYPE))
    for hexd, size, blocks in stream_blobs(path, needed, sha256):
        out.write(_header(BLOB_DIR + "/" + hexd, size, 0o644, mtime))
        for block in blocks:
            out.write(block)
        out.write(b"\0" * (-size % BLOCK))
    out.write(b"\0" * (2 * BLOCK))
    return wanted


def stream_blobs(path: str, needed: Dict[str, str], sha256: Optional[str] = None
                 ) -> Iterator[Tuple[str, int, Iterator[bytes]]]:
    """The blobs of `needed` (hex digest -> the reference that needs it) in archive order, each
    as (hex digest, size, its data in chunks). Consume each blob's chunks to the end: the last
    step checks the data against its digest and raises ImageArchiveError when it differs.
    After the last blob, with `sha256` (the archive's signed digest) the whole archive is
    checked (VerificationError), and a blob of `needed` the archive lacks raises
    ImageArchiveError naming it and its image."""
    written: Set[str] = set()
    with open(path, "rb") as raw:
        verified = VerifiedReader(raw, sha256, os.path.basename(path), path) if sha256 else None
        reader = TarReader(verified or raw)
        seen: Set[str] = set()
        for entry in reader.entries():
            _check_member(path, entry.name, entry.kind)
            if entry.name in seen:
                raise ImageArchiveError("{}: {} appears twice".format(path, entry.name))
            seen.add(entry.name)
            match = _BLOB.match(entry.name)
            if entry.kind != "file" or not match or match.group(1) not in needed:
                continue
            yield match.group(1), entry.size, _checked(path, match.group(1),
                                                       reader.read_data(CHUNK))
            written.add(match.group(1))
        if verified is not None:
            verified.check()
    missing = sorted(set(needed) - written)
    if missing:
        raise ImageArchiveError("{}: blob sha256:{} of {} is missing".format(
            path, missing[0], needed[missing[0]]))


def _checked(path: str, hexd: str, blocks: Iterator[bytes]) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
        yield block
    if digest.hexdigest() != hexd:
        raise ImageArchiveError(
            "{}: blob sha256:{} is corrupt (it hashes to sha256:{})".format(
                path, hexd, digest.hexdigest()),
            hint="unpack the bundle again from its signed file")


def select(path: str, references: Optional[Iterable[str]] = None
           ) -> Tuple[List[ArchivedImage], Dict[str, str]]:
    """The archive's images named by `references` (all of them with None), sorted by
    reference, and the blobs they need (hex digest -> the first reference needing it)."""
    images = _read_metadata(path).images
    wanted = _select(images, [i.reference for i in images] if references is None
                     else references)
    return wanted, _needed(wanted)


def _needed(images: List[ArchivedImage]) -> Dict[str, str]:
    """hex digest -> the first of `images` that needs the blob."""
    needed: Dict[str, str] = {}
    for image in images:
        for hexd in image.blobs:
            needed.setdefault(hexd, image.reference)
    return needed


# --------------------------------------------------------------------------- metadata


def _read_metadata(path: str) -> _Metadata:
    """Read oci-layout, index.json and manifest.json; stop as soon as all three are seen
    (the archive writer puts them first), and check every member on the way."""
    found: Dict[str, bytes] = {}
    with open(path, "rb") as handle:
        reader = TarReader(handle)
        for entry in reader.entries():
            _check_member(path, entry.name, entry.kind)
            if entry.name in METADATA:
                if entry.name in found:
                    raise ImageArchiveError("{}: {} appears twice".format(path, entry.name))
                if entry.size > MAX_METADATA:
                    raise ImageArchiveError("{}: {} is too large".format(path, entry.name))
                found[entry.name] = b"".join(reader.read_data())
                if len(found) == len(METADATA):
                    break
    lacking = [name for name in METADATA if name not in found]
    if lacking:
        raise ImageArchiveError("{} is not an image archive: no {}".format(
            path, ", ".join(lacking)))
    index = json_member(path, INDEX_NAME, found[INDEX_NAME], dict)
    docker = json_member(path, DOCKER_MANIFEST_NAME, found[DOCKER_MANIFEST_NAME], list)
    return _Metadata(found[LAYOUT_NAME], index, docker, _images(path, index, docker))


def _check_member(path: str, name: str, kind: str) -> None:
    if kind == "dir" and name in ("blobs", BLOB_DIR):
        return
    if kind == "file" and (name in METADATA or _BLOB.match(name)):
        return
    raise ImageArchiveError("{}: unexpected {} {!r} in an image archive".format(path, kind, name))


def json_member(path: str, name: str, data: bytes, kind: type,
                error: type = ImageArchiveError) -> Any:
    """Member `name` of the tar at `path` as JSON of type `kind` (dict or list); else
    `error` naming both."""
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise error("{}: {} is not valid JSON: {}".format(path, name, exc))
    if not isinstance(value, kind):
        raise error("{}: {} is not a JSON {}".format(
            path, name, "object" if kind is dict else "array"))
    return value



def _name(descriptor: Any) -> Optional[str]:
    annotations = descriptor.get("annotations") if isinstance(descriptor, dict) else None
    if not isinstance(annotations, dict):
        return None
    return annotations.get(ANNOTATION_IMAGE_NAME) or annotations.get(ANNOTATION_REF_NAME)


def _blob_hex(path: str, where: str, value: Any) -> str:
    if isinstance(value, str):
        match = _BLOB.match(value)
        if match:
            return match.group(1)
        if value.startswith("sha256:") and _BLOB.match("blobs/sha256/" + value[7:]):
            return value[7:]
    raise ImageArchiveError("{}: {} names {!r}, not a blobs/sha256 member".format(
        path, where, value))


def _images(path: str, index: Dict[str, Any], docker: List[Any]) -> List[ArchivedImage]:
    """Join index.json and manifest.json by reference: every image must be in both, so that
    docker and containerd see the same set."""
    loads: Dict[str, Tuple[str, List[str]]] = {}
    for item in docker:
        if not isinstance(item, dict) or not isinstance(item.get("Layers"), list):
            raise ImageArchiveError("{}: malformed {} entry".format(path, DOCKER_MANIFEST_NAME))
        config = _blob_hex(path, "manifest.json Config", item.get("Config"))
        layers = [_blob_hex(path, "manifest.json Layers", v) for v in item["Layers"]]
        for tag in item.get("RepoTags") or []:
            if tag in loads:
                raise ImageArchiveError("{}: {} is listed twice in {}".format(
                    path, tag, DOCKER_MANIFEST_NAME))
            loads[tag] = (config, layers)
    images = []
    seen: Set[str] = set()
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise ImageArchiveError("{}: {} has no manifests list".format(path, INDEX_NAME))
    for descriptor in manifests:
        name = _name(descriptor)
        if not name:
            raise ImageArchiveError("{}: an {} entry has no image name annotation".format(
                path, INDEX_NAME))
        if name in seen:
            raise ImageArchiveError("{}: {} is listed twice in {}".format(path, name, INDEX_NAME))
        seen.add(name)
        if name not in loads:
            raise ImageArchiveError("{}: {} is in {} but not in {}".format(
                path, name, INDEX_NAME, DOCKER_MANIFEST_NAME))
        manifest = _blob_hex(path, "index.json digest", descriptor.get("digest"))
        config, layers = loads[name]
        platform = descriptor.get("platform") or {}
        text = "/".join(str(platform[k]) for k in ("os", "architecture", "variant")
                        if platform.get(k))
        blobs: List[str] = []
        for hexd in [manifest, config] + layers:
            if hexd not in blobs:
                blobs.append(hexd)
        images.append(ArchivedImage(name, "sha256:" + config, "sha256:" + manifest, text,
                                    tuple(blobs)))
    extra = sorted(set(loads) - seen)
    if extra:
        raise ImageArchiveError("{}: {} is in {} but not in {}".format(
            path, extra[0], DOCKER_MANIFEST_NAME, INDEX_NAME))
    return images


def _select(images: List[ArchivedImage], references: Iterable[str]) -> List[ArchivedImage]:
    by_name = {image.reference: image for image in images}
    asked: List[str] = []
    for ref in references:
        if ref not in by_name:
            close = difflib.get_close_matches(ref, list(by_name), n=1)
            raise ImageArchiveError(
                "the image archive has no {}".format(ref),
                hint="did you mean {}?".format(close[0]) if close else
                "it holds: {}".format(", ".join(sorted(by_name))))
        if ref not in asked:
            asked.append(ref)
    if not asked:
        raise ImageArchiveError("no images asked for")
    return [by_name[ref] for ref in sorted(asked)]


# --------------------------------------------------------------------------- tar writing


def _header(name: str, size: int, mode: int, mtime: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _write_member(out: BinaryIO, name: str, data: bytes, mtime: int) -> None:
    out.write(_header(name, len(data), 0o644, mtime))
    out.write(data)
    out.write(b"\0" * (-len(data) % BLOCK))
