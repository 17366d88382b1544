"""What `--bundle` (and `verify`/`unpack`'s BUNDLE) names: a bundle source.

Every kind answers the same three questions, so the commands never ask which kind they got:
  verify(key)            -> the checked Bundle, writing nothing (`verify`);
  view(key, root)        -> a folder holding at least bundle.json, the repo metadata and the
                            vendor keys, checked, written outside `root` (`preflight`, `plan`,
                            `install --dry-run`);
  stage(key, root)       -> a Staged bundle: the complete, checked folder, either already the
                            cache folder or a staging folder beside it that commit() renames
                            into the cache (`unpack`, `install`).
Kinds today: TarSource (X.tar with X.tar.minisig, read exactly once), PartsSource (the same
tar split into parts for removable media, streamed part by part), DeltaSource (a delta tar,
assembled with its base's cache folder; installer/format/delta.py) and CacheSource (a cache
folder, /var/lib/kubecrate/bundles/<digest>, checked with its kept signature). A later kind (a
URL on the first control plane) is one more subclass whose stage() fills a Staging folder with
checked bytes; docs/bundle-format.md says how the .pyz's sh preamble finds the python3 RPMs in
each kind.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

from installer import bundlecache
from installer.format import bundle as bundlemod
from installer.format import delta as deltamod
from installer.format import minisig, parts
from installer.format.errors import PreconditionError, UsageError, VerificationError
from installer.format.manifest import MANIFEST_NAME, parse_manifest

Wanted = Callable[[str], bool]  # which bundle paths a view needs


class View(NamedTuple):
    bundle: bundlemod.Bundle
    directory: str
    cached: bool  # directory is the complete cache folder under the root


class Staged:
    """A complete, checked bundle folder; `directory` is usable now, commit() puts it into the
    cache (a no-op when it already is there), discard() forgets a staging folder."""

    def __init__(self, bundle: bundlemod.Bundle, directory: str,
                 staging: Optional[bundlecache.Staging] = None,
                 keep: Optional[minisig.Signature] = None) -> None:
        self.bundle = bundle
        self.directory = directory
        self._staging = staging
        self._keep = keep  # a signature the cache folder lacks (unpacked by an older installer)

    @property
    def in_cache(self) -> bool:
        return self._staging is None

    def pending(self) -> bool:
        """True while commit() has something to write."""
        return self._staging is not None or (
            self._keep is not None
            and not os.path.exists(os.path.join(self.directory, bundlecache.SIGNATURE_NAME)))

    def commit(self) -> str:
        if self._staging is not None:
            self.directory = self._staging.commit(self.bundle.manifest_sha256)
            self._staging = None
        elif self._keep is not None and self.pending():
            _keep_signature(self.directory, self._keep)
        return self.directory

    def discard(self) -> None:
        if self._staging is not None:
            self._staging.discard()
            self._staging = None


class BundleSource:
    """Base of the kinds; `location` is what the user gave."""

    kind = ""

    def __init__(self, location: str) -> None:
        self.location = location

    def verify(self, key: minisig.Trust, progress: bundlemod.Progress = None
               ) -> bundlemod.Bundle:
        raise NotImplementedError

    def view(self, key: minisig.Trust, root: str, wanted: Wanted
             ) -> "contextlib.AbstractContextManager[View]":
        raise NotImplementedError

    def stage(self, key: minisig.Trust, root: str, progress: bundlemod.Progress = None
              ) -> Staged:
        raise NotImplementedError

    def size(self) -> Optional[int]:
        """Bytes verify() or stage() read, for a progress bar; None when unknown."""
        return None

    def signed_manifest(self, key: minisig.Trust) -> Optional[bundlemod.Bundle]:
        """bundle.json alone, authenticated by the signature under `key` without reading the
        files it lists, so a command can refuse the bundle for what it is (another release)
        in a second; None when this kind cannot tell it that cheaply. Its files are checked
        only by verify(), view() or stage()."""
        return None


def _cached_in_root(key: minisig.Trust, root: str, manifest_sha256: str,
                    signature: minisig.Signature) -> Optional[bundlemod.Bundle]:
    """The root's cache folder for this bundle, checked, or None when there is none."""
    folder = bundlecache.folder_for(root, manifest_sha256)
    if not os.path.lexists(folder):
        return None
    return bundlecache.verified_cache(folder, key, signature)


