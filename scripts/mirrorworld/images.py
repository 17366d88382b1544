"""Tiny, deterministic multi-platform container images for the mirror world's registries.

Every image is an index (a Docker manifest list or an OCI index) over per-platform images that
share one base layer per platform, so that layer deduplication in the builder and in
`docker load` is exercised. Layers are gzip tars with sorted members, fixed mtimes, uid/gid 0,
and a gzip header with mtime 0: the same inputs give the same digests (on the same zlib).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import tarfile
from typing import Any, NamedTuple

import yaml

from builder.registry.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)

SPEC_PATH = pathlib.Path(__file__).with_name("images.yaml")

# 2023-09-18T00:00:00Z, flannel v0.22.3's tag date; any fixed instant would do.
EPOCH = 1694995200
CREATED = "2023-09-18T00:00:00Z"


MEDIA_TYPES = {
    "docker": (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
    "oci": (OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
}


class Platform(NamedTuple):
    os: str
    architecture: str
    variant: str  # "" when the platform has none

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(p for p in self if p)

    def as_json(self) -> dict:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


class Image(NamedTuple):
    """One generated image: its canonical reference and the digests a client will see."""

    ref: str  # canonical, e.g. registry.k8s.io/coredns/coredns:v1.8.6
    registry: str  # registry.k8s.io
    repository: str  # coredns/coredns
    tag: str  # v1.8.6
    media_type: str  # of the index
    digest: str  # of the index
    manifests: dict  # str(Platform) -> {"digest", "config", "layers": [digests]}
    blobs: tuple  # every digest the repository must link: configs and layers


def split_ref(ref: str) -> tuple[str, str, str]:
    """`registry/repo/path:tag` -> (registry, repository, tag); canonical references only."""
    name, _, tag = ref.rpartition(":")
    registry, _, repository = name.partition("/")
    if not name or "/" in tag or "." not in registry or not repository:
        raise ValueError(f"{ref!r} is not a canonical registry/repository:tag reference")
    return registry, repository, tag


def load_spec(path: pathlib.Path = SPEC_PATH) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tar(files: dict) -> bytes:
    """A deterministic tar of {path: (mode, bytes)}, parent directories included."""
    dirs = set()
    for path in files:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    entries = {d: None for d in dirs}
    entries.update(files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            info = tarfile.TarInfo(path)
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entries[path] is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                mode, data = entries[path]
                info.mode = mode
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


class _Layer(NamedTuple):
    gz: bytes
    digest: str  # of the gzip bytes
    diff_id: str  # of the uncompressed tar


def _layer(files: dict) -> _Layer:
    raw = _tar(files)
    gz = _gzip(raw)
    return _Layer(gz, _digest(gz), _digest(raw))


def _base_layer(platform: Platform) -> _Layer:
    os_release = (
        'NAME="mirror-world base"\nID=mirrorworld\nVERSION_ID=1\n'
        f'PLATFORM="{platform}"\n'
    ).encode()
    return _layer({
        "etc/os-release": (0o644, os_release),
        "etc/passwd": (0o644, b"root:x:0:0:root:/root:/bin/sh\n"
                              b"nobody:x:65534:65534::/:/bin/false\n"),
        "etc/group": (0o644, b"root:x:0:\nnogroup:x:65534:\n"),
        "tmp/.keep": (0o644, b""),
    })


def _app_layer(ref: str, platform: Platform, entrypoint: list) -> _Layer:
    # The program stands in for the real binary: it only says what it is.
    program = entrypoint[0].lstrip("/")
    if "/" not in program:
        program = "usr/local/bin/" + program
    script = f"#!/bin/sh\necho '{ref} {platform} (mirror-world stand-in)'\n".encode()
    return _layer({
        program: (0o755, script),
        "etc/mirror-world/image": (0o644, f"{ref}\n{platform}\n".encode()),
    })


def build(spec: dict) -> tuple[list[Image], dict]:
    """Build every image in `spec` (see images.yaml): returns the images and {digest: bytes}
    of every blob and manifest they use."""
    blobs = {}
    base_layers = {}
    images = []
    defaults = spec.get("default_platforms", ["linux/amd64", "linux/arm64"])
    for entry in spec["images"]:
        ref = entry["ref"]
        registry, repository, tag = split_ref(ref)
        fmt = entry.get("format", "docker")
        index_type, manifest_type, config_type, layer_type = MEDIA_TYPES[fmt]
        descriptors, per_platform, image_blobs = [], {}, set()
        for text in entry.get("platforms", defaults):
            platform = Platform.parse(text)
            if platform not in base_layers:
                base_layers[platform] = _base_layer(platform)
            layers = [base_layers[platform], _app_layer(ref, platform, entry["entrypoint"])]
            config = dict(platform.as_json())
            config.update({
                "created": CREATED,
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Entrypoint": entry["entrypoint"],
                    "Labels": {"io.kubecrate.mirror-world.ref": ref},
                },
                "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]},
                "history": [
                    {"created": CREATED, "created_by": "mirror-world base"},
                    {"created": CREATED, "created_by": f"mirror-world {ref}"},
                ],
            })
            if entry.get("cmd"):
                config["config"]["Cmd"] = entry["cmd"]
            config_bytes = _json_bytes(config)
            config_digest = _digest(config_bytes)
            blobs[config_digest] = config_bytes
            for x in layers:
                blobs[x.digest] = x.gz
            manifest = {
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": {"mediaType": config_type, "size": len(config_bytes),
                           "digest": config_digest},
                "layers": [{"mediaType": layer_type, "size": len(x.gz), "digest": x.digest}
                           for x in layers],
            }
            manifest_bytes = _json_bytes(manifest)
            manifest_digest = _digest(manifest_bytes)
            blobs[manifest_digest] = manifest_bytes
            descriptors.append({"mediaType": manifest_type, "size": len(manifest_bytes),
                                "digest": manifest_digest, "platform": platform.as_json()})
            per_platform[str(platform)] = {"digest": manifest_digest, "config": config_digest,
                                           "layers": [x.digest for x in layers]}
            image_blobs.update([config_digest] + [x.digest for x in layers])
        index_bytes = _json_bytes({"schemaVersion": 2, "mediaType": index_type,
                                   "manifests": descriptors})
        index_digest = _digest(index_bytes)
        blobs[index_digest] = index_bytes
        images.append(Image(ref, registry, repository, tag, index_type, index_digest,
                            per_platform, tuple(sorted(image_blobs))))
    return images, blobs
