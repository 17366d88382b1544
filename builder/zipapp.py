"""The installer zipapp, `kubecrate-installer.pyz`: the project's `installer/` package, the
builder's public key, and pure-Python dependencies pinned for CPython 3.6, packed by shiv 1.0.8
behind a `#!/bin/sh` preamble (builder/data/zipapp-preamble.sh) and signed like a bundle.

Pipeline: `load_pins()` reads builder/data/installer-requirements.txt -> `fetch_wheels()` takes
each wheel from the content-addressed cache or downloads the missing ones once with pip ->
`stage()` unpacks them without C extensions, tests or optional integrations, next to
`installer/` and `installer/trusted.pub` -> shiv builds the zipapp -> `_repack()` puts the sh
preamble in front with sorted members and fixed modes -> `build_zipapp()` signs it. The same
inputs give the same bytes (on the same zlib).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from builder.bundle.keys import SecretKey
from builder.bundle.rotation import (
    RETIRING_KEYS,
    Rotation,
    check_rotation,
    comment_fields,
    retiring_document,
)
from builder.bundle.sign import sign_file
from builder.cache import Cache
from builder.errors import BuildError
from installer.format import __version__ as installer_version
from installer.format import minisig

__all__ = [
    "INSTALLER_NAME",
    "SHIV_ROOT",
    "Pin",
    "ZipappError",
    "ZipappResult",
    "build_zipapp",
    "fetch_wheels",
    "load_pins",
    "stage",
]

INSTALLER_NAME = "kubecrate-installer.pyz"
SHIV_ROOT = "/var/lib/kubecrate/shiv"  # shiv's extraction root on hosts; SHIV_ROOT overrides
ENTRY_POINT = "installer.cli:main"
EMBEDDED_KEY = "trusted.pub"  # installer/cliopts.py reads it with pkgutil.get_data
DATA = Path(__file__).resolve().parent / "data"
REQUIREMENTS = DATA / "installer-requirements.txt"
PREAMBLE = DATA / "zipapp-preamble.sh"
# Replace shiv's __main__.py and _bootstrap/: the installer checks its extracted code at every
# start and honours no code-injecting variable (builder/data/zipapp_boot.py says why).
MAIN = DATA / "zipapp_main.py"
BOOT = DATA / "zipapp_boot.py"
BOOT_MODULE = "_kubecrate_boot.py"
FILE_LIST = "kubecrate-site-packages.json"  # path under site-packages/ -> sha256
INSTALLER_SOURCE = Path(__file__).resolve().parent.parent / "installer"
SHIV_DEFAULT_EPOCH = 315532800  # shiv's --reproducible default (1980-01-01)
# The CentOS 7 signing key (RPM-GPG-KEY-CentOS-7), which signs the python3 RPMs that the sh
# preamble installs on a minimal host; the same pin as manifests/mirrors/upstream.yaml.
CENTOS7_FINGERPRINT = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")

# pip resolves for the hosts' interpreter, not the building one (pip's --python-version).
PIP_TARGET = ("--only-binary=:all:", "--python-version", "3.6", "--implementation", "cp",
              "--abi", "cp36m", "--abi", "none", "--platform", "manylinux1_x86_64",
              "--platform", "manylinux2010_x86_64", "--platform", "manylinux2014_x86_64",
              "--platform", "any")

# Left out of the zipapp, so that it holds no compiled code and every module in it imports.
_DROP_EVERYWHERE = (
    ("*.so", "C extension"), ("*.so.*", "C extension"), ("*.pyd", "C extension"),
    ("*.dylib", "C extension"), ("*.c", "C source"), ("*.libs/*", "bundled shared library"),
    ("*/__pycache__/*", "bytecode"), ("*.pyc", "bytecode"),
    ("*/tests/*", "test suite"), ("*/test_*.py", "test module"),
)
_DROP_BY_DIST = {
    # Only wrap the dropped extensions; both packages fall back to pure Python by themselves.
    "markupsafe": (("markupsafe/_speedups.pyi", "stub of the C extension"),),
    "pyyaml": (("_yaml/*", "wraps the libyaml extension"),
               ("yaml/cyaml.py", "wraps the libyaml extension")),
    # Integrations that import libraries a host does not have (keras, dask, rich, pandas,
    # disco, slack_sdk, requests; tkinter is not in CentOS's python3 RPM). tqdm/gui.py stays:
    # tqdm/__init__.py imports it, and it imports matplotlib only when used.
    "tqdm": tuple((pattern, "optional integration") for pattern in (
        "tqdm/keras.py", "tqdm/dask.py", "tqdm/rich.py", "tqdm/tk.py", "tqdm/contrib/bells.py",
        "tqdm/contrib/discord.py", "tqdm/contrib/slack.py", "tqdm/contrib/telegram.py")),
    "click": (("click/_winconsole.py", "Windows only"),),
}

Runner = Callable[..., subprocess.CompletedProcess]


class ZipappError(BuildError):
    """The installer zipapp cannot be built: a pin, a download, or shiv failed."""


class Pin(NamedTuple):
    """One line of the requirements file: an exact release and the sha256 of its wheel."""

    name: str
    version: str
    sha256: str
    line: str  # as written, for pip's --require-hashes

    @property
    def key(self) -> str:
        """The normalised project name (PEP 503)."""
        return re.sub(r"[-_.]+", "-", self.name).lower()


class ZipappResult(NamedTuple):
    path: Path
    size: int
    sha256: str
    signature_path: Optional[Path]
    public_key_id: str
    build_id: str  # shiv's; names the extraction folder under SHIV_ROOT
    members: int
    dropped: Sequence[str]  # "site-packages/<path>: <reason>" for every file left out
    downloaded: Sequence[str]  # wheels fetched from PyPI in this run (empty on a warm cache)


# --------------------------------------------------------------------------- pins and wheels


_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)\s+--hash=sha256:([0-9a-f]{64})$")


def load_pins(path: Path = REQUIREMENTS) -> List[Pin]:
    """The pinned dependencies: `name==version --hash=sha256:HEX`, one per line."""
    pins = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if not match:
            raise ZipappError(
                f"{path}:{number}: want NAME==VERSION --hash=sha256:HEX, got {line!r}")
        pins.append(Pin(match.group(1), match.group(2), match.group(3), line))
    return pins


def fetch_wheels(pins: Sequence[Pin], cache: Cache, run: Runner = subprocess.run
                 ) -> tuple[Dict[str, Path], List[str]]:
    """Path of every pinned wheel in the cache (by project key), downloading only the missing
    ones, with pip checking the pinned hashes. Returns (paths, names downloaded now)."""
    missing = [pin for pin in pins if not cache.has(pin.sha256)]
    downloaded = []
    if missing:
        with tempfile.TemporaryDirectory(prefix="kubecrate-wheels-") as tmp:
            requirements = Path(tmp, "requirements.txt")
            requirements.write_text("".join(pin.line + "\n" for pin in missing), encoding="utf-8")
            argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                    "--disable-pip-version-check", "--progress-bar", "off", *PIP_TARGET,
                    "-r", str(requirements), "-d", str(Path(tmp, "wheels"))]
            result = run(argv, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
                raise ZipappError(
                    f"pip could not download the installer's wheels: {tail}",
                    hint="the first build needs PyPI; later builds use the cache "
                         f"({cache.root})")
            by_hash = {pin.sha256: pin for pin in missing}
            for wheel in sorted(Path(tmp, "wheels").glob("*.whl")):
                digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
                if digest in by_hash:
                    with cache.writer(digest, wheel.name) as out, wheel.open("rb") as src:
                        shutil.copyfileobj(src, out)
                    downloaded.append(wheel.name)
    absent = [f"{pin.name}=={pin.version}" for pin in pins if not cache.has(pin.sha256)]
    if absent:
        raise ZipappError(f"pip returned no wheel with the pinned hash for: {', '.join(absent)}")
    return {pin.key: cache.path(pin.sha256) for pin in pins}, downloaded


# --------------------------------------------------------------------------- staging


def _drop_reason(dist: str, path: str) -> Optional[str]:
    candidates = [path, "/" + path]
    for pattern, reason in _DROP_EVERYWHERE + _DROP_BY_DIST.get(dist, ()):
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return reason
    return None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def _unpack_wheel(dist: str, wheel: Path, dest: Path, dropped: List[str]) -> None:
    """Install a wheel by unpacking it (no scripts, no compilation); drop what _drop_reason
    names, and those files' lines in the RECORD."""
    removed = set()
    record = None
    with zipfile.ZipFile(wheel) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            name = info.filename
            parts = PurePosixPath(name).parts
            if info.is_dir():
                continue
            if name.startswith("/") or ".." in parts:
                raise ZipappError(f"{wheel.name}: unsafe member path {name!r}")
            if ".data" in parts[0] and parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    dropped.append(f"{wheel.name}:{name}: not a library file")
                    continue
                name = "/".join(parts[2:])
            reason = _drop_reason(dist, name)
            if reason:
                removed.add(name)
                dropped.append(f"site-packages/{name}: {reason}")
                continue
            if name.endswith(".dist-info/RECORD"):
                record = (name, archive.read(info))
                continue
            _write(dest / name, archive.read(info))
    if record is not None:
        lines = [line for line in record[1].decode("utf-8").splitlines()
                 if line.split(",", 1)[0] not in removed]
        _write(dest / record[0], ("\n".join(lines) + "\n").encode("utf-8"))


