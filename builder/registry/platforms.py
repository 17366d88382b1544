"""Target platforms (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`) and how an image index
entry is chosen for one, following containerd's `platforms` package (Normalize, Only), so that
the bundle holds what containerd on the host would have pulled.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

from builder.errors import UsageError


class Platform(NamedTuple):
    os: str
    architecture: str
    variant: str = ""  # "" when none (after normalisation: arm64/v8 -> arm64, amd64/v1 -> amd64)

    def __str__(self) -> str:
        return "/".join(p for p in self if p)


def parse_platform(text: str) -> Platform:
    """`linux/amd64`, `linux/arm64/v8`, `linux/arm` -> a normalised Platform."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"platform {text!r}: expected os/architecture[/variant], "
                         "e.g. linux/amd64 or linux/arm/v7")
    return normalize(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def normalize(os_name: str, arch: str, variant: str = "") -> Platform:
    """containerd's Normalize: common aliases to Go's names, default variants made explicit
    (arm -> arm/v7) or dropped (arm64/v8 -> arm64, amd64/v1 -> amd64)."""
    os_name, arch, variant = os_name.lower(), arch.lower(), (variant or "").lower()
    if os_name == "macos":
        os_name = "darwin"
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch = "amd64"
        if variant == "v1":
            variant = ""
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        if variant in ("8", "v8"):
            variant = ""
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return Platform(os_name, arch, variant)


def from_descriptor(platform: Optional[Mapping[str, Any]]) -> Optional[Platform]:
    """The normalised platform of an index entry or image config; None when it has none."""
    if not isinstance(platform, Mapping):
        return None
    os_name, arch = platform.get("os"), platform.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    variant = platform.get("variant")
    return normalize(os_name, arch, variant if isinstance(variant, str) else "")


def as_served(platform: Mapping[str, Any]) -> str:
    """os/architecture[/variant] exactly as an index entry declares it (for records)."""
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(p) for p in parts if p)


def acceptable(wanted: Platform) -> Sequence[Platform]:
    """Platforms that can run on `wanted`, best first (containerd's Only): an arm/v7 host
    also runs v6 and v5 images; everything else matches exactly after normalisation."""
    if wanted.architecture == "arm":
        ladder = {"v8": ("v8", "v7", "v6", "v5"), "v7": ("v7", "v6", "v5"), "v6": ("v6", "v5")}
        variants = ladder.get(wanted.variant, (wanted.variant,))
        return [Platform(wanted.os, "arm", v) for v in variants]
    return [wanted]


def choose(wanted: Platform, entries: Iterable[Mapping[str, Any]]) -> Optional[int]:
    """Index of the entry (with a `platform` field) best matching `wanted`; None if none.
    Among equals the first wins, as in containerd. Attestation entries (unknown/unknown)
    never match."""
    ranked = list(acceptable(wanted))
    best: Optional[tuple[int, int]] = None
    for position, entry in enumerate(entries):
        found = from_descriptor(entry.get("platform"))
        if found is None or found not in ranked:
            continue
        rank = ranked.index(found)
        if best is None or rank < best[0]:
            best = (rank, position)
    return best[1] if best else None
