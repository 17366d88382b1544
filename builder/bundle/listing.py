"""`kubecrate inspect`: what a bundle holds, as a dict (for --json) and as short text lines.

    with open_bundle(path) as contents:
        summary = describe(contents)
        lines = format_listing(summary)
"""

from __future__ import annotations

from typing import Any, Dict, List

from builder.bundle.contents import BundleContents

__all__ = ["describe", "format_listing"]


def describe(contents: BundleContents) -> Dict[str, Any]:
    """Name, target, roles, packages, images, binaries and sizes, from bundle.json and the
    members actually present."""
    sections = contents.sections
    sizes = contents.size_by_section()
    archived = {image.reference for image in contents.images()}
    images = []
    for entry in sections.images:
        images.append({"reference": entry.reference, "roles": list(entry.roles),
                       "size": entry.size, "config_digest": entry.image_id,
                       "in_archive": entry.reference in archived})
    return {
        "name": contents.name,
        "file": str(contents.path),
        "created": contents.manifest.get("created"),
        "target": sections.target.to_json() if sections.target else {},
        "kubernetes_version": sections.kubernetes_version or None,
        "runtime": sections.runtime.to_json() if sections.runtime else None,
        "roles": {role: section.to_json() for role, section in sorted(sections.roles.items())},
        "packages": [{"nevra": p.nevra, "size": p.size} for p in contents.packages()],
        "images": images,
        "binaries": [{"path": b.path, "version": b.version, "size": b.size}
                     for b in sections.components.binaries],
        "addons": {name: addon.to_json() for name, addon in sorted(sections.addons.items())},
        "sizes": sizes,
        "total_size": sum(sizes.values()),
        "files": len(contents.members),
    }


def _kib(n: Any) -> str:
    n = int(n or 0)
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def format_listing(summary: Dict[str, Any]) -> List[str]:
    target = summary["target"]
    runtime = summary["runtime"]
    if isinstance(runtime, dict):
        runtime = " ".join(str(v) for v in (runtime.get("name"), runtime.get("version")) if v)
    lines = [
        f"{summary['name']}: Kubernetes {summary['kubernetes_version']}, {runtime}, "
        f"{target.get('os')} {target.get('release')} {target.get('arch')}",
        f"  {summary['files']} files, {_kib(summary['total_size'])}: "
        + ", ".join(f"{name} {_kib(size)}" for name, size in summary["sizes"].items()),
    ]
    for role, section in sorted(summary["roles"].items()):
        lines.append(f"  role {role}: {len(section.get('packages') or [])} packages, "
                     f"{len(section.get('images') or [])} images")
        lines += [f"    package {spec}" for spec in section.get("packages") or []]
    lines.append(f"  RPMs ({len(summary['packages'])}):")
    lines += [f"    {p['nevra']}  {_kib(p['size'])}" for p in summary["packages"]]
    lines.append(f"  images ({len(summary['images'])}):")
    for image in summary["images"]:
        missing = "" if image["in_archive"] else "  MISSING FROM THE ARCHIVE"
        lines.append(f"    {image['reference']}  {_kib(image['size'])}  "
                     f"[{', '.join(image['roles'])}]{missing}")
    lines.append(f"  binaries ({len(summary['binaries'])}):")
    lines += [f"    {b['path']}  {b['version']}  {_kib(b['size'])}" for b in summary["binaries"]]
    for name, addon in sorted(summary["addons"].items()):
        lines.append(f"  add-on {name} {addon.get('version')}: {addon.get('manifest', '-')}")
    return lines
