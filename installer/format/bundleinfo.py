"""What the host steps read from bundle.json, and a verified view of a bundle for preflight.

bundle.json sections read here (the builder writes them; unknown sections are ignored):
  target: {os: centos, release: "7", arch: x86_64}
          (optional hosts: [rocky, almalinux, rhel]: the os-release IDs of the same EL platform
          the bundle serves; installer/osrelease.py)
  remove_packages: [podman, buildah, runc]  (optional: what host prep removes where installed,
        because the bundle's packages conflict with them; installer/steps/conflicts.py)
  kubernetes_version: v1.23.17
  runtime: docker | containerd            (or {name: docker, version: ...})
  roles: {worker: {packages: [docker-ce, ...]}, control-plane: {...}}
  images: [{reference, config_digest, size, roles: [worker, ...]}, ...]
  pause_image: registry.k8s.io/pause:3.6  (optional; else the image named */pause:*)
  image_archive: images/images.tar        (optional; default shown)
  repo: {path: repo, gpgkeys: [repo/RPM-GPG-KEY-CentOS-7, ...]}  (optional; default: repo/ and
        every file directly in it that is not repodata)

Preflight must change nothing under the root, so it cannot unpack: its view of a bundle
(installer/source.py) holds only repo/repodata and the GPG keys, in a private temporary folder
(or is the checked cache folder when this bundle is already unpacked).
"""

import os
from typing import Any, Dict, List, NamedTuple, NoReturn, Optional, Tuple

from installer.format.errors import VerificationError
from installer.format.manifest import BundleManifest

RUNTIMES = ("docker", "containerd")


class BundleImage(NamedTuple):
    reference: str
    image_id: str  # sha256:<config digest>; what `docker images --no-trunc` shows
    size: int
    roles: Tuple[str, ...]


class BundleInfo(NamedTuple):
    name: str
    digest: str  # bundle.json sha256, names the cache folder
    os: str
    release: str
    arch: str
    kubernetes_version: str
    runtime: str
    packages: Dict[str, Tuple[str, ...]]  # role -> package specs
    images: Tuple[BundleImage, ...]
    pause_image: Optional[str]
    image_archive: str
    repo_path: str
    gpgkeys: Tuple[str, ...]
    files: Tuple[str, ...]
    hashes: Dict[str, str]  # bundle path -> sha256
    hosts: Tuple[str, ...] = ()  # target.hosts: os-release IDs served (empty: target.os)
    remove_packages: Tuple[str, ...] = ()  # what host prep may remove (the recipe's `remove`)

    @property
    def major_release(self) -> str:
        return self.release.split(".")[0]

    def packages_for(self, role: str) -> Tuple[str, ...]:
        return self.packages.get(role, ())

    def images_for(self, role: str) -> Tuple[BundleImage, ...]:
        return tuple(image for image in self.images if role in image.roles)


def _fail(key: str, what: str) -> NoReturn:
    raise VerificationError("bundle.json: {}: {}".format(key, what),
                            hint="this bundle was not built for the host installer steps")


def _str(data: Dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        _fail(where + key, "missing or not a string")
    return str(value)


def read_info(manifest: BundleManifest, digest: str) -> BundleInfo:
    """Validate the sections the installer needs; VerificationError names the key."""
    data = manifest.data
    target = data.get("target")
    if not isinstance(target, dict):
        _fail("target", "missing or not an object")
    runtime = data.get("runtime", "docker")
    if isinstance(runtime, dict):
        runtime = runtime.get("name") or runtime.get("kind")
    if runtime not in RUNTIMES:
        _fail("runtime", "{!r} is not one of {}".format(runtime, ", ".join(RUNTIMES)))
    packages = {}
    for role, section in (data.get("roles") or {}).items():
        specs = section.get("packages", []) if isinstance(section, dict) else None
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            _fail("roles.{}.packages".format(role), "not a list of package names")
        packages[role] = tuple(specs)
    images = []
    for index, item in enumerate(data.get("images") or []):
        where = "images[{}]".format(index)
        if not isinstance(item, dict):
            _fail(where, "not an object")
        reference = _str(item, "reference", where + ".")
        config = _str(item, "config_digest", where + ".")
        roles = item.get("roles") or []
        images.append(BundleImage(reference, config, int(item.get("size") or 0), tuple(roles)))
    for role, section in (data.get("roles") or {}).items():
        for reference in section.get("images", []) if isinstance(section, dict) else []:
            for position, image in enumerate(images):
                if image.reference == reference and role not in image.roles:
                    images[position] = image._replace(roles=image.roles + (role,))
    files = tuple(entry.path for entry in manifest.files)
    repo = data.get("repo")
    if not isinstance(repo, dict):
        repo = {}
    repo_path = repo.get("path", "repo")
    gpgkeys = repo.get("gpgkeys") or [
        path for path in files
        if path.startswith(repo_path + "/") and path.count("/") == repo_path.count("/") + 1
        and not path.endswith(".rpm")
    ]
    hosts = target.get("hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        _fail("target.hosts", "not a list of os-release IDs")
    removals = data.get("remove_packages") or []
    if not isinstance(removals, list) or not all(isinstance(r, str) and r for r in removals):
        _fail("remove_packages", "not a list of package names")
    pause = data.get("pause_image") or next(
        (i.reference for i in images if i.reference.rsplit("/", 1)[-1].startswith("pause:")),
        None)
    return BundleInfo(
        manifest.name, digest, _str(target, "os", "target."),
        str(target.get("release") or _fail("target.release", "missing")),
        _str(target, "arch", "target."), str(data.get("kubernetes_version") or ""),
        str(runtime), packages, tuple(images), pause,
        str(data.get("image_archive") or "images/images.tar"), repo_path, tuple(gpgkeys), files,
        {entry.path: entry.sha256 for entry in manifest.files}, tuple(hosts), tuple(removals))


def wanted_for_preflight(path: str, info_repo: str = "repo") -> bool:
    """What preflight reads from a bundle it may not unpack: the repo metadata and the keys."""
    if path.startswith(info_repo + "/repodata/"):
        return True
    return path.startswith(info_repo + "/") and path.count("/") == info_repo.count("/") + 1 \
        and not path.endswith(".rpm")


def list_files(directory: str, prefix: str) -> List[str]:
    """Bundle-relative paths of the regular files under `prefix/` in an unpacked bundle."""
    found = []
    top = os.path.join(directory, prefix)
    for folder, _, names in os.walk(top):
        for name in names:
            found.append(os.path.relpath(os.path.join(folder, name), directory))
    return sorted(found)
