"""Bundle recipes (`manifests/*.yaml`): what a bundle holds, for which target. Schema and
examples: docs/recipe.md.

A recipe is immutable objects; builder/inputs/recipefile.py reads them from the file
(`load_recipe()`). Where things come from is the mirror preset's business
(builder/inputs/mirrors.py); `check_against_preset()` cross-checks the two.
`role_images()` expands the per-role image selectors once kubeadm's image list is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from builder.errors import BuildError
from builder.inputs.mirrors import MirrorPreset, parse_image
from installer.format import yamldoc
from installer.format.cluster import REGISTRY_IMAGE
from installer.format.lbspec import HAPROXY_IMAGE, KEEPALIVED_IMAGE
from installer.format.yamldoc import KeyPath, did_you_mean, key_text

__all__ = [
    "KUBEADM_COMPONENTS",
    "OWN_SETS",
    "ROLES",
    "Addon",
    "ImageSelector",
    "KubernetesSpec",
    "PackageSpec",
    "Recipe",
    "RecipeError",
    "Role",
    "Runtime",
    "Target",
    "check_against_preset",
    "role_images",
]

ROLES = ("control-plane", "worker")
# What `kubeadm config images list` prints, by the last component of the repository path.
KUBEADM_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                      "kube-proxy", "pause", "etcd", "coredns")
# `@loadbalancer`: what `load_balancer.mode: static-pods` runs by default
# (installer/format/lbspec.py); the static pods pull nothing on an air-gapped host, so the
# bundle must carry them.
LOADBALANCER_IMAGES = (KEEPALIVED_IMAGE, HAPROXY_IMAGE)
# `@registry`: distribution's image, which each control plane runs as its registry in
# `images.mode: registry` (containerd only, installer/registryserve.py); kubeadm needs none of it.
REGISTRY_IMAGES = (REGISTRY_IMAGE,)
# the image sets a selector `@name` may name besides the add-ons, by kind
OWN_SETS = {"loadbalancer": LOADBALANCER_IMAGES, "registry": REGISTRY_IMAGES}

class RecipeError(BuildError, yamldoc.DocumentError):
    """A recipe is malformed, or names something its mirror preset cannot provide."""

    guide = "docs/recipe.md"


# --------------------------------------------------------------------------- the typed recipe


@dataclass(frozen=True)
class Target:
    os: str  # centos | rocky | almalinux | rhel
    release: str  # "7.9"
    arch: str  # x86_64 | aarch64
    base: Tuple[str, ...]  # what a host already has: comps groups ("@core") and package names
    # os-release IDs of the same EL platform the bundle serves (installer/osrelease.py);
    # empty: hosts whose ID or ID_LIKE names `os`
    hosts: Tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return int(self.release.split(".")[0])


@dataclass(frozen=True)
class KubernetesSpec:
    version: str  # always with the leading "v": "v1.23.17"
    image_repository: str  # the registry kubeadm pulls from, e.g. registry.k8s.io
    # recipes of the releases between the one upgraded from and this one, in order, relative
    # to this recipe: the bundle carries them (builder/bundle/upgradepath.py)
    upgrade_path: Tuple[str, ...] = ()

    @property
    def minor(self) -> int:
        return int(self.version[1:].split(".")[1])


@dataclass(frozen=True)
class Runtime:
    name: str  # docker | containerd
    version: str


@dataclass(frozen=True)
class PackageSpec:
    """An RPM by name, optionally constrained as in rpm's dependencies:
    `docker-ce = 3:20.10.24-3.el7`."""

    name: str
    op: Optional[str] = None  # = >= <= < >
    evr: Optional[str] = None  # [epoch:]version[-release]

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.evr}" if self.op else self.name


@dataclass(frozen=True)
class ImageSelector:
    """One entry of an image set: `@kubeadm` (kubeadm's whole list), `@kubeadm:pause` (one of
    its components), `@flannel` (an add-on's images), `@loadbalancer` (the keepalived and
    haproxy images of the static-pod load balancer), `@registry` (distribution's image) or a
    full image reference."""

    kind: str  # kubeadm | addon | loadbalancer | registry | image
    name: str  # component or add-on name, or the canonical reference
    text: str  # as written in the recipe

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Addon:
    name: str
    version: str
    images: Tuple[str, ...]  # canonical references, e.g. docker.io/flannel/flannel:v0.22.3


@dataclass(frozen=True)
class Role:
    """What one node role installs on top of the recipe's common sets."""

    name: str
    packages: Tuple[PackageSpec, ...]
    images: Tuple[ImageSelector, ...]


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # the file it came from, for messages
    description: str
    target: Target
    kubernetes: KubernetesSpec
    runtime: Runtime
    mirrors: str  # a preset name (manifests/mirrors/NAME.yaml) or a path relative to the recipe
    repos: Tuple[str, ...]  # yum repo ids of the preset, in priority order
    packages: Tuple[PackageSpec, ...]  # installed on every node
    images: Tuple[ImageSelector, ...]  # loaded on every node
    roles: Mapping[str, Role]
    binaries: Mapping[str, str]  # release source name in the preset -> version ("v1.23.0")
    addons: Mapping[str, Addon]
    lines: Mapping[KeyPath, int]  # line of every key, for messages raised after loading
    # installed packages the bundle's conflict with, which host prep removes (exactly these)
    remove: Tuple[str, ...] = ()

    @property
    def preset_path(self) -> Path:
        """The mirror preset this recipe names; `--mirrors` overrides it."""
        if "/" in self.mirrors or self.mirrors.endswith((".yaml", ".yml")):
            return Path(self.source).parent / self.mirrors
        return Path(self.source).parent / "mirrors" / f"{self.mirrors}.yaml"

    def role_packages(self, role: str) -> Tuple[PackageSpec, ...]:
        """The packages a node of `role` installs: the common ones, then the role's."""
        return self.packages + self._role(role).packages

    def role_image_selectors(self, role: str) -> Tuple[ImageSelector, ...]:
        return self.images + self._role(role).images

    def all_packages(self) -> Tuple[PackageSpec, ...]:
        """Every package the bundle must carry (with its closure), each name once."""
        seen: Dict[str, PackageSpec] = {}
        for spec in self.packages + tuple(p for r in self.roles.values() for p in r.packages):
            seen.setdefault(spec.name, spec)
        return tuple(seen.values())

    def error(self, path: KeyPath, message: str, hint: Optional[str] = None) -> RecipeError:
        """An error pointing at `path` (a key path such as ("repos", 2)) in the recipe file."""
        return RecipeError(message, hint, file=self.source, line=yamldoc.line_for(self.lines, path),
                           key=key_text(path) or None)

    def _role(self, role: str) -> Role:
        try:
            return self.roles[role]
        except KeyError:
            raise RecipeError(f"no role {role!r} in recipe {self.name!r}",
                              did_you_mean(role, self.roles), file=self.source) from None


# --------------------------------------------------------------------------- after loading


def role_images(recipe: Recipe, kubeadm_images: Sequence[str]) -> Dict[str, Tuple[str, ...]]:
    """Each role's canonical image references, given what `kubeadm config images list
    --kubernetes-version V` prints for the shipped kubeadm; sorted, each once."""
    by_component: Dict[str, str] = {}
    for ref in kubeadm_images:
        component = parse_image(ref).repository.rsplit("/", 1)[-1]
        by_component[component] = str(parse_image(ref))
    result = {}
    for role in recipe.roles:
        refs: Set[str] = set()
        for index, selector in enumerate(recipe.role_image_selectors(role)):
            if selector.kind == "kubeadm" and not selector.name:
                refs.update(by_component.values())
            elif selector.kind == "kubeadm":
                if selector.name not in by_component:
                    path = (("images", index) if index < len(recipe.images)
                            else ("roles", role, "images", index - len(recipe.images)))
                    raise recipe.error(path, f"kubeadm's image list has no {selector.name!r}",
                                       f"it lists: {', '.join(sorted(by_component))}")
                refs.add(by_component[selector.name])
            elif selector.kind == "addon":
                refs.update(recipe.addons[selector.name].images)
            elif selector.kind in OWN_SETS:
                refs.update(str(parse_image(ref)) for ref in OWN_SETS[selector.kind])
            else:
                refs.add(selector.name)
        result[role] = tuple(sorted(refs))
    return result


def check_against_preset(recipe: Recipe, preset: MirrorPreset) -> None:
    """Raise a RecipeError naming the recipe's key when the preset lacks a repo, a release
    source or a registry the recipe needs."""
    for index, repo in enumerate(recipe.repos):
        if repo not in preset.yum:
            raise recipe.error(("repos", index), f"preset {preset.name!r} ({preset.source}) has "
                               f"no yum repo {repo!r}", did_you_mean(repo, preset.yum)
                               or f"it has: {', '.join(sorted(preset.yum))}")
    for name in recipe.binaries:
        if name not in preset.releases:
            raise recipe.error(("binaries", name), f"preset {preset.name!r} ({preset.source}) "
                               f"has no release source {name!r}",
                               did_you_mean(name, preset.releases)
                               or f"it has: {', '.join(sorted(preset.releases))}")
    kubeadm_registry = recipe.kubernetes.image_repository.split("/")[0]
    wanted: List[Tuple[KeyPath, str]] = [(("kubernetes", "image_repository"), kubeadm_registry)]
    for name, addon in recipe.addons.items():
        wanted += [(("addons", name, "images", i), parse_image(ref).registry)
                   for i, ref in enumerate(addon.images)]
    for path, selector in _explicit_images(recipe):
        wanted.append((path, parse_image(selector.name).registry))
    for path, selector in _selectors(recipe):
        if selector.kind in OWN_SETS:
            wanted += [(path, parse_image(ref).registry) for ref in OWN_SETS[selector.kind]]
    for path, registry in wanted:
        if registry not in preset.registries:
            raise recipe.error(path, f"preset {preset.name!r} ({preset.source}) has no mirror "
                               f"for registry {registry!r}",
                               f"it has: {', '.join(sorted(preset.registries))}")


def _selectors(recipe: Recipe) -> Iterable[Tuple[KeyPath, ImageSelector]]:
    for index, selector in enumerate(recipe.images):
        yield ("images", index), selector
    for role in recipe.roles.values():
        for index, selector in enumerate(role.images):
            yield ("roles", role.name, "images", index), selector


def _explicit_images(recipe: Recipe) -> Iterable[Tuple[KeyPath, ImageSelector]]:
    return ((path, selector) for path, selector in _selectors(recipe) if selector.kind == "image")
