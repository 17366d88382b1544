"""Recipe variants the mirror world can build, derived from a committed recipe (nothing binary
is committed: the variant's RPM and image are ones the world already serves).

    path = write_delta_variant(REPO / "manifests/k8s-1.23.17-el7.yaml", folder)

The delta variant differs from the primary recipe in exactly one RPM and one image, which is
what a delta bundle between two bundles is measured on (docs/upgrades.md): the
containerd.io pin (1.6.33 -> 1.6.31, both in the world's docker-ce-stable, yum_packages.yaml)
and flannel's CNI plugin image (v1.2.0 -> v1.5.1-flannel2, both in images.yaml). The variant
keeps every other line, so its lock differs from the primary's only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

# (what the primary recipe says, what the variant says instead)
DELTA_CHANGES: Tuple[Tuple[str, str], ...] = (
    ("name: k8s-1.23.17-el7\n", "name: k8s-1.23.17-el7-next\n"),
    ("  - containerd.io = 1.6.33-3.1.el7\n", "  - containerd.io = 1.6.31-3.1.el7\n"),
    ("      - docker.io/flannel/flannel-cni-plugin:v1.2.0\n",
     "      - docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2\n"),
)
DELTA_RPM = ("containerd.io-1.6.33-3.1.el7.x86_64", "containerd.io-1.6.31-3.1.el7.x86_64")
DELTA_IMAGE = ("docker.io/flannel/flannel-cni-plugin:v1.2.0",
               "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2")


class VariantError(RuntimeError):
    """The recipe no longer holds a line the variant changes."""


def write_delta_variant(recipe: Path, folder: Path) -> Path:
    """Write `<folder>/k8s-1.23.17-el7-next.yaml`: `recipe` with one RPM and one image
    changed (DELTA_CHANGES); raises VariantError naming a line `recipe` lacks."""
    text = recipe.read_text(encoding="utf-8")
    for old, new in DELTA_CHANGES:
        if text.count(old) != 1:
            raise VariantError(f"{recipe}: expected the line {old.strip()!r} once, found it "
                               f"{text.count(old)} times; update mirrorworld/variants.py")
        text = text.replace(old, new)
    out = folder / "k8s-1.23.17-el7-next.yaml"
    out.write_text(text, encoding="utf-8")
    return out
