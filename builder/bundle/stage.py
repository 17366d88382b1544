"""Stage the bundle tree from fetched pieces, and describe it for bundle.json.

    staged = stage_bundle(folder, recipe, lock, fetched, cache)
    pack(folder, out, key, name=recipe.name, metadata=staged.metadata, created=lock.created)

Layout (docs/bundle-format.md, which also lists the bundle.json sections):
  repo/                 RPMs, yum-3-readable repodata, the vendors' GPG keys
                        (builder/rpm/yumrepo.py)
  bin/                  kubeadm, kubelet, kubectl (0755), crictl-*.tar.gz, cni-plugins-*.tgz,
                        as installer/steps/binaries.py reads them
  images/images.tar     every image once, shared layers once (builder/registry/image_archive.py)
  addons/<name>/        rendered add-on manifests (builder/bundle/addons.py)
  sbom.spdx.json        the SPDX 2.3 bill of materials (builder/bundle/sbom.py)
Every timestamp inside comes from the lock's `created`, so the same lock gives the same tree.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, NamedTuple

from builder import __version__
from builder.binaries import KUBE_BINARIES
from builder.bundle.addons import CALICO_POD_CIDR, DEFAULT_POD_CIDR, render_addons
from builder.bundle.sbom import SBOM_PATH, render_sbom
from builder.cache import Cache, hex_of, place
from builder.fetch import Fetched
from builder.inputs.lockfile import Lock, dump_lock
from builder.inputs.recipe import PackageSpec, Recipe
from builder.registry.image_archive import bundle_images, write_archive
from builder.rpm.yumrepo import write_repo
from builder.zipapp import load_pins
from installer.format.bundleinfo import (
    IMAGE_ARCHIVE,
    REPO,
    BuiltBy,
    BundleAddon,
    BundleSections,
    ComponentBinary,
    ComponentImage,
    ComponentRpm,
    Components,
    LockOrigin,
    Repo,
    Role,
    Runtime,
    Target,
)

__all__ = ["Staged", "install_spec", "stage_bundle"]


class Staged(NamedTuple):
    metadata: Dict[str, Any]  # bundle.json sections besides pack's own
    sections: Dict[str, int]  # bytes per top-level folder
    counts: Dict[str, int]  # rpms, binaries, images, addons
    digests: Dict[str, str] = {}  # relpath -> sha256 already known (cache files, the archive)
    modes: Dict[str, int] = {}  # relpath -> mode in the bundle, for files linked from the cache


def install_spec(spec: PackageSpec) -> str:
    """What the installer passes to `rpm -q` and `yum install`: name-version[-release] for
    an exact pin (both accept it; neither takes an epoch or an operator), else the name."""
    if spec.op == "=" and spec.evr is not None:
        return f"{spec.name}-{spec.evr.split(':', 1)[-1]}"
    return spec.name


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def stage_bundle(folder: Path, recipe: Recipe, lock: Lock, fetched: Fetched,
                 cache: Cache) -> Staged:
    """Write the bundle tree into the empty `folder` and return bundle.json's sections
    (installer/format/bundleinfo.py owns them)."""
    created = lock.created
    written = write_repo(folder / REPO, fetched.packages, fetched.rpm_paths,
                         fetched.filelists, fetched.other, fetched.keys, timestamp=created)

    # Files from the cache are hard-linked (see cache.place): their SHA-256 is known and their
    # mode is given to pack, so the links are never written to nor chmod-ed.
    digests = {f"{REPO}/{path}": sha for path, sha in zip(written.packages, written.package_sha256)}
    modes: Dict[str, int] = {}
    binaries: List[ComponentBinary] = []
    for item in sorted(fetched.binaries, key=lambda f: (f.name, f.filename)):
        plain = item.name in KUBE_BINARIES
        path = f"bin/{item.name if plain else item.filename}"
        place(cache.path(item.sha256), folder / path)
        digests[path] = hex_of(item.sha256)
        modes[path] = 0o755 if plain else 0o644
        binaries.append(ComponentBinary(item.name, item.version, item.arch, path, item.url,
                                        item.sha256, item.size))

    summary = write_archive(list(fetched.images), cache, folder / IMAGE_ARCHIVE, mtime=created)
    digests[IMAGE_ARCHIVE] = summary.sha256
    role_refs = lock.roles
    by_ref: Dict[str, List[str]] = {}
    for role, refs in role_refs.items():
        for ref in refs:
            by_ref.setdefault(ref, []).append(role)
    images = bundle_images(summary, by_ref)
    sources = {image.reference: image.source for image in fetched.images}

    addons = render_addons(recipe.addons, folder)
    (folder / SBOM_PATH).write_bytes(render_sbom(
        lock, recipe.name, __version__, [(p.name, p.version, p.sha256) for p in load_pins()]))
    kubeadm = lock.kubeadm_images
    pause = next((ref for ref in kubeadm if ref.rsplit("/", 1)[-1].startswith("pause:")), None)
    target = lock.target
    document = BundleSections(
        # target.hosts comes from the recipe, not the lock: it changes no resolved package
        target=Target(target.os, target.release, target.arch, target.base,
                      tuple(recipe.target.hosts)),
        kubernetes_version=lock.kubernetes_version,
        runtime=Runtime(recipe.runtime.name, recipe.runtime.version),
        assumed_base=lock.base,
        roles={role: Role(tuple(install_spec(s) for s in recipe.role_packages(role)),
                          role_refs.get(role, ()))
               for role in recipe.roles},
        kubeadm_images=kubeadm,
        pause_image=pause,
        remove_packages=tuple(recipe.remove),
        images=images,
        image_archive=IMAGE_ARCHIVE,
        repo=Repo(REPO, tuple(f"{REPO}/{name}" for name in written.keys)),
        addons={name: BundleAddon(addon.version, tuple(addon.images), addons.get(name),
                                  {"flannel": DEFAULT_POD_CIDR, "calico": CALICO_POD_CIDR}.get(
                                      name) if name in addons else None)
                for name, addon in recipe.addons.items()},
        components=Components(
            rpms=tuple(ComponentRpm(p.nevra, p.repo, p.sha256, p.size,
                                    _requested_as(recipe, p.name))
                       for p in sorted(fetched.packages, key=lambda p: (p.name, p.nevra))),
            binaries=tuple(binaries),
            images=tuple(ComponentImage(i.reference, i.platform, i.manifest_digest,
                                        i.config_digest, sources.get(i.reference, ""))
                         for i in summary.images)),
        lock=LockOrigin(_sha256(dump_lock(lock)), asdict(lock.recipe), lock.preset.name,
                        lock.preset.sha256),
        builder=BuiltBy("kubecrate", __version__),
    )
    metadata = document.to_json()
    sections = {name: _size(folder / name) for name in ("repo", "bin", "images", "addons")}
    counts = {"rpms": len(fetched.packages), "binaries": len(binaries), "images": len(images),
              "addons": len(addons)}
    return Staged(metadata, sections, counts, digests, modes)


def _requested_as(recipe: Recipe, name: str) -> str:
    return next((str(s) for s in recipe.all_packages() if s.name == name), "")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
