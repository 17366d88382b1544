"""Reading a bundle recipe (`manifests/*.yaml`, schema: docs/recipe.md) into the typed recipe of
builder/inputs/recipe.py.

`load_recipe()` reads a recipe with `yaml.safe_load` (installer/format/yamldoc.py) and rejects
anything it does not understand, naming the file, the line and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence, Tuple, Union

from builder.inputs.mirrors import MirrorPresetError, parse_image
from builder.inputs.recipe import (
    KUBEADM_COMPONENTS,
    OWN_SETS,
    ROLES,
    Addon,
    ImageSelector,
    KubernetesSpec,
    PackageSpec,
    Recipe,
    RecipeError,
    Role,
    Runtime,
    Target,
)
from installer.format import yamldoc
from installer.format.yamldoc import KeyPath, did_you_mean, kind

__all__ = ["load_recipe", "parse_recipe"]

OPERATING_SYSTEMS = ("centos", "rocky", "almalinux", "rhel")
ARCHES = ("x86_64", "aarch64")
RUNTIMES = ("docker", "containerd")
DOCKERSHIM_LAST_MINOR = 23  # dockershim left the kubelet in 1.24 (KEP-2221)

_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]*\Z")
_PACKAGE_NAME = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
_GROUP = re.compile(r"\A@[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_EVR = re.compile(r"\A(?:[0-9]+:)?[A-Za-z0-9._+~^]+(?:-[A-Za-z0-9._+~^]+)?\Z")
_PACKAGE_SPEC = re.compile(r"\A(?P<name>\S+?)\s*(?:(?P<op>=|>=|<=|<|>)\s*(?P<evr>\S+))?\Z")
_K8S_VERSION = re.compile(r"\Av?([0-9]+)\.([0-9]+)\.([0-9]+)\Z")
_VERSION = re.compile(r"\Av?[0-9]+(?:\.[0-9]+)*(?:[-+~][A-Za-z0-9._-]+)?\Z")
_RELEASE = re.compile(r"\A[0-9]+(?:\.[0-9]+)?\Z")
_HOST = re.compile(r"\A[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[a-z0-9._/-]+)?\Z")
_RECIPE_FILE = re.compile(r"\A[A-Za-z0-9._-]+\.ya?ml\Z")  # beside the recipe, no folders


def load_recipe(path: Union[str, Path]) -> Recipe:
    """Read and validate a recipe file; every problem is a RecipeError naming the file, the
    line where known, and the key."""
    text = yamldoc.read(str(path), "recipe", RecipeError)
    return parse_recipe(text, str(path))


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Validate recipe YAML text; `source` names it in messages and anchors relative paths."""
    document = yamldoc.parse(text, source, RecipeError)
    return _Reader(document).recipe(document.data)


