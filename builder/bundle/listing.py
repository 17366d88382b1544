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
    manifest = contents.manifest
    components = manifest.get("components") or {}
    sizes = contents.size_by_section()
    archived = {image.reference for image in contents.images()}
    images = []
    for entry in manifest.get("images") or []:
        images.append({"reference": entry.get("reference"), "roles": entry.get("roles") or [],
                       "size": entry.get("size"), "config_digest": entry.get("config_digest"),
                       "in_archive": entry.get("reference") in archived})
    return {
        "name": contents.name,
        "file": str(contents.path),
        "created": manifest.get("created"),
        "target": manifest.get("target") or {},
        "kubernetes_version": manifest.get("kubernetes_version"),
        "runtime": manifest.get("runtime"),
        "roles": manifest.get("roles") or {},
        "packages": [{"nevra": p.nevra, "size": p.size} for p in contents.packages()],
        "images": images,
        "binaries": [{"path": b.get("path"), "version": b.get("version"), "size": b.get("size")}
                     for b in components.get("binaries") or []],
        "addons": manifest.get("addons") or {},
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
