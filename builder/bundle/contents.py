"""Read a built bundle's contents on the workstation, for `kubecrate lint` and `inspect`.

    with open_bundle(path) as contents:
        contents.sections.roles, contents.images(), contents.packages()

The bundle is read in place with tarfile (nothing is extracted into the working tree); the
image archive is copied to a temporary file only because installer/format/imagearchive.py reads a
path. Signature checks are `kubecrate verify`'s job; pass a key to `open_bundle` to run them
first.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from builder.errors import BuildError
from builder.rpm.metadata import Package, iter_packages
from builder.rpm.repodata import parse_repomd
from installer.format import bundle as bundlemod
from installer.format import delta as deltamod
from installer.format.bundleinfo import REPO, BundleSections, read_sections
from installer.format.errors import VerificationError
from installer.format.imagearchive import ArchivedImage, list_images
from installer.format.manifest import MANIFEST_NAME, BundleManifest, parse_manifest

__all__ = ["BundleContents", "open_bundle"]


class BundleContents:
    """bundle.json, the member list, and readers for the image archive and the repo."""

    def __init__(self, path: Path, tar: tarfile.TarFile, scratch: Path) -> None:
        self.path = path
        self._tar = tar
        self._scratch = scratch
        self.members = {m.name: m for m in tar.getmembers() if m.isfile()}
        if MANIFEST_NAME not in self.members:
            raise BuildError(f"{path}: no {MANIFEST_NAME}: not a kubecrate bundle")
        try:
            self.manifest: Dict[str, Any] = json.loads(self.read(MANIFEST_NAME))
        except ValueError as err:
            raise BuildError(f"{path}: {MANIFEST_NAME} is not JSON ({err})") from None
        if not isinstance(self.manifest, dict):
            raise BuildError(f"{path}: {MANIFEST_NAME} is not a JSON object")
        self.delta: Optional[deltamod.DeltaPlan] = None
        self.result_manifest: Optional[BundleManifest] = None
        described = self.manifest
        if deltamod.DELTA_KEY in self.manifest:
            # A delta: its own files are the pieces; what it describes is the result's
            # bundle.json, which it carries (installer/format/delta.py).
            try:
                self.delta = deltamod.read_plan(parse_manifest(self.read(MANIFEST_NAME)))
                if deltamod.RESULT_MANIFEST not in self.members:
                    raise BuildError(f"{path}: a delta without {deltamod.RESULT_MANIFEST}")
                self.result_manifest = parse_manifest(self.read(deltamod.RESULT_MANIFEST),
                                                      deltamod.RESULT_MANIFEST)
            except VerificationError as err:
                raise BuildError(f"{path}: {err.message}") from None
            described = self.result_manifest.data
        self.sections: BundleSections = read_sections(described, f"{path}: {MANIFEST_NAME}")
        self._images: Optional[List[ArchivedImage]] = None

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    def delta_problems(self) -> List[str]:
        """For a delta: where its plan, its members and the result's bundle.json disagree."""
        plan, result = self.delta, self.result_manifest
        if plan is None or result is None:
            return []
        problems = []
        try:
            deltamod.check_result(plan, result)
        except VerificationError as err:
            problems.append(err.message)
        for item in plan.files:
            needed = item.path if item.source == "delta" else item.pieces
            if needed and needed not in self.members:
                problems.append(f"{item.path}: the plan takes it from the delta's {needed}, "
                                "which the delta lacks")
        if deltamod.RESULT_SIGNATURE not in self.members:
            problems.append(f"the delta lacks {deltamod.RESULT_SIGNATURE}, the result's "
                            "signature")
        return problems

    def read(self, member: str) -> bytes:
        handle = self._tar.extractfile(self.members[member])
        assert handle is not None
        with handle:
            return handle.read()

    def archive_path(self) -> Optional[Path]:
        """The image archive copied out to a temporary file, or None when the bundle has
        none."""
        member = self.sections.image_archive
        if member not in self.members:
            return None
        target = self._scratch / "images.tar"
        if not target.exists():
            handle = self._tar.extractfile(self.members[member])
            assert handle is not None
            with handle, open(target, "wb") as out:
                shutil.copyfileobj(handle, out, 1 << 20)
        return target

    def images(self) -> List[ArchivedImage]:
        """The images the archive's index.json and manifest.json name."""
        if self._images is None:
            path = self.archive_path()
            self._images = list_images(str(path)) if path else []
        return self._images

    def archive_blobs(self) -> set:
        """Hex digests of the blobs the archive actually holds."""
        path = self.archive_path()
        if path is None:
            return set()
        with tarfile.open(path) as archive:
            return {m.name.rsplit("/", 1)[-1] for m in archive.getmembers()
                    if m.isfile() and m.name.startswith("blobs/sha256/")}

    def packages(self) -> List[Package]:
        """The packages the bundle repo's primary.xml lists."""
        repo = self.sections.repo.path if self.sections.repo else REPO
        repomd_name = f"{repo}/repodata/repomd.xml"
        if repomd_name not in self.members:
            return []
        repomd = parse_repomd(self.read(repomd_name), "bundle")
        entry = repomd.files.get("primary")
        if entry is None or f"{repo}/{entry.href}" not in self.members:
            raise BuildError(f"{self.path}: {repomd_name} names no primary.xml the bundle holds")
        target = self._scratch / "primary.xml.gz"
        target.write_bytes(self.read(f"{repo}/{entry.href}"))
        with gzip.open(target, "rb") as stream:
            return list(iter_packages(stream, "bundle", f"{self.path}: primary.xml"))

    def size_by_section(self) -> Dict[str, int]:
        sizes: Dict[str, int] = {}
        for name, member in self.members.items():
            top = name.split("/", 1)[0] if "/" in name else name
            sizes[top] = sizes.get(top, 0) + member.size
        return dict(sorted(sizes.items()))


@contextlib.contextmanager
def open_bundle(path: Path, key: Any = None) -> Iterator[BundleContents]:
    """Open bundle `path` for reading; with `key` (a minisig.PublicKey) its signature and
    every member are verified first, exactly as hosts do."""
    path = Path(path)
    if key is not None:
        bundlemod.verify(str(path), key)
    try:
        tar = tarfile.open(path)
    except (OSError, tarfile.TarError) as err:
        raise BuildError(f"cannot read {path}: {err}") from None
    scratch = Path(tempfile.mkdtemp(prefix="kubecrate-read-"))
    try:
        with tar:
            yield BundleContents(path, tar, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
