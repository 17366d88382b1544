"""Helpers for tests that need keys, source folders and bundles (hostile ones included)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from builder.bundle import keys
from builder.bundle.pack import pack
from builder.bundle.sign import sign_file
from installer.format.manifest import dump_manifest

REPO = Path(__file__).resolve().parents[2]


def make_key(folder: Path) -> tuple[keys.SecretKey, Path, Path]:
    secret, public = keys.write_keypair(folder)
    return keys.load_secret_key(secret), secret, public


def make_source(folder: Path) -> Path:
    """A small tree shaped like a bundle's: repo, bin (executable), images."""
    (folder / "repo" / "Packages").mkdir(parents=True)
    (folder / "bin").mkdir()
    (folder / "images").mkdir()
    (folder / "repo" / "Packages" / "socat-1.7.3.2-2.el7.x86_64.rpm").write_bytes(b"r" * 3000)
    (folder / "bin" / "kubeadm").write_bytes(b"#!/bin/sh\necho kubeadm\n")
    (folder / "bin" / "kubeadm").chmod(0o750)
    (folder / "images" / "images.tar").write_bytes(bytes(range(256)) * 40)
    return folder


def pack_source(source: Path, out: Path, key: keys.SecretKey, **kwargs):
    return pack(source, out, key, **kwargs)


def signed_bundle(top: Path) -> tuple[keys.SecretKey, Path, Path]:
    """A key pair under top/keys and the small bundle of make_source packed as top/k8s.tar
    and signed with it: (secret key, public key path, bundle path)."""
    key, _, public = make_key(top / "keys")
    out = top / "k8s.tar"
    pack_source(make_source(top / "src"), out, key)
    return key, public, out


def hostile_bundle(out: Path, key: keys.SecretKey, members: list[tuple[tarfile.TarInfo, bytes]],
                   listed: list[dict] | None = None, format_version: int = 1) -> Path:
    """A correctly signed bundle whose tar holds exactly `members` after a bundle.json that
    lists `listed` (default: the regular members, honestly described) under
    `format_version`."""
    if listed is None:
        listed = [{"path": info.name, "size": len(data), "mode": 0o644,
                   "sha256": hashlib.sha256(data).hexdigest()}
                  for info, data in members if info.isfile()]
    manifest = dump_manifest({"format_version": format_version, "name": "hostile", "created": 0,
                              "files": listed})
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bundle.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    sign_file(key, out)
    return out


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for attr, value in attrs.items():
        setattr(info, attr, value)
    return info, data


def run_installer(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python3 -m installer ...` exactly as a user runs it from a checkout."""
    return subprocess.run([sys.executable, "-m", "installer", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def files_under(root: Path) -> list[str]:
    """What a run left under `root`, besides the installer's run log (var/log/kubecrate)."""
    if not root.exists():
        return []
    found = (str(p.relative_to(root)) for p in root.rglob("*"))
    return sorted(f for f in found
                  if f not in ("var", "var/log") and not f.startswith("var/log/kubecrate"))


def manifest_of(bundle: Path) -> dict:
    with tarfile.open(bundle) as tar:
        member = tar.extractfile("bundle.json")
        if member is None:
            raise ValueError(f"{bundle}: bundle.json is not a regular file")
        return json.load(member)
