"""The bundle's `addons/`: CNI manifests rendered for the recipe's add-on versions and images.

    render_addons(recipe.addons, stage)  # {"flannel": "addons/flannel/...yml"}

flannel's template is builder/data/kube-flannel.yml.j2 (the objects of flannel's
Documentation/kube-flannel.yml), calico's builder/data/calico.yaml.j2 (calico's manifest
install, VXLAN pool, Kubernetes datastore); other add-ons ship their images only. Manifests
name images by their full canonical references with tags, never by digest: `docker load`
keeps no RepoDigests (docs/bundle-format.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Tuple

import jinja2

from builder.errors import BuildError
from builder.inputs.mirrors import parse_image
from builder.inputs.recipe import Addon
from installer.format.bundleinfo import addon_manifest

__all__ = ["CALICO_POD_CIDR", "DEFAULT_POD_CIDR", "render_addons", "render_calico",
           "render_flannel"]

DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_POD_CIDR = "10.244.0.0/16"  # flannel's net-conf.json default; kubeadm podSubnet too
CALICO_POD_CIDR = "192.168.0.0/16"  # calico's default pool (the installer sets the cluster's)
# calico's custom resources (kind, plural, scope) in its Kubernetes datastore; from v3.30 on
# the policy tiers and staged policies too (calico manifests/crds.yaml of each release)
CALICO_CRDS = (
    ("BGPConfiguration", "bgpconfigurations", "Cluster"),
    ("BGPFilter", "bgpfilters", "Cluster"),
    ("BGPPeer", "bgppeers", "Cluster"),
    ("BlockAffinity", "blockaffinities", "Cluster"),
    ("CalicoNodeStatus", "caliconodestatuses", "Cluster"),
    ("ClusterInformation", "clusterinformations", "Cluster"),
    ("FelixConfiguration", "felixconfigurations", "Cluster"),
    ("GlobalNetworkPolicy", "globalnetworkpolicies", "Cluster"),
    ("GlobalNetworkSet", "globalnetworksets", "Cluster"),
    ("HostEndpoint", "hostendpoints", "Cluster"),
    ("IPAMBlock", "ipamblocks", "Cluster"),
    ("IPAMConfig", "ipamconfigs", "Cluster"),
    ("IPAMHandle", "ipamhandles", "Cluster"),
    ("IPPool", "ippools", "Cluster"),
    ("IPReservation", "ipreservations", "Cluster"),
    ("KubeControllersConfiguration", "kubecontrollersconfigurations", "Cluster"),
    ("NetworkPolicy", "networkpolicies", "Namespaced"),
    ("NetworkSet", "networksets", "Namespaced"),
)
CALICO_CRDS_330 = (
    ("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies", "Cluster"),
    ("StagedKubernetesNetworkPolicy", "stagedkubernetesnetworkpolicies", "Namespaced"),
    ("StagedNetworkPolicy", "stagednetworkpolicies", "Namespaced"),
    ("Tier", "tiers", "Cluster"),
)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(DATA)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def _images_by_name(addon: Addon, wanted: Tuple[str, ...], hint: str) -> Dict[str, str]:
    """`addon`'s images by the last part of their repository path; each of `wanted` must be
    there, named by tag."""
    by_name: Dict[str, str] = {}
    for ref in addon.images:
        image = parse_image(ref)
        if image.digest or not image.tag:
            raise BuildError(f"add-on {addon.name}: {ref} must be named by tag, not digest")
        by_name[image.repository.rsplit("/", 1)[-1]] = str(image)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise BuildError(f"add-on {addon.name} {addon.version}: no {' or '.join(missing)} image "
                         f"in its images ({', '.join(addon.images)})", hint=hint)
    return by_name


def render_calico(addon: Addon, pod_cidr: str = CALICO_POD_CIDR) -> str:
    """calico.yaml for `addon`'s version; its images must include calico's node, cni and
    kube-controllers (by the last part of the repository path)."""
    by_name = _images_by_name(addon, ("node", "cni", "kube-controllers"),
                              "list docker.io/calico/node:<v>, docker.io/calico/cni:<v> and "
                              "docker.io/calico/kube-controllers:<v>")
    crds = CALICO_CRDS + (CALICO_CRDS_330 if _minor(addon.version) >= (3, 30) else ())
    return _environment().get_template("calico.yaml.j2").render(
        version=addon.version, pod_cidr=pod_cidr, crds=sorted(crds, key=lambda c: c[1]),
        node_image=by_name["node"], cni_image=by_name["cni"],
        controllers_image=by_name["kube-controllers"])


def _minor(version: str) -> Tuple[int, int]:
    parts = version.lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise BuildError(f"add-on calico: version {version!r} is not vMAJOR.MINOR.PATCH")


def render_flannel(addon: Addon, pod_cidr: str = DEFAULT_POD_CIDR,
                   backend: str = "vxlan") -> str:
    """kube-flannel.yml for `addon`'s version; its images must include flannel and
    flannel-cni-plugin (by the last part of the repository path)."""
    by_name = _images_by_name(addon, ("flannel", "flannel-cni-plugin"),
                              "list docker.io/flannel/flannel:<v> and "
                              "docker.io/flannel/flannel-cni-plugin:<v>")
    return _environment().get_template("kube-flannel.yml.j2").render(
        version=addon.version, pod_cidr=pod_cidr, backend=backend,
        flannel_image=by_name["flannel"], cni_plugin_image=by_name["flannel-cni-plugin"])


_RENDERERS = {"flannel": ("kube-flannel.yml", render_flannel),
              "calico": ("calico.yaml", render_calico)}


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
