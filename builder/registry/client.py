"""The OCI distribution client: pull images for one platform into the content-addressed cache.

    pulled = pull_images(["registry.k8s.io/pause:3.6"], "linux/amd64", preset, Cache())

Each canonical reference is mapped to its mirror by the preset (builder/inputs/mirrors.py), its
tag or digest resolved through a manifest list / OCI index to the platform's manifest, and the
manifest, config and layers stored in the cache, every one verified against its digest while
streaming (layers also against the config's diff IDs). The returned PulledImage keeps the
canonical name, whichever mirror served the bytes. Retries and resume live in builder/net/http.py,
redirects and auth in builder/registry/endpoint.py and builder/registry/auth.py; errors in
builder/registry/errors.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import zlib
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import requests

from builder.cache import Cache, DigestMismatch
from builder.inputs.mirrors import ImageName, MirrorPreset, PullRef, RegistryMirror, parse_image
from builder.net.http import new_session
from builder.registry.endpoint import Endpoint
from builder.registry.errors import (
    BlobCorrupt,
    ManifestError,
    PlatformNotFound,
    PullFailed,
    RegistryError,
)
from builder.registry.images import PulledImage
from builder.registry.mediatypes import (
    GZIP_LAYERS,
    INDEXES,
    MANIFESTS,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)
from builder.registry.platforms import (
    Platform,
    acceptable,
    as_served,
    choose,
    from_descriptor,
    parse_platform,
)
from builder.registry.ranges import Split, fetch_range, part_ranges

__all__ = ["Progress", "pull_images"]

log = logging.getLogger(__name__)

ACCEPT = ", ".join(INDEXES + MANIFESTS)
TAR_LAYERS = (OCI_LAYER_TAR,)
OTHER_LAYERS = (OCI_LAYER_ZSTD,)
MAX_NESTING = 3  # an index inside an index inside an index is already unusual
# Connections to a registry at once (the transport's pool keeps 16 per host). Over a WAN one
# TCP connection gets far less than the link (50 ms RTT and 0.1% loss: about 9 Mbit/s with
# cubic), so the pull is as fast as its connections together (docs/benchmarks.md, netfetch).
WORKERS = 8

Progress = Callable[[int, int], None]  # (bytes just received, total bytes to receive)


class _Resolved(NamedTuple):
    """An image resolved to one platform: what phase 2 must download."""

    image: ImageName
    pull: PullRef
    endpoint: Endpoint
    platform: str
    manifest_digest: str
    manifest_media_type: str
    layers: Tuple[Dict[str, Any], ...]
    diff_ids: Tuple[str, ...]
    config_digest: str


def pull_images(references: Iterable[str], platform: Union[str, Platform], preset: MirrorPreset,
                cache: Cache, session: Optional[requests.Session] = None,
                progress: Optional[Progress] = None, workers: int = WORKERS,
                **endpoint_options: Any) -> List[PulledImage]:
    """Pull every canonical reference for `platform` through `preset`'s mirrors into `cache`
    and return one PulledImage each, in order. Blobs already cached are not fetched; a failure
    raises a RegistryError subclass (PullFailed when several images fail) and leaves nothing
    partial in the cache. `endpoint_options` (timeout, retries, backoff, sleep, run) go to
    every builder.registry.endpoint.Endpoint."""
    wanted = parse_platform(platform) if isinstance(platform, str) else platform
    references = list(references)
    own_session = session is None
    session = session or new_session()
    endpoints: Dict[RegistryMirror, Endpoint] = {}
    try:
        for ref in references:
            pull = _pull_ref(preset, ref)
            if pull.mirror not in endpoints:
                endpoints[pull.mirror] = Endpoint(pull.mirror, session, **endpoint_options)
        with ThreadPoolExecutor(max_workers=max(1, workers),
                                thread_name_prefix="kubecrate-pull") as pool:
            resolved = _all(pool, [partial(_resolve, ref, wanted, preset, endpoints, cache)
                                   for ref in references])
            _download_layers(pool, resolved, cache, progress, workers)
        return [_record(r) for r in resolved]
    finally:
        if own_session:
            session.close()


def _pull_ref(preset: MirrorPreset, ref: str) -> PullRef:
    name = parse_image(ref)
    if not name.tag:
        raise RegistryError(f"{ref}: an image needs a tag as well as a digest "
                            "(name:tag@sha256:...), because docker load keeps only tags")
    return preset.pull_ref(name)


def _all(pool: ThreadPoolExecutor, jobs: Sequence[Callable[[], Any]]) -> List[Any]:
    """Run jobs in the pool; results in order, or every failure raised once."""
    futures = [pool.submit(job) for job in jobs]
    wait(futures)
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    _raise(errors)
    return [f.result() for f in futures]


def _raise(errors: List[BaseException], what: str = "images") -> None:
    if not errors:
        return
    own = [e for e in errors if isinstance(e, RegistryError)]
    if len(errors) == 1 or len(own) != len(errors):
        raise next((e for e in errors if not isinstance(e, RegistryError)), errors[0])
    raise PullFailed(own, what)


# --------------------------------------------------------------------------- manifests


def _resolve(ref: str, wanted: Platform, preset: MirrorPreset,
             endpoints: Dict[RegistryMirror, Endpoint], cache: Cache) -> _Resolved:
    pull = _pull_ref(preset, ref)
    endpoint = endpoints[pull.mirror]
    image = pull.image
    canonical = f"{image.registry}/{image.repository}:{image.tag}"
    reference = image.digest or image.tag or "latest"
    data, media_type, digest = _manifest(endpoint, pull, reference, None, canonical, cache)
    top_digest, served = digest, str(wanted)
    for _ in range(MAX_NESTING):
        if media_type not in INDEXES:
            break
        entries = _json(data, canonical, digest).get("manifests")
        if not isinstance(entries, list):
            raise ManifestError(f"{canonical}: index {digest} has no 'manifests' list")
        position = choose(wanted, [e for e in entries if isinstance(e, dict)])
        if position is None:
            offered = sorted({as_served(e.get("platform") or {}) for e in entries
                              if isinstance(e, dict)} - {""})
            raise PlatformNotFound(
                f"{canonical}: no image for {wanted} in {pull.manifest_url} "
                f"(it has: {', '.join(offered) or 'no platforms'})",
                hint="pick a platform the image is built for, or another image")
        entry = [e for e in entries if isinstance(e, dict)][position]
        served = as_served(entry["platform"])
        data, media_type, digest = _manifest(endpoint, pull, entry.get("digest", ""), entry,
                                             canonical, cache)
    if media_type not in MANIFESTS:
        raise ManifestError(f"{canonical}: unsupported manifest type {media_type!r} at "
                            f"{pull.manifest_url}",
                            hint="only Docker schema 2 and OCI image manifests can be bundled")
    body = _json(data, canonical, digest)
    config = body.get("config")
    layers = body.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ManifestError(f"{canonical}: manifest {digest} lacks config or layers")
    for layer in layers:
        _check_descriptor(layer, canonical, digest)
        kind = layer.get("mediaType", "")
        if kind not in GZIP_LAYERS + TAR_LAYERS + OTHER_LAYERS:
            raise ManifestError(f"{canonical}: layer {layer.get('digest')} has media type "
                                f"{kind!r}, which cannot be bundled (foreign or unknown)")
    _check_descriptor(config, canonical, digest)
    config_data = _small_blob(endpoint, pull, config, canonical, cache)
    config_json = _json(config_data, canonical, config["digest"])
    found = from_descriptor(config_json)
    if found is not None and Platform(found.os, found.architecture, "") not in [
            Platform(p.os, p.architecture, "") for p in acceptable(wanted)]:
        raise PlatformNotFound(f"{canonical}: {pull.manifest_url} is an image for {found}, "
                               f"not {wanted}",
                               hint="the tag is a single-platform image; pick the matching "
                                    "platform or a multi-platform tag")
    if digest == top_digest and found is not None:  # no index: the config says what it is
        served = as_served(config_json)
    diff_ids = (config_json.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise ManifestError(f"{canonical}: config {config['digest']} lists {len(diff_ids)} "
                            f"diff IDs for {len(layers)} layers")
    return _Resolved(image, pull, endpoint, served, digest, media_type, tuple(layers),
                     tuple(diff_ids), config["digest"])


def _check_descriptor(desc: Any, canonical: str, parent: str) -> None:
    if (not isinstance(desc, dict) or not isinstance(desc.get("digest"), str)
            or not desc["digest"].startswith("sha256:") or not isinstance(desc.get("size"), int)
            or desc["size"] < 0):
        raise ManifestError(f"{canonical}: manifest {parent} has a bad descriptor {desc!r}",
                            hint="only sha256 digests with sizes are supported")


def _json(data: bytes, canonical: str, digest: str) -> Dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"{canonical}: {digest} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ManifestError(f"{canonical}: {digest} is not a JSON object")
    return body


def _manifest(endpoint: Endpoint, pull: PullRef, reference: str,
              descriptor: Optional[Dict[str, Any]], canonical: str,
              cache: Cache) -> Tuple[bytes, str, str]:
    """A manifest by tag or digest, verified and cached: (bytes, media type, digest)."""
    by_digest = reference.startswith("sha256:")
    if by_digest and cache.has(reference):
        data = cache.path(reference).read_bytes()
        hint = (descriptor or {}).get("mediaType", "")
        return data, _media_type("", hint, data, canonical, reference), reference
    data, ctype, header_digest, url = endpoint.manifest(pull.repository, reference, ACCEPT,
                                                        canonical)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    promised = reference if by_digest else header_digest
    if promised.startswith("sha256:") and promised != digest:
        raise BlobCorrupt(f"{canonical}: manifest from {url} has digest {digest}, but "
                          f"{'was asked for' if by_digest else 'the registry says'} {promised}; "
                          "nothing was kept",
                          hint="the mirror serves different content than it promises")
    if descriptor is not None and descriptor.get("size") not in (None, len(data)):
        raise BlobCorrupt(f"{canonical}: manifest {digest} from {url} has {len(data)} bytes, "
                          f"its descriptor says {descriptor.get('size')}")
    media_type = _media_type(ctype, (descriptor or {}).get("mediaType", ""), data, canonical,
                             digest)
    if not cache.has(digest):
        with cache.writer(digest, f"{canonical} manifest from {url}") as out:
            out.write(data)
    return data, media_type, digest


def _media_type(ctype: str, hint: str, data: bytes, canonical: str, digest: str) -> str:
    """The manifest's type: Content-Type, else the descriptor's, else its own mediaType
    field (which, when present, must agree: distribution-spec, pulling manifests)."""
    body = _json(data, canonical, digest)
    declared = body.get("mediaType")
    if not isinstance(declared, str):
        declared = ""
    known = INDEXES + MANIFESTS
    chosen = next((t for t in (ctype, hint) if t in known), "")
    if "prettyjws" in ctype or body.get("schemaVersion") == 1:
        raise ManifestError(f"{canonical}: {digest} is a Docker schema 1 manifest",
                            hint="schema 1 is deprecated; use a mirror that serves schema 2/OCI")
    if chosen and declared and declared != chosen:
        raise ManifestError(f"{canonical}: manifest {digest} says mediaType {declared!r} but "
                            f"was served as {chosen!r}")
    chosen = chosen or declared
    if not chosen:
        chosen = OCI_INDEX if "manifests" in body else OCI_MANIFEST if "config" in body else ""
    if chosen not in known:
        raise ManifestError(f"{canonical}: manifest {digest} has unsupported type "
                            f"{ctype or declared or 'unknown'!r}")
    return chosen


# --------------------------------------------------------------------------- blobs


class _Sink:
    """What a blob download writes into: the cache writer (which checks the digest at the end),
    and for layers an inflater hashing the uncompressed tar against the config's diff ID."""

    def __init__(self, writer: Any, media_type: str = "", diff_id: str = "") -> None:
        self._writer = writer
        self._diff = hashlib.sha256() if diff_id and media_type in GZIP_LAYERS else None
        self._inflate = zlib.decompressobj(31) if self._diff is not None else None
        self.diff_id = diff_id if self._diff else ""

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        while self._inflate is not None and self._diff is not None and data:
            self._diff.update(self._inflate.decompress(data))
            data = b""
            if self._inflate.eof:  # a multi-member gzip (pigz): go on with the next member
                data = self._inflate.unused_data
                self._inflate = zlib.decompressobj(31) if data else self._inflate

    def uncompressed_digest(self) -> str:
        if self._diff is None or self._inflate is None:
            return ""
        try:
            self._diff.update(self._inflate.flush())
        except zlib.error:
            return "not a gzip stream"
        return "sha256:" + self._diff.hexdigest()


