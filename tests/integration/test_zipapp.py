"""The installer zipapp, judged by real tools: minisign, unzip, vermin, Python 3.11 (and a 3.6
when one is installed) running only the .pyz, and rpm for the sh preamble that installs python3
from a bundle on hosts without it.

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
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from builder import zipapp
from builder.cache import Cache
from tests.bundles import make_key, make_source, pack_source
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

EPOCH = 1700000000
PY36_CANDIDATES = [os.environ.get("KUBECRATE_PYTHON36", ""), shutil.which("python3.6") or "",
                   os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python3.6")]


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
        ours = [n for n in archive.namelist() if n.startswith("site-packages/installer/")]
        assert "site-packages/installer/minisig.py" in ours
        for name in ours:
            archive.extract(name, tmp_path)
    vermin = Path(sys.executable).with_name("vermin")
    result = run([vermin, "--no-tips", "--violations", "-t=3.6-",
                  tmp_path / "site-packages" / "installer"])
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
    # so that every third-party import must come from the .pyz.
    env = shiv_env(tmp_path, SHIV_INTERPRETER="1")
    result = run([python, "-I", "-S", pyz, "-c", IMPORT_ALL, pyz, str(tmp_path / "shiv")],
                 env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_bundled_module_imports_from_the_pyz_alone(built, tmp_path):
    report = import_everything(sys.executable, built["pyz"], tmp_path)
    assert report["failed"] == {}
    assert report["outside"] == []
    assert report["imported"] > 100


def is_python36(path: str) -> bool:
    if not path or not os.access(path, os.X_OK):
        return False
    probe = run([path, "-c", "import sys; print(sys.version_info[:2] == (3, 6))"], timeout=30)
    return probe.stdout.strip() == "True"


def test_every_bundled_module_imports_on_python_3_6(built, tmp_path):
    python36 = next((p for p in PY36_CANDIDATES if is_python36(p)), None)
    if python36 is None:
        pytest.skip("no Python 3.6 here (set KUBECRATE_PYTHON36); a real EL7 host is the gate")
    report = import_everything(python36, built["pyz"], tmp_path)
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
    """A python3-less host: PATH holds a few real tools, an `rpm` bound to a private root,
    and the root's /usr/bin, where the python3 RPM puts an interpreter that logs its use."""

    TOOLS = ("id", "mkdir", "tar", "mktemp", "uname", "rm")

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.bin.mkdir(parents=True)
        (self.root / "usr" / "bin").mkdir(parents=True)
        for tool in self.TOOLS:
            (self.bin / tool).symlink_to(require_tool(tool))
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

    def installed(self, name: str) -> bool:
        return run([*self.rpm, "-q", name]).returncode == 0


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
    """python3 (an interpreter that logs its arguments, then runs the real one) and
    python3-libs, named as CentOS names them."""
    rpmbuild = require_tool("rpmbuild")
    stand_in = f'#!/bin/sh\necho "$*" >> {log}\nexec {sys.executable} "$@"'
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
    unsigned; and the vendor's public key."""
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
        return {"bundles": sets, "key": vendor.public, "log": log}
    finally:
        vendor.close()
        if foreign:
            foreign.close()


@pytest.fixture
def host(tmp_path, python_rpms):
    if os.path.exists("/usr/libexec/platform-python"):
        pytest.skip("this machine has /usr/libexec/platform-python: no python3-less PATH")
    host = Host(tmp_path)
    result = run([*host.rpm, "--import", python_rpms["key"]])
    assert result.returncode == 0, result.stderr
    python_rpms["log"].unlink(missing_ok=True)
    return host


PROBE = "import sys; print('ran on', sys.version_info[0], sys.argv[1:])"


def test_preamble_installs_python3_from_verified_rpms_and_reexecs(built, host, python_rpms):
    bundle = python_rpms["bundles"]["vendor"]
    result = host.run(built["pyz"], "-c", PROBE, "--bundle", str(bundle), SHIV_INTERPRETER="1")
    assert result.returncode == 0, result.stderr
    assert "installing python3 from" in result.stderr
    assert result.stdout.strip() == "ran on 3 ['--bundle', '%s']" % bundle
    assert host.installed("python3") and host.installed("python3-libs")
    assert not host.installed("socat")  # only the python3 RPMs are taken from the bundle
    assert f"-I {built['pyz']} -c" in python_rpms["log"].read_text()
    # Python is there now: a second run starts at once and installs nothing.
    again = host.run(built["pyz"], "-c", PROBE, "--bundle", str(bundle), SHIV_INTERPRETER="1")
    assert again.returncode == 0 and "installing" not in again.stderr


@pytest.mark.parametrize("kind", ["foreign", "unsigned"])
def test_preamble_refuses_rpms_that_do_not_verify(built, host, python_rpms, kind):
    bundle = python_rpms["bundles"][kind]
    result = host.run(built["pyz"], "-c", PROBE, f"--bundle={bundle}", SHIV_INTERPRETER="1")
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
