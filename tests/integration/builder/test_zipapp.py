"""The installer zipapp, judged by real tools: minisign, unzip, vermin, Python 3.11 and the
hosts' CPython 3.6 (scripts/lab/py36.py: required, never skipped) running only the .pyz through its
sh preamble in every operator locale, attacks on its extracted code and its environment, and
(test_zipapp_preamble.py: rpm and gpg for the preamble that installs python3 from a bundle on
Python-2-only hosts).

The first run downloads the pinned wheels from PyPI into the kubecrate cache; later runs are
offline.
"""

from __future__ import annotations

import email.parser
import json
import os
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from lab import py36
from lab.bundles import make_key, make_source, pack_source
from lab.tools import require_tool
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from builder import zipapp
from builder.cache import Cache
from tests.integration.builder.zipapps import EPOCH, run

pytestmark = pytest.mark.integration

def shiv_env(tmp_path: Path, **extra) -> dict:
    return {"SHIV_ROOT": str(tmp_path / "shiv"), **extra}


# --------------------------------------------------------------------------- the artifact


def test_minisign_accepts_the_signature(built):
    minisign = require_tool("minisign")
    result = run([minisign, "-Vm", built["pyz"], "-p", built["public"]])
    assert result.returncode == 0, result.stderr
    assert f"sha256:{built['result'].sha256}" in result.stdout


def test_building_twice_gives_identical_bytes(built):
    assert built["pyz"].read_bytes() == built["again"].read_bytes()
    assert (built["pyz"].with_name(built["pyz"].name + ".minisig").read_bytes()
            == built["again"].with_name(built["again"].name + ".minisig").read_bytes())


def test_another_epoch_changes_only_timestamps(built, tmp_path):
    other = zipapp.build_zipapp(tmp_path / zipapp.INSTALLER_NAME, built["public"].read_text(),
                                cache=Cache(), source_date_epoch=EPOCH + 86400,
                                installer_source=built["source"])
    assert other.path.read_bytes() != built["pyz"].read_bytes()
    with zipfile.ZipFile(other.path) as a, zipfile.ZipFile(built["pyz"]) as b:
        assert a.namelist() == b.namelist() == sorted(b.namelist())
        assert [a.read(n) for n in a.namelist() if n != "environment.json"] == [
            b.read(n) for n in b.namelist() if n != "environment.json"]


def test_no_compiled_code_inside(built):
    with zipfile.ZipFile(built["pyz"]) as archive:
        names = archive.namelist()
        assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib")) or ".so." in n]
        assert not [n for n in names if archive.read(n)[:4] == b"\x7fELF"]
        assert "site-packages/yaml/__init__.py" in names
        assert "site-packages/markupsafe/_native.py" in names


def test_sh_preamble_and_zip_both_readable(built):
    data = built["pyz"].read_bytes()
    assert data.startswith(b"#!/bin/sh\n")
    assert os.access(built["pyz"], os.X_OK)
    listing = run([require_tool("unzip"), "-l", built["pyz"]])
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "extra bytes" not in listing.stdout + listing.stderr
    assert "site-packages/installer/cli.py" in listing.stdout
    assert run([require_tool("unzip"), "-tq", built["pyz"]]).returncode == 0


def test_embeds_the_public_key_and_extracts_under_var_lib(built):
    with zipfile.ZipFile(built["pyz"]) as archive:
        assert (archive.read("site-packages/installer/trusted.pub").decode()
                == built["public"].read_text())
        environment = json.loads(archive.read("environment.json"))
    assert environment["root"] == "/var/lib/kubecrate/shiv"
    assert environment["entry_point"] == "installer.cli:main"


