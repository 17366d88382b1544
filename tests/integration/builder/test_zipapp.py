"""The installer zipapp, judged by real tools: minisign, unzip, vermin, Python 3.11 and the
hosts' CPython 3.6 (scripts/lab/py36.py: required, never skipped) running only the .pyz through its
sh preamble in every operator locale, attacks on its extracted code and its environment, and
rpm and gpg for the preamble that installs python3 from a bundle on Python-2-only hosts.

The first run downloads the pinned wheels from PyPI into the kubecrate cache; later runs are
offline.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
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

pytestmark = pytest.mark.integration

EPOCH = 1700000000


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same zipapp built twice from the same inputs, with the key pair that signs it."""
    root = tmp_path_factory.mktemp("zipapp")
    key, secret_path, public_path = make_key(root / "keys")
    # A snapshot: others may be editing installer/ while the tests build from it.
    source = root / "src" / "installer"
    shutil.copytree(zipapp.INSTALLER_SOURCE, source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    results = [zipapp.build_zipapp(root / name / zipapp.INSTALLER_NAME, public_path.read_text(),
                                   key, cache=Cache(), source_date_epoch=EPOCH,
                                   installer_source=source)
               for name in ("one", "two")]
    return {"root": root, "key": key, "secret": secret_path, "public": public_path,
            "source": source, "pyz": results[0].path, "again": results[1].path,
            "result": results[0]}


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


# --------------------------------------------------------------------------- the sh preamble


class Host:
    """A CentOS 7 minimal host as the preamble sees it: Python 2 only (CPython 2.7 as
    /usr/bin/python in its root), a few real tools on PATH, an `rpm` bound to the private
    root, and gpg. The python3 RPM puts a python3 there that logs its use and runs CPython 3.6.
    `gpg` is this machine's gnupg (2.2), or a stand-in printing gnupg 2.0.22's layout."""

    TOOLS = ("id", "mkdir", "tar", "mktemp", "uname", "rm", "awk", "cut", "tr", "cat")

    def __init__(self, tmp: Path, gpg: str = "gnupg-2.2"):
        self.tmp = tmp
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.bin.mkdir(parents=True)
        self.gpg_log = tmp / "gpg-calls"
        (self.root / "usr" / "bin").mkdir(parents=True)
        for tool in self.TOOLS:
            (self.bin / tool).symlink_to(require_tool(tool))
        if gpg == "gnupg-2.2":
            (self.bin / "gpg").symlink_to(require_tool("gpg"))
        else:
            (self.bin / "gpg").write_text(GPG20.format(python=sys.executable,
                                                      gpg=require_tool("gpg"), log=self.gpg_log))
            (self.bin / "gpg").chmod(0o755)
        for name in ("python", "python2"):
            (self.root / "usr" / "bin" / name).symlink_to(py36.python27())
        # The database where CentOS keeps it (Debian's rpm defaults to ~/.rpmdb).
        self.rpm = [require_tool("rpm"), "--root", str(self.root), "--dbpath", "/var/lib/rpm"]
        (self.bin / "rpm").write_text("#!/bin/sh\nexec {} \"$@\"\n".format(" ".join(self.rpm)))
        (self.bin / "rpm").chmod(0o755)
        subprocess.run([*self.rpm, "--initdb"], check=True)
        self.log = tmp / "python3-ran"

    def run(self, pyz: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        environment = {"PATH": f"{self.bin}:{self.root}/usr/bin", "HOME": str(self.tmp),
                       "SHIV_ROOT": str(self.tmp / "shiv"), **env}
        return run([pyz, *args], env=environment, cwd=self.tmp)

    def plan(self, pyz: Path, bundle: str) -> subprocess.CompletedProcess:
        """An installer command naming the bundle, as an operator starts one (it then stops
        at the missing cluster.yaml: the installer itself ran)."""
        bundle_args = [bundle] if bundle.startswith("--bundle=") else ["--bundle", bundle]
        return self.run(pyz, "plan", *bundle_args, "--cluster", "cluster.yaml",
                        "--root", str(self.root))

    def installed(self, name: str) -> bool:
        return run([*self.rpm, "-q", name]).returncode == 0

    def vendor_key_file(self, key: Path) -> Path:
        """The host's own copy of the vendor key, where CentOS 7 keeps it."""
        path = self.root / "etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(key, path)
        return path


# gnupg 2.0.22 (CentOS 7), given a key file and no command, lists its keys as
#   pub  2048R/DE2ADAEC 2026-12-03 Name <mail>
#         Key fingerprint = AB49 F72D CE01 6130 73A1  09AB 4E5D E6DA DE2A DAEC
# (gnupg STABLE-BRANCH-2-0 g10/mainproc.c list_node; g10/keylist.c print_fingerprint: groups of
# four digits, two spaces after the fifth; CentOS's own key page shows this output). This
# stand-in prints that layout from the real gpg's colon listing (doc/DETAILS); --with-colons
# goes to the real gpg unchanged.
GPG20 = """#!{python}
import subprocess, sys
argv = sys.argv[1:]
with open("{log}", "a") as log:
    log.write(" ".join(argv) + "\\n")
if "--with-colons" in argv or "--with-fingerprint" not in argv:
    sys.exit(subprocess.call(["{gpg}"] + argv))
listing = subprocess.run(["{gpg}", "--with-colons"] + argv, capture_output=True, text=True)
pending = None
for line in listing.stdout.splitlines():
    field = line.split(":")
    if field[0] == "pub":
        pending = field
    elif field[0] == "sub":
        pending = None
        print("sub  %sR/%s" % (field[2], field[4][-8:]))
    elif field[0] == "fpr" and pending is not None:
        groups = [field[9][i:i + 4] for i in range(0, 40, 4)]
        print("pub  %sR/%s 2014-06-23 key" % (pending[2], pending[4][-8:]))
        print("      Key fingerprint = " + " ".join(groups[:5]) + "  " + " ".join(groups[5:]))
        pending = None
    elif field[0] == "uid":
        print("uid                  " + field[9])
sys.exit(listing.returncode)
"""


class Gpg:
    def __init__(self, home: Path, uid: str):
        self.home = home
        home.mkdir(mode=0o700, parents=True)
        self.env = dict(os.environ, GNUPGHOME=str(home))
        gpg = require_tool("gpg")
        subprocess.run([gpg, "--batch", "--passphrase", "", "--quick-gen-key", uid, "rsa2048",
                        "sign", "never"], env=self.env, check=True, capture_output=True)
        listing = run([gpg, "--batch", "--with-colons", "--list-secret-keys"], env=self.env)
        self.fingerprint = next(line.split(":")[9] for line in listing.stdout.splitlines()
                                if line.startswith("fpr:"))
        self.public = home / "key.asc"
        self.public.write_text(run([gpg, "--batch", "--armor", "--export", self.fingerprint],
                                   env=self.env).stdout)

    def sign(self, rpms) -> None:
        argv = [require_tool("rpmsign"), "--addsign", "--define", f"_gpg_path {self.home}",
                "--define", f"_gpg_name {self.fingerprint}", "--define",
                f"__gpg {require_tool('gpg')}", *map(str, rpms)]
        result = run(argv, env=self.env)
        assert result.returncode == 0, result.stderr

    def close(self) -> None:
        run([require_tool("gpgconf"), "--kill", "gpg-agent"], env=self.env)


SPEC = """\
Name: {name}
Version: 3.6.8
Release: 18.el7
Summary: kubecrate test stand-in for {name}
License: MIT
BuildArch: noarch
AutoReqProv: no
{requires}
%description
A stand-in: {name} for the zipapp preamble test.
%install
mkdir -p %{{buildroot}}/usr/{folder}
cat > %{{buildroot}}/usr/{folder}/{file} <<'EOF'
{content}
EOF
chmod 755 %{{buildroot}}/usr/{folder}/{file}
%files
/usr/{folder}/{file}
"""


def build_python_rpms(work: Path, log: Path) -> list[Path]:
    """python3 (an interpreter that logs its arguments, then runs CPython 3.6, as CentOS 7's
    python3-3.6.8 would) and python3-libs, named as CentOS names them."""
    rpmbuild = require_tool("rpmbuild")
    stand_in = f'#!/bin/sh\necho "$*" >> {log}\nexec {py36.python36()} "$@"'
    packages = [("python3-libs", "", "lib", "python3-libs-marker", "python3-libs"),
                ("python3", "Requires: python3-libs = 3.6.8-18.el7", "bin", "python3", stand_in)]
    out = []
    for name, requires, folder, file, content in packages:
        spec = work / f"{name}.spec"
        spec.write_text(SPEC.format(name=name, requires=requires, folder=folder, file=file,
                                    content=content))
        result = run([rpmbuild, "-bb", "--define", f"_topdir {work / 'rpmbuild'}",
                      "--define", "__os_install_post %{nil}", spec])
        assert result.returncode == 0, result.stderr
        out.append(work / "rpmbuild" / "RPMS" / "noarch" / f"{name}-3.6.8-18.el7.noarch.rpm")
    return out


def make_bundle(path: Path, rpms) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(rpms[0]), arcname="repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm")
        for rpm in rpms:
            tar.add(str(rpm), arcname=f"repo/Packages/{rpm.name}")
    return path


@pytest.fixture(scope="module")
def python_rpms(tmp_path_factory):
    """The stand-in python3 RPMs signed by the host's vendor key, by a foreign key, and
    unsigned; both public keys."""
    work = tmp_path_factory.mktemp("rpms")
    log = work / "python3-ran"
    vendor, foreign = Gpg(work / "gpg-vendor", "CentOS-7 test key <security@centos.invalid>"), None
    try:
        foreign = Gpg(work / "gpg-foreign", "Not CentOS <mallory@invalid>")
        sets = {}
        for kind in ("vendor", "foreign", "unsigned"):
            folder = work / kind
            folder.mkdir()
            rpms = build_python_rpms(folder, log)
            if kind != "unsigned":
                (vendor if kind == "vendor" else foreign).sign(rpms)
            sets[kind] = make_bundle(work / f"{kind}.tar", rpms)
        return {"bundles": sets, "key": vendor.public, "foreign_key": foreign.public,
                "fingerprint": vendor.fingerprint, "log": log}
    finally:
        vendor.close()
        if foreign:
            foreign.close()


@pytest.fixture(scope="module")
def pinned(built, python_rpms, tmp_path_factory):
    """The .pyz built with the test vendor key's fingerprint pinned in its preamble (a real
    build pins CentOS 7's, builder/zipapp.py CENTOS7_FINGERPRINT)."""
    out = tmp_path_factory.mktemp("pinned") / zipapp.INSTALLER_NAME
    return zipapp.build_zipapp(out, built["public"].read_text(), built["key"], cache=Cache(),
                               source_date_epoch=EPOCH, installer_source=built["source"],
                               vendor_fingerprint=python_rpms["fingerprint"]).path


def fresh_host(tmp_path: Path, python_rpms, gpg: str = "gnupg-2.2") -> Host:
    if os.path.exists("/usr/libexec/platform-python"):
        pytest.fail("this machine has /usr/libexec/platform-python: the preamble would use it")
    python_rpms["log"].unlink(missing_ok=True)
    return Host(tmp_path, gpg)


@pytest.fixture
def host(tmp_path, python_rpms):
    """A host whose rpm database already holds the vendor key (it ran yum once)."""
    host = fresh_host(tmp_path, python_rpms)
    result = run([*host.rpm, "--import", python_rpms["key"]])
    assert result.returncode == 0, result.stderr
    return host


def ran_the_installer(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 2 and "cannot read cluster.yaml" in result.stderr


@pytest.mark.parametrize("kind", ["tar", "cache folder"])
def test_preamble_installs_python3_from_verified_rpms_and_reexecs(pinned, host, python_rpms,
                                                                  tmp_path, kind):
    bundle = python_rpms["bundles"]["vendor"]
    if kind == "cache folder":  # a reinstall from /var/lib/kubecrate/bundles/<digest>
        folder = tmp_path / "bundles" / ("d" * 64)
        folder.mkdir(parents=True)
        with tarfile.open(bundle) as tar:
            tar.extractall(folder)
        bundle = folder
    result = host.plan(pinned, str(bundle))
    assert ran_the_installer(result), result.stderr
    assert "installing python3 from" in result.stderr
    assert "Click will abort" not in result.stderr  # no LANG here: CPython 3.6 says ASCII
    assert host.installed("python3") and host.installed("python3-libs")
    assert not host.installed("socat")  # only the python3 RPMs are taken from the bundle
    assert f"-I {pinned} plan --bundle {bundle}" in python_rpms["log"].read_text()
    # Python is there now: a second run starts at once and installs nothing.
    again = host.plan(pinned, str(bundle))
    assert ran_the_installer(again) and "installing" not in again.stderr


@pytest.mark.parametrize("gpg", ["gnupg-2.2", "gnupg-2.0.22-layout"])
def test_fresh_host_imports_its_own_vendor_key_when_the_fingerprint_is_pinned(
        pinned, python_rpms, tmp_path, gpg):
    """A minimal host before its first yum install: the key is a file, not in the rpmdb."""
    host = fresh_host(tmp_path, python_rpms, gpg)
    host.vendor_key_file(python_rpms["key"])
    assert not host.installed("gpg-pubkey")
    bundle = python_rpms["bundles"]["vendor"]
    result = host.plan(pinned, f"--bundle={bundle}")
    assert ran_the_installer(result), result.stderr
    assert f"its fingerprint is the pinned {python_rpms['fingerprint']}" in result.stderr
    assert host.installed("gpg-pubkey") and host.installed("python3")
    if gpg != "gnupg-2.2":  # read from the "Key fingerprint =" line, not the colon listing
        assert "--with-colons" not in host.gpg_log.read_text()


@pytest.mark.parametrize("case", ["foreign-key-file", "centos-pin", "no-key-file"])
def test_fresh_host_refuses_a_vendor_key_that_is_not_the_pinned_one(
        built, pinned, python_rpms, tmp_path, case):
    host = fresh_host(tmp_path, python_rpms)
    pyz = pinned
    if case == "foreign-key-file":
        host.vendor_key_file(python_rpms["foreign_key"])
    elif case == "centos-pin":  # the test key is not CentOS's: a real build refuses it
        host.vendor_key_file(python_rpms["key"])
        pyz = built["pyz"]
    result = host.plan(pyz, str(python_rpms["bundles"]["vendor"]))
    assert result.returncode == 3, result.stderr
    assert "is not in this host's rpm database" in result.stderr
    assert "rpm --import /etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7" in result.stderr
    assert not host.installed("gpg-pubkey") and not host.installed("python3")
    assert not python_rpms["log"].exists()


@pytest.mark.parametrize("kind", ["foreign", "unsigned"])
def test_preamble_refuses_rpms_that_do_not_verify(pinned, host, python_rpms, kind):
    bundle = python_rpms["bundles"][kind]
    result = host.plan(pinned, f"--bundle={bundle}")
    assert result.returncode == 3, result.stderr
    assert "refusing to install python3" in result.stderr
    assert "signature does not verify" in result.stderr
    assert "rpm --import /etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7" in result.stderr
    assert not host.installed("python3") and not host.installed("python3-libs")
    assert not python_rpms["log"].exists()
    assert result.stdout == ""


def test_preamble_without_python_or_bundle_explains(built, host):
    result = host.run(built["pyz"], "--help")
    assert result.returncode == 4
    assert "no Python 3.6 or later" in result.stderr and "--bundle" in result.stderr


def test_preamble_prefers_python3_on_path_and_sets_shiv_root(built, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in Host.TOOLS:
        (bin_dir / tool).symlink_to(require_tool(tool))
    log = tmp_path / "log"
    # A python3 that only logs how it was started, so nothing is extracted anywhere.
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "SHIV_ROOT=$SHIV_ROOT $*" >> {log}\n')
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    result = run([built["pyz"], "verify", "x.tar"], env=env)
    assert result.returncode == 0, result.stderr
    default = ("/var/lib/kubecrate/shiv" if os.getuid() == 0
               else f"{tmp_path}/.cache/kubecrate/shiv")
    assert log.read_text().splitlines()[-1] == f"SHIV_ROOT={default} -I {built['pyz']} verify x.tar"
    log.unlink()
    result = run([built["pyz"], "verify", "x.tar"], env=dict(env, SHIV_ROOT="/srv/shiv"))
    assert log.read_text().splitlines()[-1] == f"SHIV_ROOT=/srv/shiv -I {built['pyz']} verify x.tar"
