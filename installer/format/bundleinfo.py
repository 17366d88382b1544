"""bundle.json's sections and the bundle's paths: their one owner.

The builder writes the sections (builder/bundle/stage.py: `BundleSections(...).to_json()`) and
pack adds its own keys (format_version, name, created, files: installer/format/manifest.py).
Every reader goes through `read_sections()`: the host steps (via `read_info()`, which also
requires what a host cannot do without), `kubecrate lint` and `kubecrate inspect`. A section
that is absent reads as empty (a bundle packed by hand with `kubecrate pack` may have none);
one of the wrong type is a VerificationError naming the key.

  target: {os: centos, release: "7.9", arch: x86_64, base: ["@core"]}
          (optional hosts: [rocky, almalinux, rhel]: the os-release IDs of the same EL platform
          the bundle serves; installer/osrelease.py)
  kubernetes_version: v1.23.17
  runtime: {name: docker | containerd, version: ...}   (or just the name)
  assumed_base: {kind, source, packages: [nevra, ...], missing: [...]}
  roles: {worker: {packages: [docker-ce, ...], images: [ref, ...]}, control-plane: {...}}
  kubeadm_images: [ref, ...]
  pause_image: registry.k8s.io/pause:3.6             (else the image named */pause:*)
  remove_packages: [podman, buildah, runc]  (optional: what host prep removes where installed,
        because the bundle's packages conflict with them; installer/steps/conflicts.py)
  images: [{reference, platform, manifest_digest, config_digest, layers, size, roles}, ...]
  image_archive: images/images.tar
  repo: {path: repo, gpgkeys: [repo/RPM-GPG-KEY-CentOS-7, ...]}  (default: repo/ and every
        file directly in it that is not an RPM)
  addons: {flannel: {version, images: [ref, ...], manifest: addons/flannel/kube-flannel.yml,
           pod_cidr}}
  components: {rpms: [...], binaries: [...], images: [...]}     (provenance, for inspect)
  lock: {sha256, recipe: {name, path, sha256}, preset: {name, sha256}}
  builder: {name: kubecrate, version}

Preflight must change nothing under the root, so it cannot unpack: its view of a bundle
(installer/source.py) holds only repo/repodata and the GPG keys, in a private temporary folder
(or is the checked cache folder when this bundle is already unpacked).
"""

from typing import Any, Dict, List, NamedTuple, NoReturn, Optional, Tuple

from installer.format.cluster import ETCD_ROLE
from installer.format.errors import VerificationError
from installer.format.manifest import BundleManifest

RUNTIMES = ("docker", "containerd")
# Paths inside the bundle
IMAGE_ARCHIVE = "images/images.tar"
REPO = "repo"
ADDONS = "addons"


def addon_manifest(addon: str, filename: str) -> str:
    """Where add-on `addon`'s rendered manifest `filename` lies in the bundle."""
    return "{}/{}/{}".format(ADDONS, addon, filename)


class Target(NamedTuple):
    os: str
    release: str
    arch: str
    base: Tuple[str, ...] = ()  # the recipe's target.base ("@core", "none")
    hosts: Tuple[str, ...] = ()  # os-release IDs served besides `os` (left out when empty)

    def to_json(self) -> Dict[str, Any]:
        data = {"os": self.os, "release": self.release, "arch": self.arch,
                "base": list(self.base)}  # type: Dict[str, Any]
        if self.hosts:
            data["hosts"] = list(self.hosts)
        return data


class Runtime(NamedTuple):
    name: str  # docker | containerd
    version: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version}


class AssumedBase(NamedTuple):
    """What the target host is assumed to have installed already (the lock's `base`)."""
    kind: str  # group (a comps group, @core by default), rpm-qa (a host's list), none
    source: str  # "@core from base", the rpm -qa file, "none"
    packages: Tuple[str, ...] = ()  # NEVRAs
    missing: Tuple[str, ...] = ()  # group members or listed packages the repos do not have

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "packages": list(self.packages),
                "missing": list(self.missing)}


class Role(NamedTuple):
    packages: Tuple[str, ...]  # what `yum install` gets: name or name-version[-release]
    images: Tuple[str, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"packages": list(self.packages), "images": list(self.images)}


class BundleImage(NamedTuple):
    reference: str
    image_id: str  # sha256:<config digest>; what `docker images --no-trunc` shows
    size: int
    roles: Tuple[str, ...]
    platform: str = ""
    manifest_digest: str = ""
    layers: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"reference": self.reference, "platform": self.platform,
                "manifest_digest": self.manifest_digest, "config_digest": self.image_id,
                "layers": list(self.layers), "size": self.size, "roles": list(self.roles)}