class TarSource(BundleSource):
    kind = "tar"

    def __init__(self, location: str, signature_path: Optional[str] = None) -> None:
        super().__init__(location)
        self.signature_path = signature_path or bundlemod.signature_path_for(location)

    def _signature(self, key: minisig.Trust) -> minisig.Signature:
        signature = minisig.load_signature(self.signature_path)
        minisig.check_comment(key, signature, self.location)
        return signature

    def size(self) -> Optional[int]:
        try:
            return os.path.getsize(self.location)
        except OSError:
            return None

    def _opener(self, key: minisig.Trust) -> Optional[Callable[[str], Any]]:
        return None  # the file itself

    def _walk(self, key, signature, sink, progress=None):
        return bundlemod.walk(self.location, key, signature, sink, progress,
                              opener=self._opener(key))

    def verify(self, key, progress=None):
        return self._walk(key, self._signature(key), lambda spec: None, progress)

    def signed_manifest(self, key):
        """The tar's first member, bundle.json, when the trusted comment names its digest."""
        return bundlemod.signed_manifest(self.location, key, self._signature(key),
                                         self._opener(key))

    @contextlib.contextmanager
    def view(self, key, root, wanted):
        signature = self._signature(key)
        claimed = bundlemod.claimed_manifest_sha256(signature)
        cached = _cached_in_root(key, root, claimed, signature) if claimed else None
        if cached is not None:
            yield View(cached, cached.path, True)
            return
        scratch = tempfile.mkdtemp(prefix="kubecrate-preflight-")
        try:
            def sink(spec):
                return bundlemod.create_file(scratch, spec.path, spec.mode) \
                    if wanted(spec.path) else None

            checked = self._walk(key, signature, sink)
            with open(os.path.join(scratch, MANIFEST_NAME), "wb") as out:
                out.write(checked.manifest_raw)
            yield View(checked, scratch, False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def stage(self, key, root, progress=None):
        bundlecache.remove_stale(bundlecache.cache_root(root))
        signature = self._signature(key)
        claimed = bundlemod.claimed_manifest_sha256(signature)
        cached = _cached_in_root(key, root, claimed, signature) if claimed else None
        if cached is not None:
            return Staged(cached, cached.path, keep=signature)
        staging = bundlecache.Staging(root)
        try:
            checked = self._walk(
                key, signature,
                lambda spec: bundlemod.create_file(staging.path, spec.path, spec.mode),
                progress)
            final = bundlecache.folder_for(root, checked.manifest_sha256)
            if os.path.lexists(final):  # stock-signed: the cache was found by bundle.json
                staging.discard()
                bundlecache.verified_cache(final, key, signature, checked)
                return Staged(checked, final, keep=signature)
            staging.write(MANIFEST_NAME, checked.manifest_raw)
            staging.write(bundlecache.SIGNATURE_NAME, signature.to_file_text().encode("utf-8"))
        except BaseException:
            staging.discard()
            raise
        return Staged(checked, staging.path, staging)


class PartsSource(TarSource):
    """A bundle split for removable media (`kubecrate split`): the signed index X.tar.parts
    (or any part, which names it), the parts beside it and the bundle's X.tar.minisig. The
    parts are read in order as one stream, each checked against the index as its last byte
    passes (installer/format/parts.py); nothing is joined on disk."""

    kind = "split bundle"

    def __init__(self, location: str, signature_path: Optional[str] = None) -> None:
        super().__init__(parts.index_for(location), signature_path)
        self._index = None  # type: Optional[parts.PartsIndex]

    def _parts(self, key: minisig.Trust) -> "parts.PartsIndex":
        if self._index is None:
            self._index = parts.load_index(self.location, key)
            if self.signature_path == bundlemod.signature_path_for(self.location):
                self.signature_path = self._index.signature_path
        return self._index

    def _signature(self, key: minisig.Trust) -> minisig.Signature:
        self._parts(key)
        signature = super()._signature(key)
        if deltamod.base_named(signature.comment_fields()):
            raise UsageError("{} splits a delta bundle, which `kubecrate split` refuses: copy "
                             "the delta tar whole".format(self.location))
        return signature

    def _opener(self, key):
        index = self._parts(key)
        return lambda _path: parts.PartsReader(index)

    def size(self) -> Optional[int]:
        try:
            with open(self.location, "rb") as handle:
                return int(json.loads(handle.read(parts.MAX_INDEX).decode("utf-8"))["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class DeltaSource(TarSource):
    """A delta bundle (`kubecrate build --base OLD.tar`): a signed tar whose trusted comment
    names its base by bundle.json digest. The delta is checked as a tar into a scratch folder,
    then the result is assembled from it and the base's cache folder into a staging folder,
    every file hashed against the result's bundle.json (installer/format/delta.py); only a
    complete, checked result is renamed into the cache, as for a full bundle."""

    kind = "delta bundle"
    _checked = None  # type: Optional[bundlemod.Bundle]

    def signed_manifest(self, key):
        return None  # the result's bundle.json is somewhere in the (small) delta tar

    def _base(self, key: minisig.Trust) -> str:
        base = deltamod.base_named(self._signature(key).comment_fields())
        if not base:
            raise VerificationError("{}: not a delta bundle".format(self.location))
        return base

    def _missing_base(self, root: str, base: str, plan: "Optional[deltamod.DeltaPlan]"
                      ) -> PreconditionError:
        folder = bundlecache.folder_for(root, base)
        name = plan.base_name if plan else "the base bundle"
        return PreconditionError(
            "{} is a delta: it needs its base bundle {} (bundle.json sha256 {}) in this host's "
            "cache, and {} is not there".format(self.location, name, base, folder),
            hint="copy the base bundle {0}.tar and {0}.tar.minisig here and run `unpack "
                 "{0}.tar` (or copy its cache folder {1} from a host that has it), then run "
                 "this again; or use the full bundle instead of the delta".format(name, base))

    def _result(self, key: minisig.Trust, scratch: str
                ) -> "Tuple[bundlemod.Bundle, deltamod.DeltaPlan, bundlemod.Bundle]":
        """The delta (already walked into `scratch`), its plan and the result bundle's
        bundle.json, authenticated by the result's own signature that the delta carries."""
        checked = self._checked
        if checked is None:
            raise VerificationError("{}: not read yet".format(self.location))
        plan = deltamod.read_plan(checked.manifest)
        if plan is None:
            raise VerificationError("{}: its signature names a base but its bundle.json has "
                                    "no delta section".format(self.location))
        if plan.base_sha256 != self._base(key):
            raise VerificationError("{}: bundle.json's delta.base differs from the base its "
                                    "signature names".format(self.location))
        with open(os.path.join(scratch, deltamod.RESULT_MANIFEST), "rb") as handle:
            raw = handle.read()
        signature = minisig.load_signature(os.path.join(scratch, deltamod.RESULT_SIGNATURE))
        minisig.check_comment(key, signature, deltamod.RESULT_SIGNATURE)
        digest = hashlib.sha256(raw).hexdigest()
        claimed = bundlemod.claimed_manifest_sha256(signature)
        if digest != plan.result_sha256 or claimed != digest:
            raise VerificationError(
                "{}: the result's bundle.json has sha256 {}, but the delta names {} and the "
                "result's signature {}".format(self.location, digest, plan.result_sha256,
                                               claimed))
        result = bundlemod.Bundle(self.location, parse_manifest(raw, deltamod.RESULT_MANIFEST),
                                  digest, raw, b"", signature)
        deltamod.check_result(plan, result.manifest)
        return checked, plan, result

    def _walk_into(self, key: minisig.Trust, folder: str,
                   progress: bundlemod.Progress = None) -> None:
        self._checked = self._walk(
            key, self._signature(key),
            lambda spec: bundlemod.create_file(folder, spec.path, spec.mode), progress)

    def _base_bundle(self, key: minisig.Trust, root: str, plan: "deltamod.DeltaPlan"
                     ) -> "Tuple[str, bundlemod.Bundle]":
        folder = bundlecache.folder_for(root, plan.base_sha256)
        if not os.path.isdir(folder):
            raise self._missing_base(root, plan.base_sha256, plan)
        return folder, bundlecache.load_cached(folder, key)

    @contextlib.contextmanager
    def view(self, key, root, wanted):
        scratch = tempfile.mkdtemp(prefix="kubecrate-delta-")
        try:
            self._walk_into(key, os.path.join(scratch, "delta"))
            _checked, plan, result = self._result(key, os.path.join(scratch, "delta"))
            cached = _cached_in_root(key, root, result.manifest_sha256, result.signature)
            if cached is not None:
                yield View(cached, cached.path, True)
                return
            base_dir, base_bundle = self._base_bundle(key, root, plan)
            out = os.path.join(scratch, "result")
            os.mkdir(out)
            left_out = _not_assembled(plan, base_dir, base_bundle)
            deltamod.assemble(plan, os.path.join(scratch, "delta"), base_dir,
                              base_bundle.manifest, result.manifest,
                              lambda spec: bundlemod.create_file(out, spec.path, spec.mode),
                              lambda path: wanted(path) and path not in left_out)
            with open(os.path.join(out, MANIFEST_NAME), "wb") as handle:
                handle.write(result.manifest_raw)
            yield View(result._replace(path=out), out, False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def stage(self, key, root, progress=None):
        bundlecache.remove_stale(bundlecache.cache_root(root))
        self._base(key)
        scratch = bundlecache.Staging(root)
        try:
            self._walk_into(key, scratch.path, progress)
            _checked, plan, result = self._result(key, scratch.path)
            cached = _cached_in_root(key, root, result.manifest_sha256, result.signature)
            if cached is not None:
                return Staged(cached, cached.path, keep=result.signature)
            base_dir, base_bundle = self._base_bundle(key, root, plan)
            left_out = _not_assembled(plan, base_dir, base_bundle)
            return _filled(root, result, lambda folder: deltamod.assemble(
                plan, scratch.path, base_dir, base_bundle.manifest, result.manifest,
                lambda spec: bundlemod.create_file(folder, spec.path, spec.mode),
                lambda path: path not in left_out), left_out)
        finally:
            scratch.discard()


def _not_assembled(plan: "deltamod.DeltaPlan", base_dir: str, base: bundlemod.Bundle
                   ) -> List[str]:
    """The result's files a delta builds from a base file that the base's cache folder left
    out on purpose (a registry-mode worker's image archive, bundlecache.omitted): left out of
    the result too, which that worker does not need either."""
    absent = bundlecache.omitted(base_dir, base.manifest)
    return [item.path for item in plan.files
            if item.source != "delta" and item.base_path in absent]


class CacheSource(BundleSource):
    kind = "cache folder"

    def verify(self, key, progress=None):
        return bundlecache.verified_cache(self.location, key)

    def signed_manifest(self, key):
        return bundlecache.load_cached(self.location, key)

    @contextlib.contextmanager
    def view(self, key, root, wanted):
        checked = self.verify(key)
        here = os.path.realpath(self.location) == os.path.realpath(
            bundlecache.folder_for(root, checked.manifest_sha256))
        yield View(checked, self.location, here)

    def stage(self, key, root, progress=None):
        bundlecache.remove_stale(bundlecache.cache_root(root))
        checked = self.verify(key)
        final = bundlecache.folder_for(root, checked.manifest_sha256)
        if os.path.realpath(self.location) == os.path.realpath(final):
            return Staged(checked, final)
        if os.path.lexists(final):
            return Staged(bundlecache.verified_cache(final, key), final)
        # Another root's cache (a copied folder): copied in, every byte checked while copying.
        left_out = bundlecache.omitted(self.location, checked.manifest)

        def copy(folder: str) -> None:
            for spec in checked.manifest.files:
                if spec.path in left_out:
                    continue
                with bundlemod.create_file(folder, spec.path, spec.mode) as out:
                    bundlecache.copy_verified(os.path.join(self.location, spec.path),
                                              spec.sha256, out, spec.path)

        return _filled(root, checked, copy, left_out)


def _filled(root: str, bundle: bundlemod.Bundle, fill: Callable[[str], object],
            left_out: Sequence[str] = ()) -> Staged:
    """A staging folder beside the root's cache holding what `fill(folder)` writes (every
    file checked as it is written), then bundle.json and the signature, and the files `fill`
    left out on purpose (bundlecache.OMITTED_NAME); removed on any failure."""
    staging = bundlecache.Staging(root)
    try:
        fill(staging.path)
        if left_out:
            staging.write(bundlecache.OMITTED_NAME, bundlecache.omitted_text(list(left_out)))
        staging.write(MANIFEST_NAME, bundle.manifest_raw)
        staging.write(bundlecache.SIGNATURE_NAME,
                      bundle.signature.to_file_text().encode("utf-8"))
    except BaseException:
        staging.discard()
        raise
    return Staged(bundle, staging.path, staging)


def _keep_signature(folder: str, signature: minisig.Signature) -> None:
    """A cache folder unpacked by an older installer lacks the signature: add it (atomically)."""
    from installer.atomic import replace_file

    path = os.path.join(folder, bundlecache.SIGNATURE_NAME)
    text = signature.to_file_text().encode("utf-8")
    replace_file(path, lambda out: out.write(text), 0o644)


def open_source(location: str, signature_path: Optional[str] = None) -> BundleSource:
    """The source `location` names: a cache folder, else a bundle tar (with its .minisig)."""
    from installer.servedsource import PreflightView, is_view

    if is_view(location):
        return PreflightView(location)
    if os.path.isdir(location):
        if signature_path:
            raise UsageError("--signature applies to a bundle tar, not to the cache folder "
                             "{} (it keeps its own {})".format(location,
                                                               bundlecache.SIGNATURE_NAME))
        return CacheSource(location)
    from installer.hostfiles import require_regular_file

    index = parts.index_for(location)
    if index.endswith(parts.PARTS_SUFFIX) and os.path.isfile(index):
        return PartsSource(location, signature_path)
    require_regular_file(location)
    if _names_a_base(signature_path or bundlemod.signature_path_for(location)):
        return DeltaSource(location, signature_path)
    return TarSource(location, signature_path)


def _names_a_base(signature_path: str) -> bool:
    """Whether the (not yet checked) signature's trusted comment names a delta's base: the
    DeltaSource checks it like any other before trusting a word of it. A signature that
    cannot be read is the TarSource's to report."""
    try:
        signature = minisig.load_signature(signature_path)
    except VerificationError:
        return False
    return bool(deltamod.base_named(signature.comment_fields()))
