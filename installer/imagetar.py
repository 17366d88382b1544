"""Read a user's image tar for `images push` and stage its blobs, every one checked.

Two shapes are read, each as the tools that make it write it:
  docker-archive  `docker save`, `skopeo copy ... docker-archive:FILE.tar:NAME`: manifest.json
                  lists each image's Config (`<hex>.json`, its own SHA-256) and Layers
                  (uncompressed tars: each hashes to its config's rootfs.diff_ids entry), named
                  by RepoTags. skopeo adds legacy `<id>/layer.tar` symbolic links, which are
                  passed over. A Docker image manifest (schema 2) is made for each image, its
                  layers typed uncompressed (application/vnd.docker.image.rootfs.diff.tar).
  OCI layout      `skopeo copy ... oci-archive:FILE.tar:NAME`, `ctr images export`, the
                  `docker save` of Docker 25 and later: index.json names each image manifest
                  (annotation io.containerd.image.name, or org.opencontainers.image.ref.name
                  when it is a whole reference), every blob is `blobs/sha256/<hex>`.
                  index.json wins where both are present.

The tar is read once (a gzip-compressed one too): every regular member but the metadata is
written into `staging` under its own SHA-256, computed while it streams, and kept only if an
image needs it. Then each blob an image names must be there with that digest: a tar that
ends early, a member that does not hash to what names it, or a blob that is missing raises
ImageTarError naming the file and the member. Nothing outside `staging` is written here.
Python 3.6, stdlib only.
"""

import gzip
import hashlib
import json
import os
import re
from typing import Any, BinaryIO, Dict, List, NamedTuple, Tuple

from installer.format.errors import VerificationError
from installer.format.imagearchive import json_member
from installer.format.tarstream import BLOCK, TarReader

MANIFEST_JSON = "manifest.json"
INDEX_JSON = "index.json"
METADATA = (MANIFEST_JSON, INDEX_JSON, "oci-layout", "repositories")
MAX_METADATA = 16 << 20
CHUNK = 1 << 20
# distribution's manifest media types (a registry answers in one of them) and the Docker
# config and layer types of the manifests made for a docker-archive
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
TOOLS_HINT = "make it with `docker save NAME:TAG -o FILE.tar` or `skopeo copy docker://... " \
    "docker-archive:FILE.tar:NAME:TAG`"


class ImageTarError(VerificationError):
    """The image tar is not one, is damaged or tampered with, or lacks what it names."""


class TarImage(NamedTuple):
    reference: str  # whole, normalized: docker.io/library/nginx:1.25
    manifest_digest: str  # sha256:<hex>
    blobs: Tuple[str, ...]  # hex digests: manifest, config, layers


