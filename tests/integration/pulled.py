"""A minimal pull from the mirror world's plain-HTTP registries into a Cache, giving the
PulledImage records the archive writer consumes. It stands in for builder/registry.py in the
archive tests: anonymous access only, platform picked from the index, every blob checked by
Cache.writer()."""

from __future__ import annotations

import hashlib
from typing import Dict, List

import requests

from builder.cache import Cache
from builder.images import PulledImage

ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
])
LISTS = ("application/vnd.docker.distribution.manifest.list.v2+json",
         "application/vnd.oci.image.index.v1+json")


def _platform(entry: dict) -> str:
    p = entry.get("platform") or {}
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def _get(session: requests.Session, url: str, **kw) -> requests.Response:
    response = session.get(url, timeout=30, **kw)
    response.raise_for_status()
    return response


def pull(session: requests.Session, cache: Cache, registry_url: str, path: str, tag: str,
         reference: str, arch: str = "amd64") -> PulledImage:
    """Pull `path:tag` from `registry_url` for linux/`arch` and record it as `reference`."""
    base = f"{registry_url}/v2/{path}"
    got = _get(session, f"{base}/manifests/{tag}", headers={"Accept": ACCEPT})
    media = got.headers["Content-Type"].split(";")[0]
    body = got.content
    if media in LISTS:
        entry = next(m for m in got.json()["manifests"]
                     if _platform(m).startswith(f"linux/{arch}"))
        got = _get(session, f"{base}/manifests/{entry['digest']}", headers={"Accept": ACCEPT})
        media, body = entry["mediaType"], got.content
        platform = _platform(entry)
    else:
        platform = f"linux/{arch}"
    manifest_digest = cache.put_bytes(body, f"{reference} manifest")
    manifest = got.json()
    blobs: List[dict] = [manifest["config"], *manifest["layers"]]
    for blob in blobs:
        if not cache.has(blob["digest"]):
            url = f"{base}/blobs/{blob['digest']}"
            with cache.writer(blob["digest"], url) as out:
                out.write(_get(session, url).content)
    layers = manifest["layers"]
    return PulledImage(
        reference=reference, platform=platform, manifest_digest=manifest_digest,
        manifest_media_type=media, config_digest=manifest["config"]["digest"],
        layer_digests=tuple(x["digest"] for x in layers),
        layer_media_types=tuple(x["mediaType"] for x in layers),
        layer_sizes=tuple(x["size"] for x in layers), source=f"{base}:{tag}")


def pull_all(registry_info: Dict, cache: Cache, instances: List[str],
             arch: str = "amd64") -> List[PulledImage]:
    """Every image the given registry instances serve (registry.start()'s info), by the
    canonical reference, from the first instance listed that serves it."""
    session = requests.Session()
    session.trust_env = False
    images: Dict[str, PulledImage] = {}
    for name in instances:
        entry = registry_info["instances"][name]
        for ref, served in sorted(entry["paths"].items()):
            if ref in images:
                continue
            path, _, tag = served.rpartition(":")
            images[ref] = pull(session, cache, entry["url"], path, tag, ref, arch)
    return [images[ref] for ref in sorted(images)]


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