class Repo(NamedTuple):
    path: str
    gpgkeys: Tuple[str, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "gpgkeys": list(self.gpgkeys)}


class BundleAddon(NamedTuple):
    version: str
    images: Tuple[str, ...]
    manifest: Optional[str] = None  # bundle path of the rendered manifest, if any
    pod_cidr: Optional[str] = None  # the pod CIDR the manifest was rendered with (flannel)

    def to_json(self) -> Dict[str, Any]:
        data = {"version": self.version, "images": list(self.images)}  # type: Dict[str, Any]
        if self.manifest is not None:
            data["manifest"] = self.manifest
        if self.pod_cidr is not None:
            data["pod_cidr"] = self.pod_cidr
        return data


class ComponentRpm(NamedTuple):
    nevra: str
    repo: str
    sha256: str
    size: int
    requested_as: str  # the recipe's spec that asked for it, or ""


class ComponentBinary(NamedTuple):
    name: str
    version: str
    arch: str
    path: str
    url: str
    sha256: str
    size: int


class ComponentImage(NamedTuple):
    reference: str
    platform: str
    manifest_digest: str
    config_digest: str
    source: str  # where it was pulled from


class Components(NamedTuple):
    """Where every piece came from (provenance; `kubecrate inspect` shows the binaries)."""
    rpms: Tuple[ComponentRpm, ...] = ()
    binaries: Tuple[ComponentBinary, ...] = ()
    images: Tuple[ComponentImage, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"rpms": [dict(c._asdict()) for c in self.rpms],
                "binaries": [dict(c._asdict()) for c in self.binaries],
                "images": [dict(c._asdict()) for c in self.images]}


class LockOrigin(NamedTuple):
    sha256: str  # of the lock file's bytes
    recipe: Dict[str, Any]  # the lock's recipe record: name, path, sha256
    preset_name: str
    preset_sha256: str

    def to_json(self) -> Dict[str, Any]:
        return {"sha256": self.sha256, "recipe": dict(self.recipe),
                "preset": {"name": self.preset_name, "sha256": self.preset_sha256}}


class BuiltBy(NamedTuple):
    name: str
    version: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version}


