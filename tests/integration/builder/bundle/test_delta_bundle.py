"""Delta bundles in the mirror world (docs/upgrades.md): the primary recipe and its variant that
differs in one RPM and one image (scripts/mirrorworld/variants.py) are built for real; the
delta between them is measured against the full bundle, and the installer .pyz, on the hosts'
Python 3.6, assembles it with the base already in a root's cache. The assembled cache folder
must be byte for byte the one unpacking the full bundle gives; a missing base, a tampered
delta and a changed base file are refused, leaving the cache as it was.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from lab import py36
from lab.bundles import REPO, make_key
from mirrorworld.variants import DELTA_IMAGE, DELTA_RPM, write_delta_variant

from builder import zipapp
from installer.format import delta as deltamod
from tests.integration.builder.test_build import kubecrate, seeded_cache

pytestmark = pytest.mark.integration

RECIPE = REPO / "manifests" / "k8s-1.23.17-el7.yaml"
BASE = "k8s-1.23.17-el7"
NEXT = "k8s-1.23.17-el7-next"


@pytest.fixture(scope="module")
def deltas(mirror_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("delta")
    _key, secret, public = make_key(root / "keys")
    cache = seeded_cache(root / "cache")
    recipes = root / "recipes"
    recipes.mkdir()
    base_recipe = recipes / RECIPE.name
    shutil.copyfile(RECIPE, base_recipe)
    next_recipe = write_delta_variant(RECIPE, recipes)
    common = ("--mirrors", mirror_world.preset, "--key", secret, "--cache", cache)
    base = kubecrate("build", base_recipe, "--out", root / "base", *common)
    assert base.returncode == 0, base.stderr
    base_tar = root / "base" / f"{BASE}.tar"
    built = kubecrate("build", next_recipe, "--out", root / "next", "--base", base_tar, *common)
    assert built.returncode == 0, built.stderr
    since = kubecrate("build", next_recipe, "--out", root / "since", "--since",
                      recipes / f"{BASE}.lock", *common)
    assert since.returncode == 0, since.stderr
    delta = next((root / "next").glob(f"{NEXT}.delta-*.tar"))
    return {"root": root, "secret": secret, "public": public, "base": base_tar,
            "base_digest": base.stdout.strip(), "full": root / "next" / f"{NEXT}.tar",
            "full_digest": built.stdout.strip(), "delta": delta, "stderr": built.stderr,
            "since": root / "since" / delta.name, "pyz": root / "next" / zipapp.INSTALLER_NAME,
            "recipes": recipes, "next_recipe": next_recipe, "common": common, "cache": cache}


def installer(deltas, tmp_path: Path, *args) -> subprocess.CompletedProcess:
    """The built .pyz (which trusts the build key) on Python 3.6, as on a host."""
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path,
                            SHIV_ROOT=str(tmp_path / "shiv"))
    return subprocess.run([deltas["pyz"], *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def cache_of(root: Path) -> Path:
    return root / "var" / "lib" / "kubecrate" / "bundles"


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_the_variant_differs_in_one_rpm_and_one_image(deltas):
    def manifest(tar: Path) -> dict:
        with tarfile.open(tar) as bundle:
            return json.load(bundle.extractfile("bundle.json"))

    old, new = manifest(deltas["base"]), manifest(deltas["full"])
    rpms = [{c["nevra"] for c in m["components"]["rpms"]} for m in (old, new)]
    assert (rpms[0] - rpms[1], rpms[1] - rpms[0]) == ({DELTA_RPM[0]}, {DELTA_RPM[1]})
    images = [{i["reference"] for i in m["images"]} for m in (old, new)]
    assert (images[0] - images[1], images[1] - images[0]) == ({DELTA_IMAGE[0]}, {DELTA_IMAGE[1]})


def test_the_delta_is_under_a_tenth_of_the_full_bundle(deltas):
    full, delta = deltas["full"].stat().st_size, deltas["delta"].stat().st_size
    assert delta < full / 10, (delta, full)
    assert deltas["delta"].name == f"{NEXT}.delta-{deltas['base_digest'][:12]}.tar"
    # the build summary reports it
    assert f"the delta is {100 * delta / full:.1f}% of the full bundle's" in deltas["stderr"]
    assert "saved" in deltas["stderr"]
    with tarfile.open(deltas["delta"]) as tar:
        plan = json.load(tar.extractfile("bundle.json"))["delta"]
        names = set(tar.getnames())
    assert plan["base"]["bundle_json_sha256"] == deltas["base_digest"]
    assert plan["result"]["bundle_json_sha256"] == deltas["full_digest"]
    carried = {f["path"] for f in plan["files"] if f["from"] == "delta"}
    assert f"repo/Packages/{DELTA_RPM[1]}.rpm" in carried
    assert not any(p.startswith("bin/") for p in carried)  # unchanged: taken from the base
    assert "images/images.tar" not in names  # only its new pieces travel
    signature = (deltas["delta"].parent / (deltas["delta"].name + ".minisig")).read_text()
    assert f"delta-base:{deltas['base_digest']}" in signature


def test_since_the_old_lock_gives_the_same_delta(deltas):
    assert deltas["since"].read_bytes() == deltas["delta"].read_bytes()
    # the base was built again in a scratch folder, which is gone with its rebuild record
    assert sorted(p.name for p in deltas["since"].parent.iterdir()) == sorted(
        p.name for p in deltas["delta"].parent.iterdir())
    records = [json.loads(p.read_text()) for p in (deltas["cache"] / "builds").glob("*.json")]
    assert [r["bundle"] for r in records].count(f"{BASE}.tar") == 1  # the fixture's own build


def test_the_assembled_result_is_the_full_bundle_byte_for_byte(deltas, tmp_path):
    with_delta, with_full = tmp_path / "a", tmp_path / "b"
    for args in ((with_delta, deltas["base"]), (with_delta, deltas["delta"]),
                 (with_full, deltas["full"])):
        done = installer(deltas, tmp_path, "unpack", args[1], "--root", args[0])
        assert done.returncode == 0, done.stderr
    assembled = cache_of(with_delta) / deltas["full_digest"]
    unpacked = cache_of(with_full) / deltas["full_digest"]
    assert listing(assembled) == listing(unpacked)
    files = [p for p in listing(unpacked) if (unpacked / p).is_file()]
    match, mismatch, errors = filecmp.cmpfiles(assembled, unpacked, files, shallow=False)
    assert (mismatch, errors) == ([], []) and len(match) == len(files)
    assert {"bundle.json", "bundle.minisig", "images/images.tar"} <= set(match)
    assert not [n for n in os.listdir(cache_of(with_delta)) if n.startswith(".")]
    # the result in the cache verifies as any cache folder does, and a re-run reuses it
    done = installer(deltas, tmp_path, "verify", assembled)
    assert done.returncode == 0, done.stderr
    done = installer(deltas, tmp_path, "unpack", deltas["delta"], "--root", with_delta)
    assert done.returncode == 0 and "already unpacked" in done.stdout + done.stderr


def test_verify_checks_the_delta_and_names_its_base(deltas, tmp_path):
    done = installer(deltas, tmp_path, "verify", deltas["delta"])
    assert done.returncode == 0, done.stderr
    assert f"a delta bundle: {NEXT} from base {BASE} (bundle.json sha256 " \
        f"{deltas['base_digest']})" in done.stderr


def test_a_delta_whose_base_is_absent_is_refused(deltas, tmp_path):
    root = tmp_path / "root"
    done = installer(deltas, tmp_path, "unpack", deltas["delta"], "--root", root)
    assert done.returncode == 4, done.stderr
    assert deltas["base_digest"] in done.stderr
    assert f"{BASE}.tar" in done.stderr  # says what to copy
    assert not cache_of(root).exists()


def test_a_tampered_delta_is_refused(deltas, tmp_path):
    root = tmp_path / "root"
    assert installer(deltas, tmp_path, "unpack", deltas["base"], "--root", root).returncode == 0
    before = listing(cache_of(root))
    tampered = tmp_path / deltas["delta"].name
    data = bytearray(deltas["delta"].read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    shutil.copyfile(str(deltas["delta"]) + ".minisig", str(tampered) + ".minisig")
    done = installer(deltas, tmp_path, "unpack", tampered, "--root", root)
    assert done.returncode == 3, done.stderr
    assert listing(cache_of(root)) == before


def test_a_changed_base_file_is_refused_by_name(deltas, tmp_path):
    """The base's cache folder was changed after it was unpacked: the file copied from it is
    named, and nothing enters the cache."""
    root = tmp_path / "root"
    assert installer(deltas, tmp_path, "unpack", deltas["base"], "--root", root).returncode == 0
    kubeadm = cache_of(root) / deltas["base_digest"] / "bin" / "kubeadm"
    data = bytearray(kubeadm.read_bytes())
    data[100] ^= 1
    kubeadm.write_bytes(bytes(data))
    before = listing(cache_of(root))
    done = installer(deltas, tmp_path, "unpack", deltas["delta"], "--root", root)
    assert done.returncode == 3, done.stderr
    assert "bin/kubeadm" in done.stderr
    assert listing(cache_of(root)) == before


def test_a_base_fetched_without_its_image_archive_gives_a_result_without_it(deltas, tmp_path):
    """A registry-mode worker's base folder lacks images/images.tar on purpose (omitted.json,
    docs/cluster.md): the delta assembles every other file, leaves the archive out of the
    result as well (it is built from the base's), and the result verifies. Before, the unpack
    stopped with exit 3 on the base's missing archive."""
    root = tmp_path / "root"
    assert installer(deltas, tmp_path, "unpack", deltas["base"], "--root", root).returncode == 0
    base = cache_of(root) / deltas["base_digest"]
    (base / "images" / "images.tar").unlink()
    (base / "images").rmdir()
    (base / "omitted.json").write_text('{"omitted": ["images/images.tar"]}\n')
    assert installer(deltas, tmp_path, "verify", base).returncode == 0
    done = installer(deltas, tmp_path, "unpack", deltas["delta"], "--root", root)
    assert done.returncode == 0, done.stderr
    result = cache_of(root) / deltas["full_digest"]
    assert json.loads((result / "omitted.json").read_text()) == {"omitted": ["images/images.tar"]}
    assert not (result / "images").exists() and (result / "bin" / "kubeadm").is_file()
    checked = installer(deltas, tmp_path, "verify", result)
    assert checked.returncode == 0, checked.stderr


def test_inspect_and_lint_name_the_base(deltas):
    shown = kubecrate("inspect", deltas["delta"])
    assert shown.returncode == 0, shown.stderr
    assert "a DELTA bundle" in shown.stdout and deltas["base_digest"] in shown.stdout
    as_json = json.loads(kubecrate("inspect", "--json", deltas["delta"]).stdout)
    assert as_json["delta"]["base"] == {"name": BASE, "bundle_json_sha256": deltas["base_digest"]}
    linted = kubecrate("lint", deltas["delta"], "--key", deltas["public"])
    assert linted.returncode == 0, linted.stderr
    assert "delta" in linted.stderr and deltas["base_digest"] in linted.stderr


def test_the_plan_names_files_the_result_has(deltas):
    """The delta's signed bundle.json carries the result's whole file list with SHA-256s."""
    with tarfile.open(deltas["delta"]) as tar:
        plan = json.load(tar.extractfile("bundle.json"))["delta"]
        result = json.load(tar.extractfile(deltamod.RESULT_MANIFEST))
    assert [(f["path"], f["sha256"]) for f in plan["files"]] == \
        [(f["path"], f["sha256"]) for f in result["files"]]


def test_since_a_lock_whose_recipe_changed_is_refused_before_building(deltas, tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    shutil.copyfile(deltas["recipes"] / f"{BASE}.lock", folder / f"{BASE}.lock")
    (folder / RECIPE.name).write_text(RECIPE.read_text() + "# edited since it was locked\n")
    done = kubecrate("build", deltas["next_recipe"], "--out", tmp_path / "out", "--since",
                     folder / f"{BASE}.lock", *deltas["common"])
    assert done.returncode == 2, done.stderr
    assert "no longer matches its inputs" in done.stderr and "--base" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_base_signed_by_another_key_is_refused_before_building(deltas, tmp_path):
    other, _secret, _public = make_key(tmp_path / "other")
    from builder.bundle.sign import sign_file

    base = tmp_path / deltas["base"].name
    shutil.copyfile(deltas["base"], base)
    sign_file(other, base)
    done = kubecrate("build", deltas["next_recipe"], "--out", tmp_path / "out", "--base", base,
                     *deltas["common"])
    assert done.returncode == 3, done.stderr
    assert other.public_key.id_hex in done.stderr
    assert not (tmp_path / "out").exists()
