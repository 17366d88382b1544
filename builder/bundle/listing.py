"""`kubecrate inspect`: what a bundle holds, as a dict (for --json) and as short text lines.

    with open_bundle(path) as contents:
        summary = describe(contents)
        lines = format_listing(summary)
"""

from __future__ import annotations

from typing import Any, Dict, List

from builder.bundle.contents import BundleContents
from installer.format.upgradepath import read_path

__all__ = ["describe", "format_listing"]


def describe(contents: BundleContents) -> Dict[str, Any]:
    """Name, target, roles, packages, images, binaries and sizes, from bundle.json and the
    members actually present."""
    sections = contents.sections
    sizes = contents.size_by_section()
    plan = contents.delta
    archived = {image.reference for image in contents.images()} if plan is None else set()
    images = []
    for entry in sections.images:
        images.append({"reference": entry.reference, "roles": list(entry.roles),
                       "size": entry.size, "config_digest": entry.image_id,
                       "in_archive": entry.reference in archived if plan is None else None})
    delta = None
    if plan is not None:
        sources = [item.source for item in plan.files]
        delta = {"base": {"name": plan.base_name, "bundle_json_sha256": plan.base_sha256},
                 "result": {"name": plan.result_name, "bundle_json_sha256": plan.result_sha256,
                            "size": plan.result_size, "files": len(plan.files)},
                 "carried": sources.count("delta"), "pieces": sources.count("pieces"),
                 "from_base": sources.count("base")}
    return {
        "delta": delta,
        "upgrade_path": [dict(step._asdict(), dir=step.dir)
                         for step in read_path(contents.manifest)],
        "name": contents.name,
        "file": str(contents.path),
        "created": contents.manifest.get("created"),
        "target": sections.target.to_json() if sections.target else {},
        "kubernetes_version": sections.kubernetes_version or None,
        "runtime": sections.runtime.to_json() if sections.runtime else None,
        "roles": {role: section.to_json() for role, section in sorted(sections.roles.items())},
        "packages": [{"nevra": p.nevra, "size": p.size}
                     for p in (contents.packages() if plan is None else [])],
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
    delta = summary.get("delta")
    if delta:
        base, result = delta["base"], delta["result"]
        lines[1:1] = [
            f"  a DELTA bundle: needs its base {base['name']} (bundle.json sha256 "
            f"{base['bundle_json_sha256']}) in the host's cache",
            f"  result {result['name']} (bundle.json sha256 {result['bundle_json_sha256']}, "
            f"{result['files']} files, full bundle {_kib(result['size'])}): "
            f"{delta['carried']} files carried, {delta['pieces']} assembled from pieces, "
            f"{delta['from_base']} taken from the base",
            "  what follows describes the result; its RPMs and the images' presence are "
            "checked when the host assembles it",
        ]
    path = summary.get("upgrade_path")
    if path:
        lines.append("  carries the releases before it, which `upgrade --bundle` walks in order: "
                     + " -> ".join(f"{step['kubernetes_version']} ({step['name']}, "
                                   f"{step['dir'][:len('steps/') + 12]}...)" for step in path)
                     + f" -> {summary['kubernetes_version']}")
    for role, section in sorted(summary["roles"].items()):
        lines.append(f"  role {role}: {len(section.get('packages') or [])} packages, "
                     f"{len(section.get('images') or [])} images")
        lines += [f"    package {spec}" for spec in section.get("packages") or []]
    lines.append(f"  RPMs ({len(summary['packages'])}):")
    lines += [f"    {p['nevra']}  {_kib(p['size'])}" for p in summary["packages"]]
    lines.append(f"  images ({len(summary['images'])}):")
    for image in summary["images"]:
        missing = "" if image["in_archive"] is not False else "  MISSING FROM THE ARCHIVE"
        lines.append(f"    {image['reference']}  {_kib(image['size'])}  "
                     f"[{', '.join(image['roles'])}]{missing}")
    lines.append(f"  binaries ({len(summary['binaries'])}):")
    lines += [f"    {b['path']}  {b['version']}  {_kib(b['size'])}" for b in summary["binaries"]]
    for name, addon in sorted(summary["addons"].items()):
        lines.append(f"  add-on {name} {addon.get('version')}: {addon.get('manifest', '-')}")
    return lines
