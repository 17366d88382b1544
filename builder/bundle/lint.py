"""`kubecrate lint`: prove a bundle complete before it travels to hosts that cannot fetch
anything it lacks.

    problems = lint_bundle(path)           # [] when complete; build raises LintFailed on any

Checked, from bundle.json and the members themselves (not from what bundle.json claims alone):
- every package of every role set is in the bundle repo's primary.xml (or in the assumed base);
- every image of every role set, of the kubeadm image set and of bundle.json's `images` list
  is in the image archive's index.json/manifest.json, with all its blobs present;
- no image is named by digest alone (`docker load` keeps no RepoDigests), neither in the
  archive, nor in bundle.json, nor in an add-on manifest's `image:` lines, and every image an
  add-on manifest runs is in the archive;
- no add-on manifest names a URL outside its comments (nothing a host could fetch);
- kubeadm, kubelet and kubectl are in bin/.
With a recipe, its role sets (expanded with the kubeadm image set) must also be bundle.json's.
With a cluster.yaml, what that cluster runs from the bundle must be there: in
`load_balancer.mode: static-pods`, the keepalived and haproxy images in the control-plane set;
`images.mode: registry` needs a containerd bundle (docs/cluster.md "images: mode").
A delta bundle (installer/format/delta.py) holds only what its base lacks: its plan must cover
the result's bundle.json file for file and every piece it names must be in it (the full result
was linted when it was built); with a recipe, the result's role sets must be the recipe's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from builder.bundle.contents import BundleContents, open_bundle
from builder.errors import BuildError
from builder.inputs.mirrors import MirrorPresetError, parse_image
from builder.inputs.recipe import Recipe, role_images
from builder.registry.kubeadm_images import kubeadm_images
from installer.format.bundleinfo import BundleSections, Role

__all__ = ["LintFailed", "lint_bundle", "lint_contents"]

_IMAGE_LINE = re.compile(r"^\s*-?\s*image:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
_URL = re.compile(r"\b(?:https?|ftp)://[^\s'\"]+")


def _uncommented(text: str) -> str:
    """YAML text without its `#` comments (a URL in a comment is documentation, not fetched)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


class LintFailed(BuildError):
    """The bundle lacks something its role sets need, or names an image by digest only."""

    def __init__(self, path: Path, problems: List[str]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems),
                         hint="rebuild the bundle with `kubecrate build`")
        self.problems = tuple(problems)


def lint_bundle(path: Path, recipe: Optional[Recipe] = None, key: Any = None,
                cluster: Any = None) -> List[str]:
    """Every problem found in bundle `path`, one line each naming the package or image;
    with `cluster` (an installer.format.cluster.Cluster) also what that cluster needs of it."""
    with open_bundle(path, key) as contents:
        if contents.delta is not None:
            # A delta holds only what its base lacks: its plan and members are checked here;
            # the full result was linted when it was built, before the delta was written.
            problems = contents.delta_problems()
            if recipe is not None:
                problems += _against_recipe(contents.sections, recipe)
            return problems
        problems = lint_contents(contents, recipe)
        if cluster is not None:
            problems += lint_cluster(contents, cluster)
        return problems


def delta_base(path: Path) -> str:
    """`<name> (bundle.json sha256 <digest>)` of a delta's base, or "" for a full bundle."""
    with open_bundle(path) as contents:
        plan = contents.delta
        return f"{plan.base_name} (bundle.json sha256 {plan.base_sha256})" if plan else ""


def lint_cluster(contents: BundleContents, cluster: Any) -> List[str]:
    """What `cluster` runs from the bundle that the bundle lacks (static-pod load balancer), and
    `images.mode: registry` against a Docker bundle."""
    lb = cluster.load_balancer
    role = contents.sections.roles.get("control-plane")
    control_plane = {str(parse_image(ref)) for ref in (role.images if role else ())}
    archived = {image.reference for image in contents.images()}
    problems = []
    for ref in lb.static_pod_images():
        canonical = str(parse_image(ref))
        if canonical not in control_plane or canonical not in archived:
            problems.append(f"image {canonical}: load_balancer.mode static-pods runs it on every "
                            "control-plane node, but the bundle's control-plane set lacks it "
                            "(add \"@loadbalancer\" to the recipe's roles.control-plane.images)")
    if cluster.images_mode == "registry" and contents.manifest.get("runtime") == "docker":
        problems.append(f"{cluster.source}: images.mode: registry needs containerd, but the "
                        "bundle's runtime is docker: Docker's registry-mirrors mirror Docker Hub "
                        "only (use images.mode: archive, or a containerd bundle)")
    return problems


def _by_digest_only(reference: str) -> bool:
    try:
        image = parse_image(reference)
    except MirrorPresetError:
        return True
    return bool(image.digest) or not image.tag or "@" in reference


def _spec_matches(spec: str, names: Dict[str, Set[str]]) -> bool:
    return spec in names or any(spec in forms for forms in names.values())


def lint_contents(contents: BundleContents, recipe: Optional[Recipe] = None) -> List[str]:
    sections = contents.sections
    problems: List[str] = []
    roles = sections.roles
    if not roles:
        problems.append("bundle.json has no roles section")

    # packages: a spec is a name or name-version[-release] (builder/bundle/stage.py install_spec)
    forms: Dict[str, Set[str]] = {}
    for p in contents.packages():
        forms.setdefault(p.name, set()).update(
            {p.name, f"{p.name}-{p.version}", f"{p.name}-{p.version}-{p.release}", p.nevra})
    base = {_name_of(nevra) for nevra in
            (sections.assumed_base.packages if sections.assumed_base else ())}
    for role, section in sorted(roles.items()):
        for spec in section.packages:
            if not _spec_matches(spec, forms) and spec not in base:
                problems.append(f"package {spec} ({role}) is not in the bundle repo")

    # images
    archived = {image.reference: image for image in contents.images()}
    blobs = contents.archive_blobs() if archived else set()
    wanted: Dict[str, Set[str]] = {}
    for role, section in roles.items():
        for ref in section.images:
            wanted.setdefault(ref, set()).add(role)
    for ref in sections.kubeadm_images:
        wanted.setdefault(ref, set()).add("kubeadm")
    for entry in sections.images:
        wanted.setdefault(entry.reference, set()).update(entry.roles)
    for ref in sorted(wanted):
        if _by_digest_only(ref):
            problems.append(f"image {ref} is named by digest only (docker load keeps no digests)")
        elif ref not in archived:
            problems.append(f"image {ref} ({', '.join(sorted(wanted[ref]))}) is not in "
                            f"{sections.image_archive}")
    for ref, image in sorted(archived.items()):
        if _by_digest_only(ref):
            problems.append(f"image archive names {ref} by digest only")
        lacking = [b for b in image.blobs if b not in blobs]
        if lacking:
            problems.append(f"image {ref}: blob sha256:{lacking[0]} is missing from the archive")

    for name, addon in sorted(sections.addons.items()):
        member = addon.manifest
        if not member:
            continue
        if member not in contents.members:
            problems.append(f"add-on {name}: {member} is missing")
            continue
        text = contents.read(member).decode("utf-8", "replace")
        for url in _URL.findall(_uncommented(text)):
            problems.append(f"add-on {name}: {member} names {url}: the hosts cannot reach it "
                            "(carry what it fetches in the bundle)")
        for ref in _IMAGE_LINE.findall(text):
            if _by_digest_only(ref):
                problems.append(f"add-on {name}: {member} names image {ref} by digest")
            elif str(parse_image(ref)) not in archived:
                problems.append(f"add-on {name}: {member} runs {ref}, which is not in the "
                                "image archive")

    for tool in ("kubeadm", "kubelet", "kubectl"):
        if f"bin/{tool}" not in contents.members and f"bin/{tool}.gz" not in contents.members:
            problems.append(f"bin/{tool} is missing")

    if recipe is not None:
        problems += _against_recipe(sections, recipe)
    return problems


def _against_recipe(sections: BundleSections, recipe: Recipe) -> List[str]:
    from builder.bundle.stage import install_spec  # stage imports the fetch chain; lint need not

    problems = []
    kubeadm = [k.reference for k in kubeadm_images(recipe.kubernetes.version)]
    expected = role_images(recipe, kubeadm)
    for role in recipe.roles:
        have = sections.roles.get(role, Role((), ()))
        for ref in sorted(set(expected[role]) - set(have.images)):
            problems.append(f"image {ref}: the recipe's {role} set has it, bundle.json does not")
        for spec in recipe.role_packages(role):
            if install_spec(spec) not in have.packages:
                problems.append(f"package {spec}: the recipe's {role} set has it, "
                                "bundle.json does not")
    for ref in kubeadm:
        if ref not in sections.kubeadm_images:
            problems.append(f"image {ref}: kubeadm {recipe.kubernetes.version} needs it, "
                            "bundle.json's kubeadm_images lacks it")
    return problems


def _name_of(nevra: str) -> str:
    return nevra.rsplit("-", 2)[0]
