"""bundle.json's `upgrade_path`: the releases a multi-minor bundle carries, in order, each a
complete bundle folder at `steps/<its bundle.json SHA-256>/` (docs/bundle-format.md, "Upgrade
path"). Read by the installer's walk (installer/upgradepath.py), written by the builder
(builder/bundle/upgradepath.py)."""

import re
from typing import Any, Dict, List, NamedTuple

from installer.format.errors import VerificationError

KEY = "upgrade_path"
STEPS_DIR = "steps"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


class PathStep(NamedTuple):
    kubernetes_version: str
    name: str
    sha256: str  # its bundle.json's SHA-256, which names its folder

    @property
    def dir(self) -> str:
        return "{}/{}".format(STEPS_DIR, self.sha256)


def read_path(data: Dict[str, Any]) -> List[PathStep]:
    """bundle.json's `upgrade_path`, checked: VerificationError names the key at fault."""
    listed = data.get(KEY) or []
    if not isinstance(listed, list):
        raise VerificationError("bundle.json: {} is not a list".format(KEY))
    steps = []
    for index, item in enumerate(listed):
        where = "bundle.json: {}[{}]".format(KEY, index)
        if not isinstance(item, dict) or not all(
                isinstance(item.get(field), str) for field in PathStep._fields):
            raise VerificationError("{}: needs the strings {}".format(
                where, ", ".join(PathStep._fields)))
        step = PathStep(*(item[field] for field in PathStep._fields))
        if not _VERSION.match(step.kubernetes_version):
            raise VerificationError("{}.kubernetes_version: not a Kubernetes version: "
                                    "{!r}".format(where, step.kubernetes_version))
        if not _HEX.match(step.sha256):
            raise VerificationError("{}.sha256: not a SHA-256".format(where))
        steps.append(step)
    return steps
