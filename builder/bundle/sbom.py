"""The bundle's software bill of materials: an SPDX 2.3 JSON document, sbom.spdx.json at the
top of the bundle, listed in bundle.json like every member and so covered by the signature.

It names everything that enters the isolated network with the bundle, from the lock alone
(same lock, same bytes; `created` is the lock's):
- every RPM: name, epoch:version-release, arch, SHA-256, the URL it was downloaded from, the
  repository and the fingerprints of the keys that repository's packages are checked against;
- every release binary: URL, SHA-256 and the upstream checksum file it was checked with;
- every image: canonical reference, manifest and config digests, the mirror it came from, and
  each layer (shared layers once) as a package of its own that the image CONTAINS;
- the installer's bundled Python packages: name, version and the wheel's SHA-256;
with package URLs (purl, https://github.com/package-url/purl-spec) so scanners can match them.

Format: https://spdx.github.io/spdx-spec/v2.3/ (document creation information, package
information, relationships). Licences are NOASSERTION: the lock records none.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from typing import Any, Dict, Iterable, List, Sequence
from urllib.parse import quote

from builder.inputs.lockfile import Lock, dump_lock

SBOM_PATH = "sbom.spdx.json"
NONE = "NOASSERTION"


def _spdx_id(kind: str, text: str) -> str:
    """An SPDX identifier (letters, digits, '.' and '-' only), unique per kind and text."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")[:60]
    return "SPDXRef-{}-{}-{}".format(kind, readable, hashlib.sha256(text.encode()).hexdigest()[:8])


def _evr(nevra: str, name: str, arch: str) -> str:
    """epoch:version-release from a name-[epoch:]version-release.arch string."""
    middle = nevra[len(name) + 1:]
    return middle[: -(len(arch) + 1)] if middle.endswith("." + arch) else middle


def _rpm_purl(os_name: str, name: str, evr: str, arch: str, baseurl: str) -> str:
    epoch, _, version_release = evr.rpartition(":")
    qualifiers = [("arch", arch)] + ([("epoch", epoch)] if epoch and epoch != "0" else []) + \
        [("repository_url", baseurl)]
    return "pkg:rpm/{}/{}@{}?{}".format(os_name.lower(), quote(name), quote(version_release),
                                        "&".join(f"{k}={quote(v, safe='/:')}"
                                                 for k, v in sorted(qualifiers)))


def _oci_purl(reference: str, manifest_digest: str, platform: str) -> str:
    repository, _, tag = reference.rpartition(":")
    name = repository.rsplit("/", 1)[-1]
    arch = platform.split("/", 1)[-1]
    return "pkg:oci/{}@{}?arch={}&repository_url={}&tag={}".format(
        quote(name), quote(manifest_digest, safe=""), quote(arch), quote(repository, safe="/"),
        quote(tag))


def _package(spdx_id: str, name: str, version: str, location: str, sha256: str,
             purl: str = "", comment: str = "", supplier: str = "") -> Dict[str, Any]:
    package: Dict[str, Any] = {
        "SPDXID": spdx_id, "name": name, "versionInfo": version or NONE,
        "downloadLocation": location or NONE, "filesAnalyzed": False,
        "licenseConcluded": NONE, "licenseDeclared": NONE, "copyrightText": NONE,
    }
    if sha256:
        package["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
    if supplier:
        package["supplier"] = supplier
    if purl:
        package["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER",
                                    "referenceType": "purl", "referenceLocator": purl}]
    if comment:
        package["comment"] = comment
    return package


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def render_sbom(lock: Lock, bundle_name: str, builder_version: str,
                wheels: Iterable[Sequence[str]] = ()) -> bytes:
    """The SPDX 2.3 JSON document for the bundle built from `lock`. `wheels`: (name, version,
    sha256) of the installer's bundled Python packages."""
    created = datetime.datetime.fromtimestamp(lock.created, datetime.timezone.utc)
    target = lock.target
    os_name = target.os or "linux"
    lock_sha = hashlib.sha256(dump_lock(lock)).hexdigest()
    bundle_id = "SPDXRef-Bundle"
    packages: List[Dict[str, Any]] = [_package(
        bundle_id, bundle_name, lock.kubernetes_version, NONE, "",
        comment="kubecrate bundle for {} {} {}, Kubernetes {}".format(
            os_name, target.release, target.arch, lock.kubernetes_version))]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": bundle_id}]

    def contains(parent: str, child: Dict[str, Any]) -> None:
        packages.append(child)
        relationships.append({"spdxElementId": parent, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": child["SPDXID"]})

    repos = {repo.id: repo for repo in lock.repos}
    for rpm in lock.rpms:
        repo = repos.get(rpm.repo)
        fingerprints = sorted({k.fingerprint for k in repo.gpgkeys} if repo else ())
        evr = _evr(rpm.nevra, rpm.name, rpm.arch)
        contains(bundle_id, _package(
            _spdx_id("RPM", rpm.nevra), rpm.name, evr, rpm.url,
            _hex(rpm.sha256), _rpm_purl(os_name, rpm.name, evr, rpm.arch,
                                        repo.baseurl if repo else ""),
            comment="from repository {} ({}); signature checked against key(s) {}".format(
                rpm.repo, repo.baseurl if repo else "?", ", ".join(fingerprints) or "none")))
    for binary in lock.binaries:
        contains(bundle_id, _package(
            _spdx_id("Binary", "{}-{}".format(binary.filename, binary.arch)),
            binary.name, binary.version, binary.url, _hex(binary.sha256),
            "pkg:generic/{}@{}?download_url={}".format(
                quote(binary.name), quote(binary.version), quote(binary.url, safe="")),
            comment="checked against the upstream checksum file {}".format(
                binary.checksum_url or "(none: pinned by the lock)")))
    layers_seen: Dict[str, str] = {}
    for image in lock.images:
        image_id = _spdx_id("Image", image.reference)
        contains(bundle_id, _package(
            image_id, image.reference.rpartition(":")[0], image.reference.rpartition(":")[2],
            image.source or NONE, _hex(image.manifest_digest),
            _oci_purl(image.reference, image.manifest_digest, image.platform),
            comment="manifest {}, config {}, platform {}, pulled from {}".format(
                image.manifest_digest, image.config_digest, image.platform,
                image.source or "?")))
        for layer in image.layers:
            digest = layer.digest
            if digest in layers_seen:
                relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                                      "relatedSpdxElement": layers_seen[digest]})
                continue
            layers_seen[digest] = _spdx_id("Layer", digest)
            contains(image_id, _package(layers_seen[digest], "layer " + _hex(digest)[:12],
                                        NONE, NONE, _hex(digest),
                                        comment="{} bytes, {}".format(layer.size,
                                                                      layer.media_type)))
    for name, version, sha256 in wheels:
        contains(bundle_id, _package(
            _spdx_id("Python", f"{name}-{version}"), name, version,
            f"https://pypi.org/project/{name}/{version}/", sha256,
            f"pkg:pypi/{name.lower()}@{version}",
            comment="bundled in kubecrate-installer.pyz"))

    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": bundle_name,
        "documentNamespace": "https://kubecrate.invalid/spdx/{}/{}".format(
            quote(bundle_name), lock_sha),
        "creationInfo": {"created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "creators": [f"Tool: kubecrate-{builder_version}"]},
        "packages": packages,
        "relationships": relationships,
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")