def _fetch_blob(resolved: _Resolved, desc: Dict[str, Any], cache: Cache, diff_id: str,
                progress: Optional[Callable[[int], None]],
                fill: Optional[Callable[[Any], None]] = None) -> None:
    """Fetch a blob into the cache, checked against its digest and (layers) diff ID; `fill`,
    when given, puts its bytes into the sink instead of one download (a Split)."""
    digest, size = desc["digest"], desc["size"]
    canonical = str(resolved.image)
    url = resolved.pull.blob_url(digest)
    try:
        with cache.writer(digest, f"{canonical}: blob {digest} from {url}") as writer:
            sink = _Sink(writer, desc.get("mediaType", ""), diff_id)
            try:
                if fill is None:
                    resolved.endpoint.blob(resolved.pull.repository, digest, size, sink,
                                           canonical, progress)
                else:
                    fill(sink)
                got = sink.uncompressed_digest()
            except zlib.error as exc:
                got = f"not a gzip stream ({exc})"
            if sink.diff_id and got != sink.diff_id and writer.hash.hexdigest() == digest[7:]:
                raise BlobCorrupt(f"{canonical}: layer {digest} from {url} uncompresses to "
                                  f"{got}, but the image config says {sink.diff_id}; nothing "
                                  "was kept", hint="the image on the mirror is inconsistent")
    except DigestMismatch as exc:
        raise BlobCorrupt(
            f"{canonical}: blob {digest} is corrupt: {exc.message}; nothing was kept",
            hint="the mirror serves different content than the image's manifest promises; "
                 "try again or use another mirror") from exc


