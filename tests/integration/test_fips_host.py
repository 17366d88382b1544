"""The installer on a FIPS host (fips=1), on the hosts' CPython 3.6 (docs/security.md, "FIPS
hosts").

Red Hat's Python refuses, in FIPS mode, every hash outside the FIPS module: md5 and BLAKE2b
raise ValueError at construction ("_blake2 is not available in FIPS mode", pypa/twine#706;
"[digital envelope routines: EVP_DigestInit_ex] disabled for FIPS", pypa/twine#857 and
linux-system-roles/storage#361 for md5). Python 3.6 has no `usedforsecurity` argument to ask
otherwise. This machine's Python is not such a build, so the test makes one: the .pyz runs
under `python3.6 -I -c` with hashlib's md5, BLAKE2 and SHA-3 constructors (and hashlib.new for
those names) raising that ValueError, as they do there; SHA-256 and SHA-1 (approved for uses
other than signatures, NIST SP 800-131A Rev. 2) stay.

What must hold: no md5 anywhere; a kubecrate-signed bundle verifies and unpacks through the
global signature and the SHA-256 chain (with a warning saying the BLAKE2b prehash was not
checked), a changed member is still refused naming it, and a stock `minisign -S` bundle,
whose comment names no bundle.json digest, is refused with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lab import py36
from lab.bundles import make_source, pack_source
from lab.tools import require_tool

from builder import zipapp
from builder.bundle import keys
from builder.cache import Cache
from tests.integration.builder.zipapps import run

pytestmark = pytest.mark.integration

FIPS_PYTHON = r"""
import hashlib, runpy, sys
REFUSED = {"md5", "blake2b", "blake2s", "sha3_224", "sha3_256", "sha3_384", "sha3_512",
           "shake_128", "shake_256"}
def refuse(*args, **kwargs):
    raise ValueError("[digital envelope routines: EVP_DigestInit_ex] disabled for FIPS")
for name in REFUSED:
    setattr(hashlib, name, refuse)
_new = hashlib.new
def new(name, *args, **kwargs):
    if name.lower() in REFUSED:
        refuse()
    return _new(name, *args, **kwargs)
hashlib.new = new
hashlib.algorithms_available = set(hashlib.algorithms_available) - REFUSED
try:
    hashlib.md5()
except ValueError:
    pass
else:
    raise SystemExit("the FIPS model did not take")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fips")
    (root / "keys").mkdir()
    public, secret = root / "keys" / "k.pub", root / "keys" / "k.key"
    made = run([require_tool("minisign"), "-G", "-W", "-p", public, "-s", secret])
    assert made.returncode == 0, made.stderr
    key = keys.load_secret_key(secret)
    source = root / "src" / "installer"
    shutil.copytree(zipapp.INSTALLER_SOURCE, source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyz = zipapp.build_zipapp(root / zipapp.INSTALLER_NAME, public.read_text(), key,
                              cache=Cache(), installer_source=source).path
    tree = make_source(root / "tree")
    good = pack_source(tree, root / "good" / "k8s.tar", key).path
    changed = root / "changed" / "k8s.tar"
    changed.parent.mkdir()
    data = bytearray(good.read_bytes())
    at = data.index(b"r" * 3000)  # the RPM's bytes, inside the tar
    data[at + 1500] = ord("s")
    changed.write_bytes(bytes(data))
    shutil.copy(str(good) + ".minisig", str(changed) + ".minisig")
    stock = root / "stock" / "k8s.tar"
    stock.parent.mkdir()
    shutil.copy(good, stock)
    signed = run([require_tool("minisign"), "-S", "-s", secret, "-m", stock])
    assert signed.returncode == 0, signed.stderr
    return {"root": root, "pyz": pyz, "good": good, "changed": changed, "stock": stock}


def on_fips_host(world, tmp_path, *args) -> subprocess.CompletedProcess:
    env = py36.operator_env(tmp_path / "nopython", tmp_path, LANG="C.UTF-8",
                            SHIV_ROOT=str(tmp_path / "shiv"))
    return run([py36.python36(), "-I", "-c", FIPS_PYTHON, world["pyz"], *args], env=env)


def test_the_model_refuses_md5_and_blake2b_like_a_fips_python(tmp_path):
    probe = run([py36.python36(), "-I", "-c", FIPS_PYTHON.replace(
        "runpy.run_path(sys.argv[0], run_name=\"__main__\")",
        "hashlib.sha256(b'x'); hashlib.sha1(b'x')\n"
        "for name in ('md5', 'blake2b'):\n"
        "    try:\n        hashlib.new(name)\n    except ValueError as err:\n"
        "        print(name, err)\n"), "x"])
    assert probe.returncode == 0, probe.stderr
    assert "md5 [digital envelope routines" in probe.stdout
    assert "blake2b [digital envelope routines" in probe.stdout


def test_a_kubecrate_bundle_verifies_and_unpacks_on_sha_256_alone(world, tmp_path):
    verified = on_fips_host(world, tmp_path, "verify", world["good"])
    assert verified.returncode == 0, verified.stderr
    assert "BLAKE2b is refused by this Python (FIPS mode)" in verified.stderr
    assert verified.stderr.count("verified ") == 1
    unpacked = on_fips_host(world, tmp_path, "unpack", world["good"], "--root",
                            tmp_path / "host")
    assert unpacked.returncode == 0, unpacked.stderr
    folder = Path(unpacked.stdout.strip().splitlines()[-1])
    assert (folder / "repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm").is_file()


def test_a_changed_member_is_still_refused(world, tmp_path):
    refused = on_fips_host(world, tmp_path, "unpack", world["changed"], "--root",
                           tmp_path / "host")
    assert refused.returncode == 3, refused.stderr
    assert "repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm" in refused.stderr
    bundles = tmp_path / "host/var/lib/kubecrate/bundles"
    assert not bundles.exists() or not [p for p in bundles.iterdir()]


def test_a_stock_minisign_bundle_is_refused_with_the_reason(world, tmp_path):
    refused = on_fips_host(world, tmp_path, "verify", world["stock"])
    assert refused.returncode == 3, refused.stderr
    assert "Python refuses BLAKE2b on this host (FIPS mode)" in refused.stderr
    assert "names no bundle.json digest" in refused.stderr
