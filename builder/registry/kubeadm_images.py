"""The kubeadm image set per Kubernetes version, from builder/data/kubeadm-images.yaml.

    kubeadm_images("v1.23.17")  # (KubeadmImage("registry.k8s.io/kube-apiserver:v1.23.17",
                                #  ("control-plane",)), ...)
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Dict, NamedTuple, Tuple

import yaml

from builder.errors import BuildError
from builder.inputs.mirrors import parse_image

DATA = Path(__file__).resolve().parents[1] / "data" / "kubeadm-images.yaml"
ROLES = ("control-plane", "worker")


class KubeadmImage(NamedTuple):
    reference: str  # canonical: registry.k8s.io/coredns/coredns:v1.8.6
    roles: Tuple[str, ...]  # which nodes need it: control-plane, worker


class UnknownKubernetesVersion(BuildError):
    """No kubeadm image set is recorded for the version a recipe asks for."""


def kubeadm_images(version: str) -> Tuple[KubeadmImage, ...]:
    """The images kubeadm of `version` ("v1.23.17" or "1.23.17") pulls, in kubeadm's order."""
    table = _load(str(DATA))
    key = version if version.startswith("v") else "v" + version
    if key not in table:
        close = difflib.get_close_matches(key, sorted(table), n=1)
        raise UnknownKubernetesVersion(
            f"no kubeadm image set for Kubernetes {key} in {DATA}",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"known: {', '.join(sorted(table))}; add the version's "
              "`kubeadm config images list` output there")
    return table[key]


def known_versions() -> Tuple[str, ...]:
    return tuple(sorted(_load(str(DATA))))


@cache
def _load(path: str) -> Dict[str, Tuple[KubeadmImage, ...]]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise BuildError(f"{path}: want a mapping of version -> image list")
    table = {}
    for version, entries in data.items():
        if not isinstance(entries, list) or not entries:
            raise BuildError(f"{path}: {version}: want a non-empty list of images")
        images = []
        for index, entry in enumerate(entries):
            where = f"{path}: {version}[{index}]"
            if not isinstance(entry, dict) or set(entry) != {"ref", "roles"}:
                raise BuildError(f"{where}: want exactly the keys ref and roles")
            roles = tuple(entry["roles"] or ())
            if not roles or not set(roles) <= set(ROLES):
                raise BuildError(f"{where}: roles must be among {', '.join(ROLES)}")
            name = parse_image(entry["ref"])
            if str(name) != entry["ref"] or not name.tag:
                raise BuildError(f"{where}: {entry['ref']!r} is not a canonical name:tag")
            images.append(KubeadmImage(entry["ref"], roles))
        table[str(version)] = tuple(images)
    return table
