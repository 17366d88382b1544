"""ServedSource: the bundle a joining node fetches from the first control-plane node's bundle
server (installer/bundlefetch.py) instead of a copied tar: `install --join join.yaml` without
--bundle, and `fetch-bundle`.

It is checked exactly as a copied cache folder is (installer/source.py CacheSource, the same
bundlecache functions): the bundle's own signature, fetched beside it, must name bundle.json's
SHA-256 under the installer's key (and join.yaml's `bundle`), then every file is hashed while
it streams into a staging folder beside the cache, which only a complete, checked bundle
leaves (renamed into the cache). A file whose bytes do not hash as bundle.json says is
refused; it is fetched again up to ATTEMPTS times, then the run stops with exit 3 naming it.

`omit` (install on a worker that pulls every image from the control planes' registry,
installer/session.py) names what a first fetch leaves out: the image archive, never copied to
that worker; the cache folder then says so (bundlecache.OMITTED_NAME).
"""

import contextlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.parse
from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

from installer import bundlecache, joinfile
from installer.bundlefetch import BUNDLE_PATH, Fetcher, Unreachable
from installer.format import bundle as bundlemod
from installer.format import minisig
from installer.format.errors import KubecrateError, PreconditionError, VerificationError
from installer.format.manifest import MANIFEST_NAME, MAX_MANIFEST_SIZE, FileEntry, parse_manifest
from installer.source import BundleSource, CacheSource, View, _filled

log = logging.getLogger(__name__)

ATTEMPTS = 3  # per file: a damaged or broken transfer is fetched again this often in all
RETRY_PAUSE = 1.0


Omit = Callable[[bundlemod.Bundle], List[str]]  # the bundle's files a fetch leaves out


def served_source(join: joinfile.JoinInfo, source: str = "join.yaml",
                  omit: Optional[Omit] = None) -> "ServedSource":
    """The bundle server join.yaml names, or a UsageError saying what to pass instead."""
    if not join.bundle_server or not join.bundle:
        raise PreconditionError(
            "{} names no bundle server (bundle_server) or no bundle, so the bundle cannot be "
            "fetched from the first control-plane node".format(source),
            hint="pass --bundle X.tar (copy the bundle here), or write a fresh join.yaml with "
                 "`kubecrate-installer.pyz join-info` on the first control-plane node")
    return ServedSource(join, omit=omit)


