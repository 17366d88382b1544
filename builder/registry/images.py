"""What the registry client hands to the image archive writer.

`builder/registry/client.py` pulls an image for one platform into the cache and returns a
PulledImage; `builder/registry/image_archive.py` writes the bundle's single image archive from a
list of them. Every digest
names a blob in the content-addressed cache (builder/cache.py), the manifest bytes included.
"""

from __future__ import annotations

from typing import NamedTuple


class PulledImage(NamedTuple):
    reference: str  # canonical, full: "registry.k8s.io/kube-apiserver:v1.23.17" (never digest-only)
    platform: str  # "linux/amd64", "linux/arm64/v8"
    manifest_digest: str  # "sha256:..." of the platform manifest bytes exactly as served
    manifest_media_type: str  # docker schema2 or OCI image manifest
    config_digest: str  # also the image ID that `docker load` reports
    layer_digests: tuple[str, ...]  # compressed layer blobs, in manifest order
    layer_media_types: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    source: str = ""  # where it was pulled from (mirror URL and path), for reports
