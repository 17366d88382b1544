"""Write the bundle's single image archive (`images/images.tar`) from pulled images.

One tar that three readers accept (moby's image/tarexport, containerd's archive importer and
skopeo's oci-archive transport):
- `docker load` (Docker 20.10) reads `manifest.json`, whose Config/Layers point into
  `blobs/sha256/`; gzip layers are fine, and a layer shared by several images is read once.
- `ctr -n k8s.io images import` (containerd 1.6) sees `oci-layout` and reads `index.json`, naming
  each image by its `io.containerd.image.name` annotation.
- skopeo reads it as `oci-archive:` (by `org.opencontainers.image.ref.name`) and
  `docker-archive:` (by RepoTags).
Both annotations and RepoTags hold the full reference (`registry.k8s.io/pause:3.6`): docker
load keeps no RepoDigests, so an image known only by digest would arrive nameless.

Member order is fixed and content-derived: `oci-layout`, `index.json`, `manifest.json`, then
`blobs/sha256/<hex>` sorted, every blob once. Metadata first lets the installer's subset reader
(installer/format/imagearchive.py) decide what to keep before the first blob streams past.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping, NamedTuple, Optional, Sequence, cast

from builder.bundle.pack import source_date_epoch
from builder.cache import Cache, hex_of
from builder.errors import BuildError
from builder.hashio import HashingReader, HashingWriter
from builder.registry.images import PulledImage
from builder.registry.mediatypes import (
    DOCKER_MANIFEST,
    GZIP_LAYERS,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
)
from installer.format.bundleinfo import BundleImage
from installer.format.imagearchive import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    BLOB_DIR,
    DOCKER_MANIFEST_NAME,
    INDEX_NAME,
    LAYOUT_NAME,
    dump_json,
)

__all__ = ["ArchiveError", "ArchiveImage", "ArchiveSummary", "bundle_images", "write_archive"]

CHUNK = 1 << 20
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
# Docker 20.10 cannot load zstd layers, and foreign (non-distributable) layers are Windows-only.
LAYER_TYPES = GZIP_LAYERS + (OCI_LAYER_TAR,)


class ArchiveError(BuildError):
    """The images cannot go into one archive as given (bad reference, inconsistent record,
    unsupported layer type, blob missing from the cache)."""


class ArchiveImage(NamedTuple):
    reference: str
    platform: str
    manifest_digest: str
    config_digest: str  # also the image ID docker reports
    layer_digests: tuple[str, ...]
    size: int  # manifest + config + layers, counting shared layers in every image


class ArchiveSummary(NamedTuple):
    path: Path
    sha256: str
    size: int  # bytes of the archive file
    blobs: int  # distinct blobs stored
    blob_bytes: int  # their total size
    images: tuple[ArchiveImage, ...]  # sorted by reference


def write_archive(
    images: Sequence[PulledImage],
    cache: Cache,
    out: Path,
    mtime: Optional[int] = None,
) -> ArchiveSummary:
    """Write `out` (atomically) holding `images`, every blob read from `cache`; the same
    inputs and `mtime` (default SOURCE_DATE_EPOCH) give the same bytes."""
    if not images:
        raise ArchiveError("no images to archive")
    mtime = source_date_epoch() if mtime is None else mtime
    records = sorted((_checked(image, cache) for image in images), key=lambda r: r.reference)
    _no_duplicates(records)
    blobs: dict[str, int] = {}
    for record in records:
        for digest in (record.manifest_digest, record.config_digest, *record.layer_digests):
            blobs[hex_of(digest)] = cache.path(digest).stat().st_size
    metadata = [
        (LAYOUT_NAME, dump_json({"imageLayoutVersion": "1.0.0"})),
        (INDEX_NAME, dump_json(_index(records, images, blobs))),
        (DOCKER_MANIFEST_NAME, dump_json(_docker_manifest(records))),
    ]

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            writer = HashingWriter(raw)
            # a stream (mode "w"): tarfile only calls write() and tell(), which it has
            with tarfile.open(fileobj=cast(BinaryIO, writer), mode="w",
                              format=tarfile.PAX_FORMAT) as tar:
                for name, data in metadata:
                    tar.addfile(_info(name, len(data), 0o644, mtime), io.BytesIO(data))
                for folder in ("blobs", BLOB_DIR):
                    tar.addfile(_info(folder, 0, 0o755, mtime, tarfile.DIRTYPE))
                for hexd in sorted(blobs):
                    _add_blob(tar, cache, hexd, blobs[hexd], mtime)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ArchiveSummary(out, writer.hash.hexdigest(), writer.size, len(blobs),
                          sum(blobs.values()), tuple(records))


def bundle_images(summary: ArchiveSummary,
                  roles: Mapping[str, Iterable[str]]) -> tuple[BundleImage, ...]:
    """bundle.json's `images` list: each image's reference, platform, digests and the sorted
    roles (`roles` maps a reference to them; an image no role needs is an error)."""
    entries = []
    for image in summary.images:
        wanted = sorted(set(roles.get(image.reference, ())))
        if not wanted:
            raise ArchiveError(f"{image.reference}: no role needs this image",
                               hint="give every archived image at least one role")
        entries.append(BundleImage(
            reference=image.reference, image_id=image.config_digest, size=image.size,
            roles=tuple(wanted), platform=image.platform,
            manifest_digest=image.manifest_digest, layers=tuple(image.layer_digests)))
    unknown = sorted(set(roles) - {image.reference for image in summary.images})
    if unknown:
        raise ArchiveError(f"roles name images the archive lacks: {', '.join(unknown)}")
    return tuple(entries)


# --------------------------------------------------------------------------- checks


def _checked(image: PulledImage, cache: Cache) -> ArchiveImage:
    """Re-read the manifest from the cache and check that the record agrees with it: the
    archive's metadata is derived from the record, docker and containerd from the blobs."""
    ref = image.reference
    _check_reference(ref)
    if image.manifest_media_type not in MANIFEST_TYPES:
        raise ArchiveError(f"{ref}: manifest type {image.manifest_media_type!r} is not a "
                           "single-platform image manifest",
                           hint="resolve manifest lists/indexes to the target platform first")
    manifest = _json_blob(cache, image.manifest_digest, ref, "manifest")
    config = manifest.get("config") or {}
    layers = manifest.get("layers") or []
    if config.get("digest") != image.config_digest:
        raise ArchiveError(f"{ref}: the manifest names config {config.get('digest')}, "
                           f"the pull record {image.config_digest}")
    if tuple(layer.get("digest") for layer in layers) != tuple(image.layer_digests):
        raise ArchiveError(f"{ref}: the manifest's layers differ from the pull record's")
    for layer in layers:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise ArchiveError(f"{ref}: layer {layer.get('digest')} has media type "
                               f"{layer.get('mediaType')!r}, which Docker 20.10 cannot load",
                               hint="use an image variant with gzip layers")
    diff_ids = (_json_blob(cache, image.config_digest, ref, "config").get("rootfs") or {}).get(
        "diff_ids") or []
    if len(diff_ids) != len(layers):
        # docker load: "invalid manifest, layers length mismatch"
        raise ArchiveError(f"{ref}: config lists {len(diff_ids)} diff_ids for "
                           f"{len(layers)} layers")
    size = 0
    for digest in (image.manifest_digest, image.config_digest, *image.layer_digests):
        if not cache.has(digest):
            raise ArchiveError(f"{ref}: blob {digest} is not in the cache ({cache.root})",
                               hint="pull the image again")
        size += cache.path(digest).stat().st_size
    return ArchiveImage(ref, image.platform, image.manifest_digest, image.config_digest,
                        tuple(image.layer_digests), size)