def stage(wheels: Dict[str, Path], public_key_text: str, dest: Path,
          installer_source: Path = INSTALLER_SOURCE,
          rotation: Optional[Rotation] = None) -> List[str]:
    """Fill `dest` as the zipapp's site-packages: the wheels, then `installer/` with the
    embedded key (and, in a key rotation, the retiring key with its expiry). Returns what was
    left out and why."""
    dropped: List[str] = []
    for dist, wheel in sorted(wheels.items()):
        _unpack_wheel(dist, wheel, dest, dropped)
    for source in sorted(installer_source.rglob("*")):
        relative = source.relative_to(installer_source.parent)
        if source.is_dir() or "__pycache__" in relative.parts or source.suffix == ".pyc":
            continue
        if source.name in (EMBEDDED_KEY, RETIRING_KEYS):
            continue  # a key lying in the checkout never replaces the one asked for
        _write(dest / relative, source.read_bytes())
    _write(dest / "installer" / EMBEDDED_KEY, public_key_text.encode("utf-8"))
    if rotation is not None:
        _write(dest / "installer" / RETIRING_KEYS, retiring_document(rotation))
    for directory in sorted(p for p in dest.rglob("*") if p.is_dir()):
        directory.chmod(0o755)
    return dropped


# --------------------------------------------------------------------------- building