def normalize(name: str) -> str:
    """A reference as containerd resolves it: `nginx:1.25` -> `docker.io/library/nginx:1.25`
    (the distribution/reference rules: a first part with a dot or a colon, or localhost, is a
    registry; else Docker Hub, and library/ for a one-part name)."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    if not rest:
        return "docker.io/library/" + name
    return "docker.io/" + name


def is_tar(path: str) -> bool:
    """Whether `path` starts with a POSIX tar header (the `ustar` magic GNU and PAX tars
    share), gzip-compressed or not."""
    with _open(path) as handle:
        head = handle.read(BLOCK)
    return len(head) == BLOCK and head[257:262] == b"ustar"


def _open(path: str) -> BinaryIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def read(path: str, staging: str) -> List[TarImage]:
    """The images of the tar at `path`, their blobs (and the manifests made for a
    docker-archive) staged as `staging`/<hex>. Raises ImageTarError."""
    metadata, staged = _stage(path, staging)
    if INDEX_JSON in metadata:
        images = _oci_images(path, metadata[INDEX_JSON], staged, staging)
    elif MANIFEST_JSON in metadata:
        images = _docker_images(path, metadata[MANIFEST_JSON], staged, staging)
    else:
        raise ImageTarError("{} holds no image: neither manifest.json (docker-archive) nor "
                            "index.json (OCI layout)".format(path), hint=TOOLS_HINT)
    if not images:
        raise ImageTarError("{} names no image".format(path), hint=TOOLS_HINT)
    return images


def _stage(path: str, staging: str) -> Tuple[Dict[str, bytes], Dict[str, str]]:
    """One pass: metadata members in memory, every other regular file staged by its SHA-256.
    Returns (metadata, member name -> its hex digest)."""
    metadata, staged = {}, {}  # type: Dict[str, bytes], Dict[str, str]
    name = "(the first header)"
    try:
        with _open(path) as handle:
            reader = TarReader(handle)
            for entry in reader.entries():
                name = entry.name
                if entry.kind != "file":
                    continue
                if name in METADATA:
                    if entry.size > MAX_METADATA:
                        raise ImageTarError("{}: {} is too large".format(path, name))
                    metadata[name] = b"".join(reader.read_data())
                    continue
                staged[name] = _stage_member(reader, staging)
    except ImageTarError:
        raise
    except (VerificationError, EOFError, OSError) as err:  # tarstream, gzip
        said = str(getattr(err, "message", err)).replace("bundle is truncated",
                                                          "the tar is cut short")
        raise ImageTarError("{}: damaged or truncated at member {}: {}".format(
            path, name, said), hint="make the tar again; nothing was pushed")
    return metadata, staged


def _stage_member(reader: TarReader, staging: str) -> str:
    digest = hashlib.sha256()
    temporary = os.path.join(staging, "member.partial")
    with open(temporary, "wb") as out:
        for block in reader.read_data(CHUNK):
            digest.update(block)
            out.write(block)
    hexd = digest.hexdigest()
    os.replace(temporary, os.path.join(staging, hexd))
    return hexd


def _json(path: str, member: str, data: bytes, kind: type) -> Any:
    return json_member(path, member, data, kind, ImageTarError)


def _blob(path: str, staged: Dict[str, str], member: str, hexd: str, what: str) -> str:
    """`member`, checked to hash to `hexd`; returns hexd."""
    got = staged.get(member)
    if got is None:
        raise ImageTarError("{}: member {} ({}) is missing or not a regular file".format(
            path, member, what), hint="make the tar again; nothing was pushed")
    if got != hexd:
        raise ImageTarError("{}: member {} ({}) hashes to sha256:{}, not sha256:{}: the tar "
                            "was changed or damaged".format(path, member, what, got, hexd),
                            hint="make the tar again; nothing was pushed")
    return hexd


def _digest_hex(path: str, where: str, value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:") and _HEX.match(value[7:]):
        return value[7:]
    raise ImageTarError("{}: {} names {!r}, not a sha256 digest".format(path, where, value))


def _oci_images(path: str, raw: bytes, staged: Dict[str, str], staging: str
                ) -> List[TarImage]:
    index = _json(path, INDEX_JSON, raw, dict)
    images = []
    for position, descriptor in enumerate(index.get("manifests") or []):
        where = "{}: index.json manifests[{}]".format(path, position)
        if not isinstance(descriptor, dict):
            raise ImageTarError(where + " is not an object")
        reference = _oci_name(where, descriptor.get("annotations") or {})
        manifest = _digest_hex(path, "index.json manifests[{}]".format(position),
                               descriptor.get("digest"))
        member = "blobs/sha256/" + manifest
        _blob(path, staged, member, manifest, "the manifest of " + reference)
        with open(os.path.join(staging, manifest), "rb") as handle:
            document = _json(path, member, handle.read(), dict)
        if "manifests" in document or "layers" not in document:
            raise ImageTarError(
                "{}: {} is an image index (several platforms), not one image's manifest"
                .format(where, reference),
                hint="push one platform's image: `skopeo copy --override-arch amd64 ... "
                     "oci-archive:FILE.tar:NAME:TAG` or `docker save`")
        blobs = [manifest]
        for part in [document.get("config")] + list(document.get("layers") or []):
            hexd = _digest_hex(path, member + " config/layers",
                               part.get("digest") if isinstance(part, dict) else None)
            blobs.append(_blob(path, staged, "blobs/sha256/" + hexd, hexd,
                               "a blob of " + reference))
        images.append(TarImage(reference, "sha256:" + manifest, tuple(_unique(blobs))))
    return images


def _oci_name(where: str, annotations: Dict[str, Any]) -> str:
    for key in NAME_ANNOTATIONS:
        value = annotations.get(key)
        if isinstance(value, str) and ("/" in value or ":" in value):
            return _tagged(where, normalize(value))
    raise ImageTarError("{} names no image (no io.containerd.image.name annotation, and "
                        "org.opencontainers.image.ref.name is {!r}, a tag only)".format(
                            where, annotations.get(NAME_ANNOTATIONS[1])),
                        hint="give the name when you make the tar: `skopeo copy ... "
                             "oci-archive:FILE.tar:NAME:TAG`")


def _tagged(where: str, reference: str) -> str:
    last = reference.rsplit("/", 1)[-1]
    if "@" in reference or ":" not in last:
        raise ImageTarError("{}: {} has no tag".format(where, reference),
                            hint="pods pull it by tag: name it NAME:TAG")
    return reference


def _docker_images(path: str, raw: bytes, staged: Dict[str, str], staging: str
                   ) -> List[TarImage]:
    images = []
    for position, item in enumerate(_json(path, MANIFEST_JSON, raw, list)):
        where = "{}: manifest.json[{}]".format(path, position)
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) or \
                not isinstance(item.get("Layers"), list):
            raise ImageTarError(where + " has no Config and Layers")
        tags = [t for t in item.get("RepoTags") or [] if isinstance(t, str)]
        if not tags:
            raise ImageTarError("{} ({}) has no name (RepoTags is empty)".format(
                where, item["Config"]), hint="save it by name: `docker save NAME:TAG`")
        config_member = item["Config"]
        config = _blob(path, staged, config_member, _config_hex(where, config_member),
                       "the config of " + tags[0])
        with open(os.path.join(staging, config), "rb") as handle:
            diff_ids = (_json(path, config_member, handle.read(), dict).get("rootfs")
                        or {}).get("diff_ids") or []
        if len(diff_ids) != len(item["Layers"]):
            raise ImageTarError("{}: {} lists {} layers, its config {} diff_ids".format(
                path, MANIFEST_JSON, len(item["Layers"]), len(diff_ids)))
        layers = [_blob(path, staged, member,
                        _digest_hex(path, config_member + " rootfs.diff_ids", diff_id),
                        "layer {} of {}".format(number + 1, tags[0]))
                  for number, (member, diff_id) in enumerate(zip(item["Layers"], diff_ids))]
        manifest = _write_manifest(staging, config, layers)
        for tag in tags:
            images.append(TarImage(_tagged(where, normalize(tag)), "sha256:" + manifest,
                                   tuple(_unique([manifest, config] + layers))))
    return images


def _config_hex(where: str, member: str) -> str:
    """The digest a docker-archive's config member is named by (`<hex>.json`, or
    `blobs/sha256/<hex>` from Docker 25 on)."""
    stem = os.path.basename(member)
    stem = stem[:-len(".json")] if stem.endswith(".json") else stem
    if not _HEX.match(stem):
        raise ImageTarError("{}: Config {} is not named by its digest".format(where, member))
    return stem


def _write_manifest(staging: str, config: str, layers: List[str]) -> str:
    """A Docker image manifest (schema 2) for the staged config and uncompressed layers."""
    def size(hexd: str) -> int:
        return os.path.getsize(os.path.join(staging, hexd))
    document = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "size": size(config),
                           "digest": "sha256:" + config},
                "layers": [{"mediaType": DOCKER_LAYER, "size": size(hexd),
                            "digest": "sha256:" + hexd} for hexd in layers]}
    data = json.dumps(document, indent=3).encode("utf-8")
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(staging, hexd), "wb") as out:
        out.write(data)
    return hexd


def _unique(items: List[str]) -> List[str]:
    seen = []  # type: List[str]
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen

