"""The bundle's `addons/`: CNI manifests rendered for the recipe's add-on versions and images.

    render_addons(recipe.addons, stage)  # {"flannel": "addons/flannel/...yml"}

Only flannel has a manifest template so far (builder/data/kube-flannel.yml.j2, the objects of
flannel's Documentation/kube-flannel.yml); other add-ons ship their images
only. Manifests name images by their full canonical references with tags, never by digest:
`docker load` keeps no RepoDigests (docs/bundle-format.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping

import jinja2

from builder.errors import BuildError
from builder.inputs.mirrors import parse_image
from builder.inputs.recipe import Addon
from installer.format.bundleinfo import addon_manifest

__all__ = ["DEFAULT_POD_CIDR", "render_addons", "render_flannel"]

DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_POD_CIDR = "10.244.0.0/16"  # flannel's net-conf.json default; kubeadm podSubnet too


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(DATA)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def render_flannel(addon: Addon, pod_cidr: str = DEFAULT_POD_CIDR,
                   backend: str = "vxlan") -> str:
    """kube-flannel.yml for `addon`'s version; its images must include flannel and
    flannel-cni-plugin (by the last part of the repository path)."""
    by_name: Dict[str, str] = {}
    for ref in addon.images:
        image = parse_image(ref)
        if image.digest or not image.tag:
            raise BuildError(f"add-on flannel: {ref} must be named by tag, not digest")
        by_name[image.repository.rsplit("/", 1)[-1]] = str(image)
    missing = [n for n in ("flannel", "flannel-cni-plugin") if n not in by_name]
    if missing:
        raise BuildError(f"add-on flannel {addon.version}: no {' or '.join(missing)} image in "
                         f"its images ({', '.join(addon.images)})",
                         hint="list docker.io/flannel/flannel:<v> and "
                              "docker.io/flannel/flannel-cni-plugin:<v>")
    return _environment().get_template("kube-flannel.yml.j2").render(
        version=addon.version, pod_cidr=pod_cidr, backend=backend,
        flannel_image=by_name["flannel"], cni_plugin_image=by_name["flannel-cni-plugin"])


_RENDERERS = {"flannel": ("kube-flannel.yml", render_flannel)}


def render_addons(addons: Mapping[str, Addon], folder: Path) -> Dict[str, str]:
    """Write each add-on's manifest into the bundle tree `folder` (at
    installer/format/bundleinfo.py's addon_manifest path); return those paths by add-on,
    for bundle.json."""
    written = {}
    for name, addon in sorted(addons.items()):
        if name not in _RENDERERS:
            continue
        filename, render = _RENDERERS[name]
        path = addon_manifest(name, filename)
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(render(addon), encoding="utf-8")
        written[name] = path
    return written