def _check_reference(ref: str) -> None:
    name, _, tag = ref.rpartition(":")
    host = name.split("/", 1)[0]
    if "@" in ref or not tag or "/" in tag or "/" not in name or not (
            "." in host or ":" in host or host == "localhost"):
        raise ArchiveError(f"image reference {ref!r} is not a full registry/repository:tag",
                           hint="archive images under canonical names such as "
                                "registry.k8s.io/pause:3.6 (docker load keeps no digests)")


def _no_duplicates(records: Sequence[ArchiveImage]) -> None:
    seen = set()
    for record in records:
        if record.reference in seen:
            raise ArchiveError(f"{record.reference} is listed twice",
                               hint="an archive holds one platform per reference")
        seen.add(record.reference)


def _json_blob(cache: Cache, digest: str, ref: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(cache.path(digest).read_bytes())
    except FileNotFoundError:
        raise ArchiveError(f"{ref}: {what} {digest} is not in the cache ({cache.root})",
                           hint="pull the image again") from None
    except ValueError as exc:
        raise ArchiveError(f"{ref}: {what} {digest} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ArchiveError(f"{ref}: {what} {digest} is not a JSON object")
    return data


# --------------------------------------------------------------------------- metadata


def _platform(text: str) -> dict[str, str]:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ArchiveError(f"platform {text!r}: expected os/arch[/variant]")
    platform = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        platform["variant"] = parts[2]
    return platform


def _index(records: Sequence[ArchiveImage], images: Sequence[PulledImage],
           sizes: Mapping[str, int]) -> dict[str, Any]:
    media = {image.reference: image.manifest_media_type for image in images}
    return {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": media[r.reference],
                "digest": r.manifest_digest,
                "size": sizes[hex_of(r.manifest_digest)],
                "annotations": {
                    ANNOTATION_IMAGE_NAME: r.reference,
                    ANNOTATION_REF_NAME: r.reference,
                },
                "platform": _platform(r.platform),
            }
            for r in records
        ],
    }


def _docker_manifest(records: Sequence[ArchiveImage]) -> list[dict[str, Any]]:
    return [
        {
            "Config": f"{BLOB_DIR}/{hex_of(r.config_digest)}",
            "RepoTags": [r.reference],
            "Layers": [f"{BLOB_DIR}/{hex_of(d)}" for d in r.layer_digests],
        }
        for r in records
    ]


# --------------------------------------------------------------------------- tar writing


def _info(name: str, size: int, mode: int, mtime: int,
          kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_blob(tar: tarfile.TarFile, cache: Cache, hexd: str, size: int, mtime: int) -> None:
    path = cache.path(hexd)
    with open(path, "rb") as handle:
        reader = HashingReader(handle)
        tar.addfile(_info(f"{BLOB_DIR}/{hexd}", size, 0o644, mtime), reader)
        if handle.read(1) or reader.hash.hexdigest() != hexd:
            raise ArchiveError(f"cache blob {path} does not hash to sha256:{hexd}",
                               hint="delete it and pull again")
