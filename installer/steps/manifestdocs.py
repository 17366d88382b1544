"""The CNI manifests' documents (installer/steps/cni.py for flannel, calico.py): read from the
bundle's YAML, customised as objects, and written back as JSON documents (which are YAML too,
what `kubectl apply -f` reads) with sorted keys, so the same inputs give the same bytes."""

import json
from typing import Any, Dict, List

import yaml


def load(text: str) -> List[Dict[str, Any]]:
    """The manifest's documents, empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def dump(docs: List[Dict[str, Any]]) -> str:
    return "".join("---\n" + json.dumps(doc, indent=1, sort_keys=True) + "\n" for doc in docs)


def containers(doc: Any) -> List[dict]:
    """The containers of a workload's pod template (spec.template.spec.containers)."""
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c for c in spec.get("containers") or [] if isinstance(c, dict)]
