"""The installer zipapp's sh preamble on a Python-2-only CentOS 7 host, judged by real rpm and
gpg: it installs python3 from a bundle's verified RPMs and re-executes, refuses RPMs or vendor
keys that do not verify, and prefers a python3 on PATH. The zipapp itself: conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from lab import py36
from lab.tools import require_tool

from builder import zipapp
from builder.cache import Cache
from tests.integration.builder.zipapps import EPOCH, run

pytestmark = pytest.mark.integration

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