class ServedSource(BundleSource):
    kind = "bundle server"

    def __init__(self, join: joinfile.JoinInfo, fetcher: Optional[Fetcher] = None,
                 omit: Optional[Omit] = None) -> None:
        server = str(join.bundle_server)
        super().__init__("https://{}/ (join.yaml's bundle_server)".format(server))
        self.join = join
        self.digest = str(join.bundle)
        self.fetcher = fetcher or Fetcher(server, join)
        self._bundle = None  # type: Optional[bundlemod.Bundle]
        self.omit = omit

    def _path(self, name: str) -> str:
        return BUNDLE_PATH.format(digest=self.digest, path=urllib.parse.quote(name))

    def _small(self, name: str, limit: int) -> bytes:
        response = self.fetcher.open(self._path(name))
        try:
            data = response.read(limit + 1)
        finally:
            response.close()
        if len(data) > limit:
            raise VerificationError("{} is larger than {} bytes".format(
                self.fetcher.url(self._path(name)), limit))
        return data

    def manifest(self, key: minisig.Trust) -> bundlemod.Bundle:
        """bundle.json, authenticated by the bundle's signature under `key`, and the bundle
        join.yaml names."""
        if self._bundle is not None:
            return self._bundle
        where = self.fetcher.url(self._path(""))
        text = self._small(bundlecache.SIGNATURE_NAME, 1 << 16).decode("utf-8", "replace")
        signature = minisig.parse_signature(text, where + bundlecache.SIGNATURE_NAME)
        raw = self._small(MANIFEST_NAME, MAX_MANIFEST_SIZE)
        digest = bundlecache.authenticate_manifest(raw, key, signature, where)
        if digest != self.digest:
            raise VerificationError("{} serves bundle.json {}, not join.yaml's bundle {}".format(
                where, digest, self.digest))
        self._bundle = bundlemod.Bundle(where, parse_manifest(raw), digest, raw, b"", signature)
        return self._bundle

    def _fetch_into(self, folder: str, spec: FileEntry) -> None:
        """One file into `folder`, hashed as it streams; fetched again after a refused or
        broken transfer, ATTEMPTS times in all."""
        path, sha256, mode = spec.path, spec.sha256, spec.mode
        target = os.path.join(folder, path)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self.fetcher.open(self._path(path))
                try:
                    with bundlemod.create_file(folder, path, mode) as out:
                        bundlecache.copy_stream_verified(response, sha256, out, path,
                                                         self.fetcher.url(self._path(path)))
                finally:
                    response.close()
                return
            except (VerificationError, Unreachable, OSError, http.client.HTTPException) as err:
                if os.path.lexists(target):
                    os.unlink(target)
                message = err.message if isinstance(err, KubecrateError) else str(err)
                if attempt == ATTEMPTS:
                    raise _refused(self.fetcher.url(self._path(path)), message, err)
                log.warning("%s: transfer %d of %d refused (%s); fetching it again", path,
                            attempt, ATTEMPTS, message)
                time.sleep(RETRY_PAUSE * attempt)

    def _cached(self, key: minisig.Trust, root: str) -> Optional[str]:
        folder = bundlecache.folder_for(root, self.digest)
        return folder if os.path.lexists(folder) else None

    def verify(self, key, progress=None):
        with self.view(key, tempfile.gettempdir(), lambda path: True) as view:
            return view.bundle

    @contextlib.contextmanager
    def view(self, key, root, wanted):
        cached = self._cached(key, root)
        if cached is not None:
            with CacheSource(cached).view(key, root, wanted) as view:
                yield view
            return
        checked = self.manifest(key)
        scratch = tempfile.mkdtemp(prefix="kubecrate-fetch-")
        try:
            for spec in checked.manifest.files:
                if wanted(spec.path):
                    self._fetch_into(scratch, spec)
            with open(os.path.join(scratch, MANIFEST_NAME), "wb") as out:
                out.write(checked.manifest_raw)
            yield View(checked._replace(path=scratch), scratch, False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def stage(self, key, root, progress=None):
        bundlecache.remove_stale(bundlecache.cache_root(root))
        cached = self._cached(key, root)
        if cached is not None:
            return CacheSource(cached).stage(key, root, progress)
        checked = self.manifest(key)
        say = progress or (lambda count: None)
        left_out = self._left_out(checked)

        def fill(folder: str) -> None:
            for spec in checked.manifest.files:
                if spec.path not in left_out:
                    self._fetch_into(folder, spec)
                    say(spec.size)

        log.info("fetching bundle %s (%d files) from %s", self.digest,
                 len(checked.manifest.files) - len(left_out), self.join.bundle_server)
        for path in left_out:
            log.info("not fetching %s: this worker pulls every image from the control planes' "
                     "registry (images.mode: registry)", path)
        return _filled(root, checked, fill, left_out)

    def _left_out(self, bundle: bundlemod.Bundle) -> List[str]:
        return sorted(self.omit(bundle)) if self.omit else []

    def size(self):
        if self._bundle is None:
            return None
        left_out = self._left_out(self._bundle)
        return sum(spec.size for spec in self._bundle.manifest.files
                   if spec.path not in left_out)


def _refused(url: str, message: str, err: Exception) -> KubecrateError:
    """The last attempt's error, naming the URL and what to do."""
    if isinstance(err, VerificationError):
        return VerificationError(
            "{}: refused {} times, the bytes are not the signed ones: {}".format(
                url, ATTEMPTS, message),
            hint="nothing was written to the bundle cache; check the first control-plane "
                 "node's bundle cache (`kubecrate-installer.pyz verify` its cache folder) and "
                 "the network between the nodes, or copy the bundle tar here and pass --bundle")
    if isinstance(err, KubecrateError):
        return type(err)("{} (tried {} times)".format(message, ATTEMPTS), err.hint)
    return PreconditionError("{}: {} (tried {} times)".format(url, message, ATTEMPTS),
                             hint="check the network to the first control-plane node, or copy "
                                  "the bundle tar here and pass --bundle")



VIEW_SUFFIX = ".preflight.tar"  # <digest>.preflight.tar, written by `fleet export`
MAX_VIEW = 256 << 20


class PreflightView(BundleSource):
    """`<digest>.preflight.tar` (`fleet export` writes it): a plain tar of one folder named by
    the bundle.json digest holding bundle.json, the bundle's signature and the files preflight
    reads (wanted_for_preflight), one file to copy to each joining node. Extracted into a
    scratch folder (plain files and folders only, nothing outside it) and checked like a cache
    folder, except that files may be missing; unlisted ones are never read. preflight and plan
    read it; install refuses it (a joining node fetches the bundle with --join)."""

    kind = "preflight view"

    @contextlib.contextmanager
    def _opened(self, key: minisig.Trust) -> Iterator[Tuple[bundlemod.Bundle, str, Set[str]]]:
        scratch = tempfile.mkdtemp(prefix="kubecrate-view-")
        try:
            folder = _extract_view(self.location, scratch)
            checked = bundlecache.load_cached(folder, key)
            present = set()
            for spec in checked.manifest.files:
                path = os.path.join(folder, spec.path)
                if os.path.lexists(path):
                    bundlecache.read_verified(path, spec.sha256, spec.path)
                    present.add(spec.path)
            yield checked, folder, present
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def verify(self, key, progress=None):
        with self._opened(key) as (checked, _folder, _present):
            return checked._replace(path=self.location)

    @contextlib.contextmanager
    def view(self, key, root, wanted):
        with self._opened(key) as (checked, folder, present):
            cached = bundlecache.folder_for(root, checked.manifest_sha256)
            if os.path.lexists(cached):
                with CacheSource(cached).view(key, root, wanted) as view:
                    yield view
                return
            missing = [spec.path for spec in checked.manifest.files
                       if wanted(spec.path) and spec.path not in present]
            if missing:
                raise VerificationError("{} lacks {} file(s) preflight reads, e.g. {}".format(
                    self.location, len(missing), missing[0]),
                    hint="export the fleet project again (`fleet export`), or pass the "
                         "bundle tar")
            yield View(checked, folder, False)

    def stage(self, key, root, progress=None):
        raise PreconditionError(
            "{} holds only what preflight reads, not the bundle: install needs the bundle tar "
            "(--bundle X.tar) or, on a joining node, --join join.yaml alone (the bundle is "
            "then fetched from the first control-plane node)".format(self.location))


def is_view(location: str) -> bool:
    return location.endswith(VIEW_SUFFIX) and os.path.isfile(location)


def _extract_view(path: str, scratch: str) -> str:
    """The one folder of the view tar `path`, extracted under `scratch`; anything but plain
    files and folders inside that folder is refused."""
    top = None  # type: Optional[str]
    total = 0
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                parts = member.name.split("/")
                top = top or parts[0]
                total += member.size
                if member.name.startswith("/") or ".." in parts or parts[0] != top or \
                        not (member.isfile() or member.isdir()) or total > MAX_VIEW:
                    raise VerificationError("{}: member {!r} is not a plain file or folder "
                                            "inside its one folder".format(path, member.name),
                                            hint="export the fleet project again")
                if member.isdir():
                    os.makedirs(os.path.join(scratch, member.name), exist_ok=True)
                    continue
                stream = tar.extractfile(member)
                if stream is None:  # pragma: no cover - isfile() members always have one
                    raise VerificationError("{}: cannot read {}".format(path, member.name))
                with bundlemod.create_file(scratch, member.name, 0o644) as out:
                    shutil.copyfileobj(stream, out)
    except (tarfile.TarError, OSError) as err:
        raise VerificationError("{}: not a readable preflight view: {}".format(path, err),
                                hint="export the fleet project again")
    if top is None:
        raise VerificationError("{} is empty".format(path), hint="export the fleet project again")
    return os.path.join(scratch, top)


def write_view(bundle_path: str, key: minisig.Trust, out: str) -> str:
    """The PreflightView of the bundle tar `bundle_path` (read and checked in full) as
    out/<digest>.preflight.tar, replaced atomically; returns its path."""
    from installer.atomic import replace_file
    from installer.format.bundleinfo import wanted_for_preflight
    from installer.source import TarSource

    os.makedirs(out, exist_ok=True)
    with TarSource(bundle_path).view(key, "/nonexistent-root", wanted_for_preflight) as view:
        digest = view.bundle.manifest_sha256
        with open(os.path.join(view.directory, bundlecache.SIGNATURE_NAME), "wb") as handle:
            handle.write(view.bundle.signature.to_file_text().encode("utf-8"))

        def fill(handle: Any) -> None:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(view.directory, arcname=digest)

        final = os.path.join(out, digest + VIEW_SUFFIX)
        replace_file(final, fill, 0o644)
    return final