def _shiv(site_packages: Path, out: Path, epoch: int, run: Runner) -> None:
    argv = [sys.executable, "-m", "shiv", "--site-packages", str(site_packages),
            "--reproducible", "--compressed", "--root", SHIV_ROOT, "--entry-point", ENTRY_POINT,
            "--python", "/usr/bin/env python3", "--output-file", str(out)]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    result = run(argv, capture_output=True, text=True, timeout=600, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ZipappError(f"shiv failed: {tail}")


def _repack(built: Path, out: Path, preamble: bytes) -> int:
    """Write `built`'s members, sorted, with fixed modes, behind `preamble`. The zip's offsets
    count from the start of the file, so python, zipimport and unzip all read it."""
    with zipfile.ZipFile(built) as source, out.open("wb") as handle:
        handle.write(preamble)
        members = {info.filename: source.read(info) for info in source.infolist()
                   if not info.filename.startswith("_bootstrap/")}
        date_time = source.getinfo("environment.json").date_time
        members["__main__.py"] = MAIN.read_bytes()
        members[BOOT_MODULE] = BOOT.read_bytes()
        members[FILE_LIST] = json.dumps(
            {name[len("site-packages/"):]: hashlib.sha256(data).hexdigest()
             for name, data in members.items() if name.startswith("site-packages/")},
            sort_keys=True, indent=0).encode("utf-8")
        with zipfile.ZipFile(handle, "w") as target:
            for name in sorted(members):
                member = zipfile.ZipInfo(name, date_time=date_time)
                member.compress_type = zipfile.ZIP_DEFLATED
                member.create_system = 3  # unix, whatever the build host
                member.external_attr = (0o100644 << 16)
                target.writestr(member, members[name])
    return len(members)


def preamble_text(vendor_fingerprint: str = CENTOS7_FINGERPRINT) -> bytes:
    """The sh preamble with the vendor key's fingerprint pinned (it is covered by the .pyz's
    signature, so a host can trust the key file it finds only if it has this fingerprint)."""
    fingerprint = vendor_fingerprint.replace(" ", "").upper()
    if not _FINGERPRINT.match(fingerprint):
        raise ZipappError(f"vendor key fingerprint {vendor_fingerprint!r} is not 40 hex digits")
    text = PREAMBLE.read_bytes()
    if text.count(b"@VENDOR_FINGERPRINT@") != 1:
        raise ZipappError(f"{PREAMBLE} must hold @VENDOR_FINGERPRINT@ exactly once")
    return text.replace(b"@VENDOR_FINGERPRINT@", fingerprint.encode("ascii"))


def _epoch(source_date_epoch: Optional[int]) -> int:
    if source_date_epoch is not None:
        return source_date_epoch
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return SHIV_DEFAULT_EPOCH
    if not value.isdigit():
        raise ZipappError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return max(int(value), SHIV_DEFAULT_EPOCH)  # zip timestamps start in 1980


def build_zipapp(out: Path, public_key_text: str, secret_key: Optional[SecretKey] = None, *,
                 cache: Optional[Cache] = None, source_date_epoch: Optional[int] = None,
                 installer_source: Path = INSTALLER_SOURCE,
                 vendor_fingerprint: str = CENTOS7_FINGERPRINT,
                 rotation: Optional[Rotation] = None,
                 run: Runner = subprocess.run) -> ZipappResult:
    """Build the installer zipapp at `out` trusting `public_key_text` (a minisign .pub file's
    text), and sign it as `out`.minisig with `secret_key` when one is given. The preamble
    imports a host's python3 vendor key only if it has `vendor_fingerprint`. With `rotation`
    the installer also trusts the old key until its expiry, and `secret_key` must be that old
    key: hosts that trust it can then check the installer that introduces the new one."""
    public_key = minisig.parse_public_key(public_key_text, "the public key to embed")
    if rotation is not None:
        check_rotation(public_key, rotation)
        if secret_key is not None and secret_key.public_key != rotation.old_key.public_key:
            raise ZipappError(
                f"in a key rotation the installer is signed by the old key ({rotation.old_id}),"
                f" not by {minisig.key_id_hex(secret_key.key_id)}",
                hint="operators check it with the key they trust today: the old one")
    elif secret_key is not None and secret_key.public_key != public_key:
        raise ZipappError(
            f"the signing key ({minisig.key_id_hex(secret_key.key_id)}) is not the key to embed "
            f"({minisig.key_id_hex(public_key.key_id)})",
            hint="hosts could not check bundles signed by this key: pass the matching --pubkey")
    epoch = _epoch(source_date_epoch)
    preamble = preamble_text(vendor_fingerprint)
    wheels, downloaded = fetch_wheels(load_pins(), cache or Cache(), run)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubecrate-zipapp-") as tmp:
        site_packages = Path(tmp, "site-packages")
        dropped = stage(wheels, public_key_text, site_packages, installer_source, rotation)
        built = Path(tmp, INSTALLER_NAME)
        _shiv(site_packages, built, epoch, run)
        with zipfile.ZipFile(built) as archive:
            build_id = _build_id(archive)
        partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            members = _repack(built, partial, preamble)
            partial.chmod(0o755)
            os.utime(partial, (epoch, epoch))
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    signature = None
    if secret_key is not None:
        comment = (f"timestamp:{epoch}\tfile:{out.name}\tkubecrate-installer "
                   f"{installer_version}\tsha256:{digest}")
        if rotation is not None:
            comment += comment_fields(public_key, rotation)
        signature = sign_file(secret_key, out, comment)
    return ZipappResult(out, len(data), digest, signature, minisig.key_id_hex(public_key.key_id),
                        build_id, members, tuple(dropped), tuple(downloaded))


def _build_id(archive: zipfile.ZipFile) -> str:
    return json.loads(archive.read("environment.json"))["build_id"]
