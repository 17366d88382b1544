"""Signing-key rotation (docs/security.md, "Rotating the signing key"), end to end with the
real minisign tool making both keys and checking the installer, and the installer .pyz
itself, started through its sh preamble on the hosts' CPython 3.6, checking bundles.

The rotating installer embeds the new key and the old one with an expiry; the old key signs
it, and its trusted comment names the new key in full. Bundles signed by either key verify
before the expiry; from that day on one signed by the old key is refused (exit 3) naming the
key id and the date; a key the installer never trusted is refused as before (exit 3).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab import py36
from lab.bundles import make_source, pack_source
from lab.tools import require_tool

from builder import zipapp
from builder.bundle import keys
from builder.bundle.rotation import Rotation
from builder.cache import Cache
from tests.integration.builder.zipapps import run

pytestmark = pytest.mark.integration

EPOCH = 1700000000
FUTURE = datetime.date.today() + datetime.timedelta(days=180)
PAST = datetime.date(2021, 6, 30)


def minisign_keypair(folder: Path, name: str) -> dict:
    """A key pair made by the real minisign (-W: no passphrase), read back by kubecrate."""
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.pub", folder / f"{name}.key"
    made = run([require_tool("minisign"), "-G", "-W", "-p", public, "-s", secret])
    assert made.returncode == 0, made.stderr
    key = keys.load_secret_key(secret)
    assert key.public_key.to_file_text().splitlines()[1] == public.read_text().splitlines()[1]
    return {"key": key, "public": public, "secret": secret, "id": key.public_key.id_hex,
            "blob": public.read_text().splitlines()[1]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotation")
    old, new, stranger = (minisign_keypair(root / "keys", n) for n in ("old", "new", "stranger"))
    source = root / "src" / "installer"
    shutil.copytree(zipapp.INSTALLER_SOURCE, source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tree = make_source(root / "tree")
    bundles = {}
    for name, pair in (("old", old), ("new", new), ("stranger", stranger)):
        bundles[name] = pack_source(tree, root / name / "k8s.tar", pair["key"]).path
    # One bundle signed by the stock tool with the new key (its comment names no bundle.json).
    stock = root / "stock" / "k8s.tar"
    stock.parent.mkdir()
    shutil.copy(bundles["new"], stock)
    signed = run([require_tool("minisign"), "-S", "-s", new["secret"], "-m", stock])
    assert signed.returncode == 0, signed.stderr
    bundles["stock-new"] = stock
    # The rotating installer, built the way an operator asks for it.
    out = root / "rotating" / zipapp.INSTALLER_NAME
    kubecrate = Path(sys.executable).with_name("kubecrate")
    built = run([kubecrate, "zipapp", "--out", out, "--key", new["secret"],
                 "--rotate-from", old["secret"], "--old-key-expires", FUTURE.isoformat()],
                env=dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH)))
    assert built.returncode == 0, built.stderr
    # The same rotation whose expiry has passed (the API takes any date; the CLI refuses one
    # in the past, below).
    expired = zipapp.build_zipapp(
        root / "expired" / zipapp.INSTALLER_NAME, new["public"].read_text(), old["key"],
        cache=Cache(), source_date_epoch=EPOCH, installer_source=source,
        rotation=Rotation(old["key"], PAST)).path
    return {"root": root, "old": old, "new": new, "stranger": stranger, "bundles": bundles,
            "pyz": out, "expired": expired, "kubecrate": kubecrate}


def on_host(pyz: Path, tmp_path: Path, *args) -> subprocess.CompletedProcess:
    """The .pyz through its preamble on CPython 3.6, as an operator starts it."""
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path)
    env["SHIV_ROOT"] = str(tmp_path / "shiv")
    return run([pyz, *args], env=env)


def test_old_key_checks_the_new_installer_and_learns_the_new_key(world):
    minisign = require_tool("minisign")
    old, new = world["old"], world["new"]
    checked = run([minisign, "-Vm", world["pyz"], "-P", old["blob"]])
    assert checked.returncode == 0, checked.stderr
    assert "Signature and comment signature verified" in checked.stdout + checked.stderr
    comment = [line for line in checked.stdout.splitlines()
               if line.startswith("Trusted comment: ")][0]
    assert f"\ttrusts:{new['id']} {new['blob']}" in comment
    assert f"\tretiring:{old['id']} expires {FUTURE.isoformat()}" in comment
    # The new key did not sign it: hosts that trust only the old key can check it.
    assert run([minisign, "-Vm", world["pyz"], "-P", new["blob"]]).returncode != 0


def test_bundles_signed_by_either_key_verify_before_the_expiry(world, tmp_path):
    new_bundle = on_host(world["pyz"], tmp_path, "verify", world["bundles"]["new"])
    assert new_bundle.returncode == 0, new_bundle.stderr
    assert f"signed by key {world['new']['id']}" in new_bundle.stderr
    assert "retires" not in new_bundle.stderr
    stock = on_host(world["pyz"], tmp_path, "verify", world["bundles"]["stock-new"])
    assert stock.returncode == 0, stock.stderr
    old_bundle = on_host(world["pyz"], tmp_path, "verify", world["bundles"]["old"])
    assert old_bundle.returncode == 0, old_bundle.stderr
    assert f"signed by key {world['old']['id']}" in old_bundle.stderr
    assert (f"key {world['old']['id']}, which a key rotation retires: this installer trusts it "
            f"only before {FUTURE.isoformat()}") in old_bundle.stderr


def test_a_key_never_trusted_is_refused(world, tmp_path):
    result = on_host(world["pyz"], tmp_path, "verify", world["bundles"]["stranger"])
    assert result.returncode == 3, result.stderr
    assert f"signed with key {world['stranger']['id']}, not with a key this installer " \
           f"trusts ({world['new']['id']}, {world['old']['id']} (retiring, expires " \
           f"{FUTURE.isoformat()}))" in result.stderr


def test_after_the_expiry_the_old_key_is_refused_naming_it_and_the_date(world, tmp_path):
    refused = on_host(world["expired"], tmp_path, "unpack", world["bundles"]["old"],
                      "--root", tmp_path / "host")
    assert refused.returncode == 3, refused.stderr
    assert (f"signed with key {world['old']['id']}, which a key rotation retired: this "
            f"installer trusts it only before {PAST.isoformat()}") in refused.stderr
    assert not (tmp_path / "host" / "var" / "lib" / "kubecrate" / "bundles").exists() or \
        not any((tmp_path / "host" / "var" / "lib" / "kubecrate" / "bundles").iterdir())
    accepted = on_host(world["expired"], tmp_path, "verify", world["bundles"]["new"])
    assert accepted.returncode == 0, accepted.stderr


def test_status_lists_the_keys_the_installer_trusts(world, tmp_path):
    result = on_host(world["pyz"], tmp_path, "status", "--json", "--root", tmp_path / "host")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["installer_keys"] == [
        {"key_id": world["new"]["id"], "expires": None},
        {"key_id": world["old"]["id"], "expires": FUTURE.isoformat()}]


def test_the_cli_refuses_a_rotation_hosts_could_not_follow(world, tmp_path):
    kubecrate, old, new = world["kubecrate"], world["old"], world["new"]
    out = tmp_path / zipapp.INSTALLER_NAME
    cases = [
        (["--rotate-from", old["secret"]], "--rotate-from and --old-key-expires go together"),
        (["--rotate-from", old["secret"], "--old-key-expires", PAST.isoformat()],
         f"--old-key-expires {PAST.isoformat()} is not after today"),
        (["--rotate-from", old["secret"], "--old-key-expires", "30/06/2027"],
         "is not a date (YYYY-MM-DD)"),
        (["--rotate-from", new["secret"], "--old-key-expires", FUTURE.isoformat()],
         f"--rotate-from names the signing key itself ({new['id']})"),
    ]
    for extra, message in cases:
        result = run([kubecrate, "zipapp", "--out", out, "--key", new["secret"], *extra])
        assert result.returncode == 2, (extra, result.stderr)
        assert message in result.stderr, result.stderr
    assert not out.exists()