def _small_blob(endpoint: Endpoint, pull: PullRef, desc: Dict[str, Any], canonical: str,
                cache: Cache) -> bytes:
    digest = desc["digest"]
    if not cache.has(digest):
        placeholder = _Resolved(pull.image, pull, endpoint, "", "", "", (), (), digest)
        _fetch_blob(placeholder, desc, cache, "", None)
    return cache.path(digest).read_bytes()


def _download_layers(pool: ThreadPoolExecutor, resolved: List[_Resolved], cache: Cache,
                     progress: Optional[Progress], workers: int = 1) -> None:
    """Every missing layer, on `workers` connections. One connection's throughput is bounded
    by the link's loss and round trip (TCP), whatever the link's rate, so a big layer fetched
    whole would finish long after the others: layers bigger than a connection's share of the
    whole are fetched as byte ranges in parallel (Split), and the biggest pieces start
    first."""
    todo: Dict[str, Tuple[_Resolved, Dict[str, Any], str]] = {}
    for r in resolved:
        for desc, diff_id in zip(r.layers, r.diff_ids):
            if desc["digest"] not in todo and not cache.has(desc["digest"]):
                todo[desc["digest"]] = (r, desc, diff_id)
    total = sum(desc["size"] for _, desc, _ in todo.values())
    report: Optional[Callable[[int], None]] = None
    if progress is not None:
        lock = threading.Lock()
        progress(0, total)

        def report(n: int) -> None:
            with lock:
                progress(n, total)

    share = -(-total // (2 * max(1, workers)))  # two pieces per connection balance well
    # (bytes, job, the Split whose range it fetches, that range, the blob's digest)
    jobs: List[Tuple[int, Callable[[], None], Optional[Split], int, str]] = []
    splits: List[Split] = []
    for r, d, diff in todo.values():
        ranges = part_ranges(d["size"], share, workers)
        if len(ranges) == 1:
            jobs.append((d["size"], partial(_fetch_blob, r, d, cache, diff, report), None, 0,
                         d["digest"]))
            continue
        split = Split(r, d, diff, ranges)
        splits.append(split)
        jobs.append((d["size"], partial(_fetch_blob, r, d, cache, diff, report,
                                        partial(split.lead, progress=report)), None, 0,
                     d["digest"]))
        jobs += [(stop - start, partial(fetch_range, split, index, cache, report), split, index,
                  d["digest"]) for index, (start, stop) in enumerate(ranges) if index]
    # biggest first, so that the longest download does not start last (a lead counts as its
    # whole blob: it starts before its other ranges)
    jobs.sort(key=lambda job: -job[0])
    futures: List[Future] = []
    try:
        for _, job, split_of, index, _ in jobs:
            futures.append(pool.submit(job))
            if split_of is not None:
                split_of.futures[index - 1] = futures[-1]
    finally:
        for split in splits:
            split.submitted.set()
    try:
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:
            for future in pending:
                future.cancel()
            wait(pending)
    finally:
        for split in splits:  # after a failure, the parts already fetched
            split.close()
    # one error per blob: a lead fails with its failed range's error, or its own
    first: Dict[str, BaseException] = {}
    for future, (_, _, _, _, digest) in zip(futures, jobs):
        error = None if future.cancelled() else future.exception()
        if error is not None:
            first.setdefault(digest, error)
    _raise(list(first.values()), "blobs")


def _record(r: _Resolved) -> PulledImage:
    return PulledImage(
        reference=f"{r.image.registry}/{r.image.repository}:{r.image.tag}",
        platform=r.platform,
        manifest_digest=r.manifest_digest,
        manifest_media_type=r.manifest_media_type,
        config_digest=r.config_digest,
        layer_digests=tuple(d["digest"] for d in r.layers),
        layer_media_types=tuple(d.get("mediaType", "") for d in r.layers),
        layer_sizes=tuple(d["size"] for d in r.layers),
        source=f"{r.pull.mirror.url}/{r.pull.repository}",
    )