class _Reader(yamldoc.Reader):
    """Walks the plain data from safe_load, checking as it goes; knows lines from compose."""

    error_class = RecipeError

    # ---- the recipe

    def recipe(self, data: Any) -> Recipe:
        top = self.mapping(data, (), ("name", "target", "kubernetes", "runtime", "mirrors",
                                      "repos", "packages", "roles"),
                           ("description", "images", "binaries", "addons", "remove"))
        addons = self.addons(top.get("addons"))
        packages = self.packages(top["packages"], ("packages",))
        images = self.images(top.get("images"), ("images",), addons, allow_empty=True)
        roles = self.roles(top["roles"], addons, packages)
        repos = tuple(self.string(r, ("repos", i)) for i, r in
                      enumerate(self.items(top["repos"], ("repos",))))
        self.unique(repos, ("repos",))
        kubernetes = self.kubernetes(top["kubernetes"])
        runtime = self.runtime(top["runtime"], kubernetes)
        self.registry_set(images, roles, runtime)
        return Recipe(
            name=self.string(top["name"], ("name",), _NAME,
                             "a bundle name (lower-case letters, digits, . _ -)"),
            source=self.source,
            description=self.string(top["description"], ("description",))
            if top.get("description") is not None else "",
            target=self.target(top["target"]),
            kubernetes=kubernetes,
            runtime=runtime,
            mirrors=self.string(top["mirrors"], ("mirrors",)),
            repos=repos,
            packages=packages,
            images=images,
            roles=roles,
            binaries=self.binaries(top.get("binaries")),
            addons=addons,
            lines=MappingProxyType(dict(self.lines)),
            remove=self.removals(top.get("remove"), packages, roles),
        )

    def registry_set(self, images: Sequence[ImageSelector], roles: Mapping[str, Role],
                     runtime: Runtime) -> None:
        """`@registry` only in roles.control-plane.images (the control planes run the registry;
        a worker pulls from it) and only with containerd: a Docker host never serves it
        (cluster.yaml refuses images.mode registry there), so its bundle need not carry it."""
        where = [(("images", i), s) for i, s in enumerate(images)] + [
            (("roles", role.name, "images", i), s) for role in roles.values()
            for i, s in enumerate(role.images)]
        for path, selector in where:
            if selector.kind != "registry":
                continue
            if runtime.name != "containerd":
                raise self.error(path, f"\"@registry\" needs runtime containerd, not "
                                 f"{runtime.name}", "images.mode registry serves containerd "
                                 "hosts only (Docker's registry-mirrors mirror Docker Hub "
                                 "only); remove it from this recipe")
            if path[:2] != ("roles", "control-plane"):
                raise self.error(path, "\"@registry\" belongs in roles.control-plane.images",
                                 "only the control planes run the registry; the other "
                                 "nodes pull from it")

    def removals(self, value: Any, packages: Sequence[PackageSpec],
                 roles: Mapping[str, Role]) -> Tuple[str, ...]:
        """`remove`: package names host prep removes where installed (containerd.io conflicts
        with runc, which podman and buildah require: docs/el8-el9.md); none the bundle
        itself installs."""
        if value is None:
            return ()
        path = ("remove",)
        names = tuple(self.string(item, path + (i,), _PACKAGE_NAME, "a package name")
                      for i, item in enumerate(self.items(value, path)))
        self.unique(names, path)
        shipped = {p.name for p in packages} | {p.name for role in roles.values()
                                                for p in role.packages}
        for index, name in enumerate(names):
            if name in shipped:
                raise self.error(path + (index,), f"{name} is also one of the bundle's packages")
        return names

    def target(self, value: Any) -> Target:
        path = ("target",)
        spec = self.mapping(value, path, ("os", "release", "arch", "base"), ("hosts",))
        base = self.items(spec["base"], path + ("base",))
        names = []
        for index, item in enumerate(base):
            text = self.string(item, path + ("base", index))
            if not (_GROUP.match(text) or _PACKAGE_NAME.match(text)):
                raise self.error(path + ("base", index),
                                 f"{text!r} is neither a comps group (@core) nor a package name")
            names.append(text)
        self.unique(names, path + ("base",))
        target_os = self.choice(spec["os"], path + ("os",), OPERATING_SYSTEMS)
        hosts: Tuple[str, ...] = ()
        if spec.get("hosts") is not None:
            hosts = tuple(self.choice(h, path + ("hosts", i), OPERATING_SYSTEMS)
                          for i, h in enumerate(self.items(spec["hosts"], path + ("hosts",))))
            self.unique(hosts, path + ("hosts",))
            if target_os not in hosts:
                raise self.error(path + ("hosts",), f"does not list the target's own os "
                                 f"{target_os!r}", f"add {target_os} to target.hosts")
        return Target(
            os=target_os,
            release=self.string(spec["release"], path + ("release",), _RELEASE,
                                "a release such as \"7.9\" or \"8\""),
            arch=self.choice(spec["arch"], path + ("arch",), ARCHES),
            base=tuple(names),
            hosts=hosts,
        )

    def kubernetes(self, value: Any) -> KubernetesSpec:
        path = ("kubernetes",)
        spec = self.mapping(value, path, ("version",), ("image_repository", "upgrade_path"))
        version = self.string(spec["version"], path + ("version",), _K8S_VERSION,
                              "a Kubernetes release such as v1.23.17")
        version = version if version.startswith("v") else "v" + version
        match = _K8S_VERSION.match(version)
        if match is None:  # self.string() checked the pattern; only the "v" was added
            raise self.error(path + ("version",), f"{version!r} is not a Kubernetes release")
        major, minor, patch = (int(x) for x in match.groups())
        if spec.get("image_repository") is not None:
            repository = self.string(spec["image_repository"], path + ("image_repository",),
                                     _HOST, "a registry host[/path] such as registry.k8s.io")
        else:
            # kubeadm's own default for that version: registry.k8s.io from v1.23.15,
            # v1.24.9 and v1.25 on (kubernetes PR #113393 for 1.23), k8s.gcr.io before.
            old = (major, minor) < (1, 23) or (minor == 23 and patch < 15) or (
                minor == 24 and patch < 9)
            repository = "k8s.gcr.io" if major == 1 and old else "registry.k8s.io"
        steps: Tuple[str, ...] = ()
        if spec.get("upgrade_path") is not None:
            where = path + ("upgrade_path",)
            steps = tuple(self.string(item, where + (i,), _RECIPE_FILE,
                                      "a recipe file beside this one, such as "
                                      "k8s-1.31-el9-containerd.yaml")
                          for i, item in enumerate(self.items(spec["upgrade_path"], where)))
            self.unique(steps, where)
        return KubernetesSpec(version, repository, steps)

    def runtime(self, value: Any, kubernetes: KubernetesSpec) -> Runtime:
        path = ("runtime",)
        spec = self.mapping(value, path, ("name", "version"))
        name = self.choice(spec["name"], path + ("name",), RUNTIMES)
        if name == "docker" and kubernetes.minor > DOCKERSHIM_LAST_MINOR:
            raise self.error(path + ("name",), f"Kubernetes {kubernetes.version} has no dockershim "
                             "(removed in 1.24)", "use containerd for 1.24 and later")
        version = self.string(spec["version"], path + ("version",), _VERSION,
                              "a version such as 20.10.24")
        return Runtime(name, version)

    def package(self, value: Any, path: KeyPath) -> PackageSpec:
        text = self.string(value, path)
        match = _PACKAGE_SPEC.match(text)
        if not match or not _PACKAGE_NAME.match(match.group("name")):
            raise self.error(path, f"{text!r} is not a package: want NAME or NAME OP EVR",
                             "e.g. socat, or docker-ce = 3:20.10.24-3.el7")
        evr = match.group("evr")
        if evr is not None and not _EVR.match(evr):
            raise self.error(path, f"{evr!r} is not an [epoch:]version[-release]")
        return PackageSpec(match.group("name"), match.group("op"), evr)

    def packages(self, value: Any, path: KeyPath, allow_empty: bool = False
                 ) -> Tuple[PackageSpec, ...]:
        specs = tuple(self.package(item, path + (index,)) for index, item in
                      enumerate(self.items(value, path, allow_empty)))
        self.unique(specs, path, key=lambda spec: spec.name)
        return specs

    def images(self, value: Any, path: KeyPath, addons: Mapping[str, Addon],
               allow_empty: bool = False) -> Tuple[ImageSelector, ...]:
        selectors = tuple(self.image(item, path + (index,), addons) for index, item in
                          enumerate(self.items(value, path, allow_empty)))
        self.unique(selectors, path, key=lambda selector: selector.name
                    if selector.kind == "image" else selector.text)
        return selectors

    def image(self, value: Any, path: KeyPath, addons: Mapping[str, Addon]) -> ImageSelector:
        text = self.string(value, path)
        if not text.startswith("@"):
            return ImageSelector("image", self.image_ref(text, path), text)
        name, _, component = text[1:].partition(":")
        if name == "kubeadm":
            if component and component not in KUBEADM_COMPONENTS:
                raise self.error(path, f"kubeadm has no image {component!r}",
                                 did_you_mean(component, KUBEADM_COMPONENTS)
                                 or f"known: {', '.join(KUBEADM_COMPONENTS)}")
            return ImageSelector("kubeadm", component, text)
        if name in OWN_SETS and not component:
            return ImageSelector(name, "", text)
        if name in addons and not component:
            return ImageSelector("addon", name, text)
        sets = ["@kubeadm"] + [f"@{n}" for n in OWN_SETS] + [f"@{a}" for a in addons]
        raise self.error(path, f"no image set {text!r}", did_you_mean(text, sets)
                         or f"image sets: {', '.join(sets)}, @kubeadm:<component>")

    def image_ref(self, text: str, path: KeyPath) -> str:
        try:
            image = parse_image(text)
        except MirrorPresetError as exc:
            raise self.error(path, exc.message) from None
        if image.digest:
            # docker load keeps no RepoDigests, so a digest reference never resolves on a host.
            raise self.error(path, f"{text!r}: refer to images by tag, not by digest",
                             "the lock pins digests; the recipe names tags")
        if image.tag == "latest" and not text.endswith(":latest"):
            raise self.error(path, f"{text!r} has no tag", "name an explicit tag")
        return str(image)

    def roles(self, value: Any, addons: Mapping[str, Addon],
              common: Tuple[PackageSpec, ...]) -> Mapping[str, Role]:
        path = ("roles",)
        spec = self.mapping(value, path, ROLES)
        roles = {}
        for name in ROLES:
            role = self.mapping(spec[name], path + (name,), (), ("packages", "images"))
            packages = self.packages(role.get("packages"), path + (name, "packages"), True)
            shared = {p.name for p in common}
            for index, package in enumerate(packages):
                if package.name in shared:
                    raise self.error(path + (name, "packages", index),
                                     f"{package.name!r} is already in the common packages")
            roles[name] = Role(name, packages,
                               self.images(role.get("images"), path + (name, "images"), addons,
                                           allow_empty=True))
        return MappingProxyType(roles)

    def named(self, value: Any, key: str, what: str) -> Iterator[Tuple[KeyPath, str, Any]]:
        """(path, name, value) of each entry of the optional mapping under top-level `key`,
        sorted by name; `what` describes a good name in the message for a bad one."""
        if value is None:
            return
        if not isinstance(value, dict):
            raise self.error((key,), f"must be a mapping, not {kind(value)}")
        for name, item in sorted(value.items(), key=lambda pair: str(pair[0])):
            path = (key, name)
            yield path, self.string(name, path, _NAME, what), item

    def binaries(self, value: Any) -> Mapping[str, str]:
        result = {}
        for path, name, version in self.named(value, "binaries",
                                              "a release source name such as crictl"):
            version = self.string(version, path, _VERSION, "a version such as v1.23.0")
            result[name] = version if version.startswith("v") else "v" + version
        return MappingProxyType(result)

    def addons(self, value: Any) -> Mapping[str, Addon]:
        result = {}
        for path, name, spec in self.named(value, "addons", "an add-on name such as flannel"):
            if name == "kubeadm" or name in OWN_SETS:
                raise self.error(path, f"{name!r} names kubecrate's own image set @{name}")
            spec = self.mapping(spec, path, ("version", "images"))
            refs = tuple(self.image_ref(self.string(ref, path + ("images", i)),
                                        path + ("images", i))
                         for i, ref in enumerate(self.items(spec["images"], path + ("images",))))
            self.unique(refs, path + ("images",))
            result[name] = Addon(name, self.string(spec["version"], path + ("version",), _VERSION,
                                                   "a version such as v0.22.3"), refs)
        return MappingProxyType(result)
