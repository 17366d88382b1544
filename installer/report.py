"""What `status --json` adds for an auditor, and `status --report FILE`.

Beside what state.json records, the report says who signed the installed bundle (the key id
and the trusted comment of the signature kept in the cache), which of the role's packages rpm
reports installed and at which version, which images the container runtime holds with their
IDs, what preflight found at install, and (installer/certs.py) when each certificate expires.
Two hosts' reports can be diffed: the keys are sorted and nothing in it is a secret.
"""

import json
import os
from typing import Any, Dict, List

from installer.atomic import replace_file
from installer.format import minisig
from installer.format.bundleinfo import BundleInfo
from installer.format.errors import KubecrateError
from installer.host import Host
from installer.runner import Runner
from installer.steps import images

RPM_FORMAT = "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}\\n"


def signer(host: Host, cache_folder: str) -> Dict[str, str]:
    """The key id and trusted comment of the signature kept with the installed bundle."""
    path = host.path(cache_folder + "/bundle.minisig")
    if not os.path.isfile(path):
        return {}
    try:
        signature = minisig.load_signature(path)
    except KubecrateError:
        return {"problem": "{} cannot be read".format(path)}
    return {"key_id": minisig.key_id_hex(signature.key_id),
            "trusted_comment": signature.trusted_comment}


def package_name(spec: str) -> str:
    """The name in an install spec: `name` or `name-version[-release]` (bundle.json roles)."""
    parts = spec.split("-")
    while len(parts) > 1 and parts[-1][:1].isdigit():
        parts.pop()
    return "-".join(parts)


def installed_rpms(runner: Runner, specs: List[str]) -> Dict[str, str]:
    """name -> epoch:version-release.arch as rpm reports it, or "not installed"."""
    names = sorted({package_name(spec) for spec in specs})
    if not names:
        return {}
    result = runner.query(["rpm", "-q", "--qf", RPM_FORMAT] + names, timeout=60)
    found = {name: "not installed" for name in names}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] in found:
            found[fields[0]] = fields[1]
    return found


def runtime_images(runner: Runner, info: BundleInfo) -> Dict[str, str]:
    """reference -> image ID (docker) or manifest digest (containerd) of the bundle's images
    that the runtime holds ("missing" for the others)."""
    held = images.runtime_images(runner, info.runtime)
    return {image.reference: held.get(images.normalize(image.reference), "missing")
            for image in info.images}


def write(path: str, result: Dict[str, Any]) -> None:
    """The report as sorted JSON, written whole (a temporary file renamed over `path`)."""
    data = (json.dumps(result, indent=1, sort_keys=True) + "\n").encode("utf-8")
    replace_file(os.path.abspath(path), lambda handle: handle.write(data), 0o644)