def test_project_code_inside_needs_python_3_6_only(built, tmp_path):
    with zipfile.ZipFile(built["pyz"]) as archive:
        ours = [n for n in archive.namelist() if n.startswith("site-packages/installer/")
                or n in ("__main__.py", zipapp.BOOT_MODULE)]
        assert "site-packages/installer/format/minisig.py" in ours and "__main__.py" in ours
        for name in ours:
            archive.extract(name, tmp_path)
    vermin = Path(sys.executable).with_name("vermin")
    result = run([vermin, "--no-tips", "--violations", "-t=3.6-",
                  tmp_path / "site-packages" / "installer", tmp_path / "__main__.py",
                  tmp_path / zipapp.BOOT_MODULE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_pinned_wheels_declare_python_3_6_and_cover_their_requirements():
    pins = zipapp.load_pins()
    wheels, downloaded = zipapp.fetch_wheels(pins, Cache())
    assert downloaded == []  # the module fixture filled the cache
    versions = {pin.key: pin.version for pin in pins}
    target = {"python_version": "3.6", "python_full_version": "3.6.8", "sys_platform": "linux",
              "platform_system": "Linux", "platform_python_implementation": "CPython",
              "implementation_name": "cpython", "os_name": "posix", "extra": ""}
    problems = []
    for pin in pins:
        with zipfile.ZipFile(wheels[pin.key]) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = email.parser.Parser().parsestr(wheel.read(name).decode("utf-8"))
        requires_python = metadata.get("Requires-Python")
        if not requires_python or "3.6" not in SpecifierSet(requires_python):
            problems.append(f"{pin.name} {pin.version}: Requires-Python {requires_python!r}")
        for line in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(target):
                continue
            have = versions.get(canonicalize_name(requirement.name))
            if have is None or have not in requirement.specifier:
                problems.append(f"{pin.name} needs {requirement} on 3.6; pinned: {have}")
    assert not problems
    assert Marker('python_version < "3.8"').evaluate(target)


# --------------------------------------------------------------------------- running it

IMPORT_ALL = textwrap.dedent("""
    import importlib, json, sys, zipfile
    archive, extracted = sys.argv[1], sys.argv[2]
    names = set()
    for member in zipfile.ZipFile(archive).namelist():
        if not member.startswith("site-packages/") or not member.endswith(".py"):
            continue
        parts = member[len("site-packages/"):-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__":
            continue  # importing it runs the program
        names.add(".".join(parts))
    failed, outside = {}, []
    for name in sorted(names):
        try:
            module = importlib.import_module(name)
        except BaseException as exc:
            failed[name] = "%s: %s" % (type(exc).__name__, exc)
            continue
        if not (getattr(module, "__file__", "") or "").startswith(extracted):
            outside.append(name)
    print(json.dumps({"imported": len(names) - len(failed), "failed": failed,
                      "outside": outside, "version": list(sys.version_info[:2])}))
""")


def import_everything(python: str, pyz: Path, tmp_path: Path) -> dict:
    # -I: no PYTHON* variables, no user site; -S: not even the interpreter's own site-packages,
    # so that every third-party import must come from the .pyz. The installer's own start-up
    # (_kubecrate_boot.activate) checks and adds its site-packages, as a start does.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _kubecrate_boot; "
            "_kubecrate_boot.activate(sys.argv[1]); exec(sys.argv[3])")
    result = run([python, "-I", "-S", "-c", code, pyz, str(tmp_path / "shiv"), IMPORT_ALL],
                 env=shiv_env(tmp_path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_bundled_module_imports_from_the_pyz_alone(built, tmp_path):
    report = import_everything(sys.executable, built["pyz"], tmp_path)
    assert report["failed"] == {}
    assert report["outside"] == []
    assert report["imported"] > 100


def test_every_bundled_module_imports_on_python_3_6(built, tmp_path):
    report = import_everything(str(py36.python36()), built["pyz"], tmp_path)
    assert report["version"] == [3, 6]
    assert report["failed"] == {} and report["outside"] == []


def test_help_with_isolated_python_and_empty_environment(built, tmp_path):
    result = run([sys.executable, "-I", built["pyz"], "--help"], env=shiv_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Exit codes:" in result.stdout
    assert (tmp_path / "shiv").is_dir()


def test_verify_uses_the_embedded_key(built, tmp_path):
    source = make_source(tmp_path / "src")
    good = pack_source(source, tmp_path / "good.tar", built["key"]).path
    other_key = make_key(tmp_path / "other")[0]
    forged = pack_source(source, tmp_path / "forged.tar", other_key).path
    env = shiv_env(tmp_path)
    ok = run([sys.executable, "-I", built["pyz"], "verify", good], env=env)
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stderr
    bad = run([sys.executable, "-I", built["pyz"], "verify", forged], env=env)
    assert bad.returncode == 3, bad.stderr


@pytest.fixture(scope="module")
def signed_bundle(built, tmp_path_factory):
    """A small bundle signed by the key the .pyz embeds."""
    folder = tmp_path_factory.mktemp("signed")
    return pack_source(make_source(folder / "src"), folder / "k8s.tar", built["key"]).path


@pytest.mark.parametrize("variables", [v for _, v in py36.locale_variants()],
                         ids=[name for name, _ in py36.locale_variants()])
def test_runs_on_python_3_6_through_its_preamble_in_any_locale(built, signed_bundle, tmp_path,
                                                               variables):
    """click 8.0.4 on Python 3.6 aborts under an ASCII locale; the installer does not."""
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, **variables)
    result = run([built["pyz"], "verify", signed_bundle], env=dict(env, **shiv_env(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "Click will abort" not in result.stderr
    assert result.stderr.startswith("verified "), result.stderr
    version = run([built["pyz"], "--version"], env=dict(env, **shiv_env(tmp_path)))
    assert version.returncode == 0 and "kubecrate-installer" in version.stdout, version.stderr


def test_runs_on_python_3_6_on_a_host_without_any_utf8_locale(built, tmp_path):
    """The last resort: no UTF-8 locale loads at all; click's ASCII refusal is skipped."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _kubecrate_boot; "
            "_kubecrate_boot.activate(sys.argv[1]); from installer import cli, textlocale; "
            "textlocale.PREFERRED = (); textlocale.installed_utf8_locales = lambda: []; "
            "cli.main(['--version'])")
    result = run([py36.python36(), "-I", "-c", code, built["pyz"]],
                 env=py36.operator_env(tmp_path, tmp_path, **shiv_env(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "kubecrate-installer, version" in result.stdout


# --------------------------------------------------------------------------- its own code only


def extracted(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "shiv").glob("kubecrate-installer.pyz_*")
    return folder / "site-packages"


def evil_package(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A folder shadowing the bundled package `name` with code that leaves a marker file."""
    folder, marker = tmp_path / "evil", tmp_path / "evil-ran"
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('injected')\n")
    return folder, marker


def test_an_edited_extracted_module_is_extracted_again(built, tmp_path):
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, **shiv_env(tmp_path))
    assert run([built["pyz"], "--version"], env=env).returncode == 0
    site_packages = extracted(tmp_path)
    cli, marker = site_packages / "installer" / "cli.py", tmp_path / "edited-ran"
    pristine = cli.read_bytes()
    cli.write_bytes(pristine + f"\nopen({str(marker)!r}, 'w').write('x')\n".encode())
    (site_packages / "zz-evil.pth").write_text(f"import os; open({str(marker)!r}, 'w')\n")
    again = run([built["pyz"], "--version"], env=env)
    assert again.returncode == 0, again.stderr
    assert "differs from this installer" in again.stderr
    assert "installer/cli.py: changed" in again.stderr
    assert not marker.exists()
    assert cli.read_bytes() == pristine and not (site_packages / "zz-evil.pth").exists()
    # No bytecode is kept there: a .pyc could not be checked without compiling its source.
    assert not list(site_packages.rglob("__pycache__"))
    quiet = run([built["pyz"], "--version"], env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_a_bytecode_cache_in_the_extracted_folder_is_not_used(built, tmp_path):
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, **shiv_env(tmp_path))
    assert run([built["pyz"], "--version"], env=env).returncode == 0
    cache = extracted(tmp_path) / "installer" / "__pycache__"
    cache.mkdir()
    (cache / "cli.cpython-36.pyc").write_bytes(b"not what cli.py compiles to")
    again = run([built["pyz"], "--version"], env=env)
    assert again.returncode == 0, again.stderr
    assert "__pycache__/cli.cpython-36.pyc: not part of this installer" in again.stderr
    assert not cache.exists()


def test_shiv_variables_cannot_inject_code(built, tmp_path):
    evil, marker = evil_package(tmp_path, "click")
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, **shiv_env(tmp_path))
    for name, value in (("SHIV_PREPEND_PYTHONPATH", str(evil)), ("SHIV_EXTEND_PYTHONPATH", "1"),
                        ("SHIV_ENTRY_POINT", "click:echo"), ("SHIV_INTERPRETER", "1")):
        result = run([built["pyz"], "--version"], env=dict(env, **{name: value}))
        assert result.returncode == 0, (name, result.stderr)
        assert "kubecrate-installer, version" in result.stdout, name
        assert f"ignoring {name}" in result.stderr
        assert not marker.exists(), name


def test_python_variables_cannot_inject_code_without_dash_i(built, tmp_path):
    """`python3 X.pyz` reads PYTHONPATH; the installer starts itself again isolated."""
    evil, marker = evil_package(tmp_path, "click")
    python = str(py36.python36())
    result = run([python, built["pyz"], "--version"],
                 env=dict(shiv_env(tmp_path), PATH="/usr/bin:/bin", PYTHONPATH=str(evil)))
    assert result.returncode == 0, result.stderr
    assert "kubecrate-installer, version" in result.stdout
    assert not marker.exists()


def test_preamble_probe_is_not_misled_by_pythonhome(built, tmp_path):
    """A PYTHONHOME that breaks a non-isolated python3 must not hide the host's Python."""
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, **shiv_env(tmp_path))
    result = run([built["pyz"], "--version"], env=dict(env, PYTHONHOME=str(tmp_path / "none")))
    assert result.returncode == 0, result.stderr
    assert "kubecrate-installer, version" in result.stdout


def test_a_shiv_root_of_another_user_is_refused(built, tmp_path):
    root = tmp_path / "theirs"
    root.mkdir()
    os.chown(root, 65534, 65534)  # nobody's; the tests run as root
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, SHIV_ROOT=str(root))
    result = run([built["pyz"], "--version"], env=env)
    assert result.returncode == 4
    assert f"{root} (SHIV_ROOT) belongs to uid 65534" in result.stderr
    assert "only you can write" in result.stderr
    assert list(root.iterdir()) == []


def test_a_shiv_root_others_could_write_is_closed_and_checked(built, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path, SHIV_ROOT=str(root))
    assert run([built["pyz"], "--version"], env=env).returncode == 0
    (folder,) = root.glob("kubecrate-installer.pyz_*")
    (folder / "site-packages" / "installer").chmod(0o777)  # as if someone had opened it
    again = run([built["pyz"], "--version"], env=env)
    assert again.returncode == 0, again.stderr
    assert "installer: writable by another user" in again.stderr
    assert root.stat().st_mode & 0o777 == 0o755
    assert (folder / "site-packages" / "installer").stat().st_mode & 0o777 == 0o755


def test_cli_builds_signed_zipapp_offline(built, tmp_path):
    out = tmp_path / "bundles" / zipapp.INSTALLER_NAME
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    kubecrate = Path(sys.executable).with_name("kubecrate")
    result = run([kubecrate, "zipapp", "--out", out, "--key", built["secret"]], env=env)
    assert result.returncode == 0, result.stderr
    assert "0 wheels downloaded" in result.stderr
    # Built again at once: the installer/ tree is shared with people editing it.
    same = zipapp.build_zipapp(tmp_path / "api" / zipapp.INSTALLER_NAME,
                               built["public"].read_text(), built["key"], cache=Cache(),
                               source_date_epoch=EPOCH)
    assert out.read_bytes() == same.path.read_bytes()
    assert result.stdout.strip() == same.sha256
    minisign = run([require_tool("minisign"), "-Vm", out, "-p", built["public"]])
    assert minisign.returncode == 0, minisign.stderr
    usage = run([kubecrate, "zipapp", "--out", out], env=env)
    assert usage.returncode == 2 and "--key or --pubkey" in usage.stderr


def test_signing_key_must_match_embedded_key(built, tmp_path):
    other_public = make_key(tmp_path / "other")[2]
    with pytest.raises(zipapp.ZipappError, match="is not the key to embed"):
        zipapp.build_zipapp(tmp_path / "x.pyz", other_public.read_text(), built["key"],
                            cache=Cache())
    assert not (tmp_path / "x.pyz").exists()