class BundleSections(NamedTuple):
    """Everything in bundle.json besides pack's own keys."""
    target: Optional[Target] = None
    kubernetes_version: str = ""
    runtime: Optional[Runtime] = None
    assumed_base: Optional[AssumedBase] = None
    roles: Dict[str, Role] = {}
    kubeadm_images: Tuple[str, ...] = ()
    pause_image: Optional[str] = None
    remove_packages: Tuple[str, ...] = ()  # what host prep may remove (the recipe's `remove`)
    images: Tuple[BundleImage, ...] = ()
    image_archive: str = IMAGE_ARCHIVE
    repo: Optional[Repo] = None
    addons: Dict[str, BundleAddon] = {}
    components: Components = Components()
    lock: Optional[LockOrigin] = None
    builder: Optional[BuiltBy] = None

    def to_json(self) -> Dict[str, Any]:
        """The sections as `kubecrate build` writes them (pack sorts the keys); one that is
        None is left out."""
        data = {
            "kubernetes_version": self.kubernetes_version,
            "roles": {role: section.to_json() for role, section in sorted(self.roles.items())},
            "kubeadm_images": list(self.kubeadm_images),
            "pause_image": self.pause_image,
            "images": [image.to_json() for image in self.images],
            "image_archive": self.image_archive,
            "addons": {name: addon.to_json() for name, addon in sorted(self.addons.items())},
            "components": self.components.to_json(),
        }  # type: Dict[str, Any]
        if self.remove_packages:
            data["remove_packages"] = list(self.remove_packages)
        for key in ("target", "runtime", "assumed_base", "repo", "lock", "builder"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value.to_json()
        return data


class BundleInfo(NamedTuple):
    """What the host steps read of a bundle: its sections, checked, and its file table."""
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
    addons: Dict[str, BundleAddon] = {}

    @property
    def major_release(self) -> str:
        return self.release.split(".")[0]

    def packages_for(self, role: str) -> Tuple[str, ...]:
        """The package specs of `role`. An etcd.external host (role "etcd") needs what a
        worker has (the runtime, kubelet, kubeadm: kubeadm's HA etcd guide, "Before you
        begin") unless the bundle names an etcd role of its own."""
        if role == ETCD_ROLE and role not in self.packages:
            return self.packages.get("worker", ())
        return self.packages.get(role, ())

    def images_for(self, role: str) -> Tuple[BundleImage, ...]:
        """The images `role` loads. An etcd.external host, unless the bundle names the role:
        the pause image (the static pod's sandbox) and kubeadm's etcd image."""
        listed = tuple(image for image in self.images if role in image.roles)
        if role != ETCD_ROLE or listed:
            return listed
        return tuple(image for image in self.images
                     if image.reference == self.pause_image
                     or image.reference.rpartition("/")[2].startswith("etcd:"))


# ------------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, source: str, hint: Optional[str] = None) -> None:
        self.source = source
        self.hint = hint

    def fail(self, key: str, what: str) -> NoReturn:
        raise VerificationError("{}: {}: {}".format(self.source, key, what), hint=self.hint)

    def get(self, data: Dict[str, Any], key: str, kind: type, where: str = "") -> Any:
        """data[key] if present (None if not); a value of another type fails naming it."""
        value = data.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            self.fail(where + key, "not {}".format(_KINDS.get(kind, kind.__name__)))
        return value

    def strings(self, data: Dict[str, Any], key: str, where: str = "") -> Tuple[str, ...]:
        value = self.get(data, key, list, where) or []
        if not all(isinstance(item, str) for item in value):
            self.fail(where + key, "not a list of strings")
        return tuple(value)

    def names(self, data: Dict[str, Any], key: str, where: str, what: str) -> Tuple[str, ...]:
        """A list of non-empty strings (absent: empty)."""
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(where + key, "not a list of " + what)
        return tuple(value)

    def text(self, data: Dict[str, Any], key: str, where: str = "") -> str:
        value = data.get(key)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(where + key, "not a string")
        return str(value)

    def objects(self, data: Dict[str, Any], key: str, where: str = "") -> List[Dict[str, Any]]:
        value = self.get(data, key, list, where) or []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail("{}{}[{}]".format(where, key, index), "not an object")
        return value


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number"}


def read_sections(data: Dict[str, Any], source: str = "bundle.json",
                  hint: Optional[str] = None) -> BundleSections:
    """The typed sections of bundle.json's document `data`; absent ones read as empty."""
    read = _Reader(source, hint)
    target = read.get(data, "target", dict)
    runtime = data.get("runtime")
    if isinstance(runtime, dict):
        runtime = Runtime(read.text(runtime, "name", "runtime."),
                          read.text(runtime, "version", "runtime.") or None)
    elif isinstance(runtime, str):
        runtime = Runtime(runtime)
    elif runtime is not None:
        read.fail("runtime", "not an object or a name")
    roles = {}
    for role, section in sorted((read.get(data, "roles", dict) or {}).items()):
        where = "roles.{}.".format(role)
        if not isinstance(section, dict):
            read.fail("roles." + role, "not an object")
        roles[role] = Role(read.strings(section, "packages", where),
                           read.strings(section, "images", where))
    images = []
    for index, item in enumerate(read.objects(data, "images")):
        where = "images[{}].".format(index)
        reference, config = read.text(item, "reference", where), read.text(item, "config_digest",
                                                                            where)
        if not reference or not config:
            read.fail(where + ("reference" if not reference else "config_digest"),
                      "missing or not a string")
        images.append(BundleImage(reference, config, int(read.get(item, "size", int, where) or 0),
                                  read.strings(item, "roles", where),
                                  read.text(item, "platform", where),
                                  read.text(item, "manifest_digest", where),
                                  read.strings(item, "layers", where)))
    repo = read.get(data, "repo", dict)
    addons = {}
    for name, addon in sorted((read.get(data, "addons", dict) or {}).items()):
        where = "addons.{}.".format(name)
        if not isinstance(addon, dict):
            read.fail("addons." + name, "not an object")
        addons[name] = BundleAddon(read.text(addon, "version", where),
                                   read.strings(addon, "images", where),
                                   read.get(addon, "manifest", str, where),
                                   read.get(addon, "pod_cidr", str, where))
    components = read.get(data, "components", dict) or {}
    lock = read.get(data, "lock", dict)
    builder = read.get(data, "builder", dict)
    base = read.get(data, "assumed_base", dict)
    return BundleSections(
        target=Target(read.text(target, "os", "target."), read.text(target, "release", "target."),
                      read.text(target, "arch", "target."),
                      read.strings(target, "base", "target."),
                      read.names(target, "hosts", "target.", "os-release IDs"))
        if target is not None else None,
        kubernetes_version=read.text(data, "kubernetes_version"),
        runtime=runtime,
        assumed_base=AssumedBase(
            read.text(base, "kind", "assumed_base."), read.text(base, "source", "assumed_base."),
            read.strings(base, "packages", "assumed_base."),
            read.strings(base, "missing", "assumed_base.")) if base is not None else None,
        roles=roles,
        kubeadm_images=read.strings(data, "kubeadm_images"),
        pause_image=read.get(data, "pause_image", str),
        remove_packages=read.names(data, "remove_packages", "", "package names"),
        images=tuple(images),
        image_archive=read.get(data, "image_archive", str) or IMAGE_ARCHIVE,
        repo=Repo(read.get(repo, "path", str, "repo.") or REPO,
                  read.strings(repo, "gpgkeys", "repo.")) if repo is not None else None,
        addons=addons,
        components=Components(
            tuple(_component(read, ComponentRpm, item, "components.rpms", index)
                  for index, item in enumerate(read.objects(components, "rpms", "components."))),
            tuple(_component(read, ComponentBinary, item, "components.binaries", index)
                  for index, item in enumerate(read.objects(components, "binaries",
                                                            "components."))),
            tuple(_component(read, ComponentImage, item, "components.images", index)
                  for index, item in enumerate(read.objects(components, "images",
                                                            "components.")))),
        lock=LockOrigin(read.text(lock, "sha256", "lock."),
                        read.get(lock, "recipe", dict, "lock.") or {},
                        read.text(read.get(lock, "preset", dict, "lock.") or {}, "name",
                                  "lock.preset."),
                        read.text(read.get(lock, "preset", dict, "lock.") or {}, "sha256",
                                  "lock.preset.")) if lock is not None else None,
        builder=BuiltBy(read.text(builder, "name", "builder."),
                        read.text(builder, "version", "builder.")) if builder is not None
        else None,
    )


def _component(read: _Reader, kind: Any, item: Dict[str, Any], key: str, index: int) -> Any:
    where = "{}[{}].".format(key, index)
    return kind(**{field: int(read.get(item, field, int, where) or 0) if field == "size"
                   else read.text(item, field, where) for field in kind._fields})


def read_info(manifest: BundleManifest, digest: str) -> BundleInfo:
    """Validate the sections the installer needs; VerificationError names the key."""
    sections = read_sections(manifest.data, "bundle.json",
                             "this bundle was not built for the host installer steps")
    read = _Reader("bundle.json", "this bundle was not built for the host installer steps")
    target = sections.target
    if target is None:
        read.fail("target", "missing or not an object")
    for key in ("os", "release", "arch"):
        if not getattr(target, key):
            read.fail("target." + key, "missing or not a string")
    runtime = sections.runtime.name if sections.runtime else "docker"
    if runtime not in RUNTIMES:
        read.fail("runtime", "{!r} is not one of {}".format(runtime, ", ".join(RUNTIMES)))
    images = list(sections.images)
    for role, section in sections.roles.items():
        for reference in section.images:
            for position, image in enumerate(images):
                if image.reference == reference and role not in image.roles:
                    images[position] = image._replace(roles=image.roles + (role,))
    files = tuple(entry.path for entry in manifest.files)
    repo_path = sections.repo.path if sections.repo else REPO
    gpgkeys = (sections.repo.gpgkeys if sections.repo else ()) or tuple(
        path for path in files
        if path.startswith(repo_path + "/") and path.count("/") == repo_path.count("/") + 1
        and not path.endswith(".rpm"))
    pause = sections.pause_image or next(
        (i.reference for i in images if i.reference.rsplit("/", 1)[-1].startswith("pause:")),
        None)
    return BundleInfo(
        manifest.name, digest, target.os, target.release, target.arch,
        sections.kubernetes_version, runtime,
        {role: section.packages for role, section in sections.roles.items()}, tuple(images),
        pause, sections.image_archive, repo_path, gpgkeys, files,
        {entry.path: entry.sha256 for entry in manifest.files}, target.hosts,
        sections.remove_packages, sections.addons)


def wanted_for_preflight(path: str, info_repo: str = REPO) -> bool:
    """What preflight reads from a bundle it may not unpack: the repo metadata and the keys."""
    if path.startswith(info_repo + "/repodata/"):
        return True
    return path.startswith(info_repo + "/") and path.count("/") == info_repo.count("/") + 1 \
        and not path.endswith(".rpm")
