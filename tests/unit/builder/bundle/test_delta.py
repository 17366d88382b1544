"""Delta bundles in process: builder/bundle/delta.py writes one between two small packed trees
(with a real image archive sharing blobs), installer/source.py's DeltaSource assembles it, and
a plan that lies is refused however it is signed (installer/format/delta.py). The mirror-world
measurements are in tests/integration/builder/bundle/test_delta_bundle.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from lab.bundles import make_key, make_source, pack_source

from builder.bundle.delta import write_delta
from builder.errors import BuildError
from installer import bundlecache
from installer.format import delta as deltamod
from installer.format.errors import PreconditionError, VerificationError
from installer.format.manifest import dump_manifest
from installer.source import DeltaSource, TarSource, open_source


def archive(path: Path, blobs: list[bytes]) -> None:
    """A small image archive in the builder's member order: metadata, then blobs by digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {hashlib.sha256(b).hexdigest(): b for b in blobs}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        meta = json.dumps(sorted(names)).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        for hexd in sorted(names):
            info = tarfile.TarInfo(f"blobs/sha256/{hexd}")
            info.size = len(names[hexd])
            tar.addfile(info, io.BytesIO(names[hexd]))


SHARED = [bytes([n]) * 20000 for n in range(1, 6)]


@pytest.fixture
def pair(tmp_path):
    key, _secret, public = make_key(tmp_path / "keys")
    old = make_source(tmp_path / "old")
    archive(old / "images" / "images.tar", SHARED + [b"old layer" * 3000])
    new = make_source(tmp_path / "new")
    archive(new / "images" / "images.tar", SHARED + [b"new layer" * 10])
    (new / "repo" / "Packages" / "socat-1.7.3.2-3.el7.x86_64.rpm").write_bytes(b"n" * 3000)
    (new / "bin" / "kubectl").write_bytes(b"#!/bin/sh\necho kubectl\n")  # kubeadm's bytes move
    base = pack_source(old, tmp_path / "out" / "old.tar", key, created=1)
    result = pack_source(new, tmp_path / "out" / "new.tar", key, created=2)
    delta = write_delta(result.path, base.path, key, tmp_path / "out")
    return {"key": key, "public": public, "base": base, "result": result, "delta": delta,
            "tmp": tmp_path, "new": new}


def public_key(pair):
    from installer.format import minisig

    return minisig.load_public_key(str(pair["public"]))


def unpack(pair, location: Path, root: Path):
    staged = open_source(str(location)).stage(public_key(pair), str(root))
    try:
        return staged.commit()
    finally:
        staged.discard()


def test_the_delta_carries_only_what_the_base_lacks(pair):
    with tarfile.open(pair["delta"].path) as tar:
        names = set(tar.getnames())
        plan = json.load(tar.extractfile("bundle.json"))["delta"]
    sources = {f["path"]: f["from"] for f in plan["files"]}
    assert sources["repo/Packages/socat-1.7.3.2-3.el7.x86_64.rpm"] == "delta"
    assert sources["repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm"] == "base"
    assert sources["images/images.tar"] == "pieces"
    assert "images/images.tar" not in names and "delta/images/images.tar.pieces" in names
    pieces = tar_member_size(pair["delta"].path, "delta/images/images.tar.pieces")
    assert pieces < 20000  # headers and the tar's end record; the shared 100 kB stay behind
    assert pair["delta"].size < pair["result"].size / 4


def tar_member_size(path: Path, name: str) -> int:
    with tarfile.open(path) as tar:
        return tar.getmember(name).size


def test_assembled_equals_unpacked_full(pair):
    root_a, root_b = pair["tmp"] / "a", pair["tmp"] / "b"
    unpack(pair, pair["base"].path, root_a)
    assert isinstance(open_source(str(pair["delta"].path)), DeltaSource)
    assembled = Path(unpack(pair, pair["delta"].path, root_a))
    unpacked = Path(unpack(pair, pair["result"].path, root_b))
    assert assembled.name == unpacked.name == pair["result"].manifest_sha256
    files = sorted(p.relative_to(unpacked) for p in unpacked.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(assembled) for p in assembled.rglob("*") if p.is_file())
    for rel in files:
        assert (assembled / rel).read_bytes() == (unpacked / rel).read_bytes(), rel
    assert os.stat(assembled / "bin" / "kubeadm").st_mode & 0o777 == 0o755
    bundlecache.verified_cache(str(assembled), public_key(pair))


def test_missing_base_is_a_precondition_naming_the_digest(pair):
    root = pair["tmp"] / "empty"
    with pytest.raises(PreconditionError) as caught:
        unpack(pair, pair["delta"].path, root)
    assert pair["delta"].base_sha256 in caught.value.message
    assert "old.tar" in caught.value.hint
    assert not any(root.rglob("*")) or not (root / "var" / "lib" / "kubecrate" / "bundles"
                                            ).exists()


def test_verify_checks_the_delta_alone(pair):
    checked = open_source(str(pair["delta"].path)).verify(public_key(pair))
    assert deltamod.read_plan(checked.manifest).base_sha256 == pair["base"].manifest_sha256


def test_a_delta_of_a_delta_is_refused(pair):
    with pytest.raises(BuildError, match="itself a delta"):
        write_delta(pair["result"].path, pair["delta"].path, pair["key"], pair["tmp"] / "out")


def resign(pair, change) -> Path:
    """The delta with its bundle.json's plan changed by `change`, packed and signed again with
    the same key: a hostile but correctly signed delta."""
    folder = pair["tmp"] / "hostile"
    with tarfile.open(pair["delta"].path) as tar:
        tar.extractall(folder)
        manifest = json.load(tar.extractfile("bundle.json"))
    (folder / "bundle.json").unlink()
    plan = manifest["delta"]
    change(plan, folder)
    out = pair["tmp"] / "hostile.tar"
    from builder.bundle.pack import pack

    pack(folder, out, pair["key"], metadata={"delta": plan}, created=3,
         comment_fields={deltamod.COMMENT_DELTA_BASE: plan["base"]["bundle_json_sha256"]})
    return out


def _entry(plan, path):
    return next(f for f in plan["files"] if f["path"] == path)


@pytest.mark.parametrize("change, message", [
    (lambda plan, _f: _entry(plan, "bin/kubeadm").update(base_path="../../etc/passwd"),
     "'..'"),
    (lambda plan, _f: _entry(plan, "images/images.tar")["segments"].append(["base", 0, 1]),
     "add up to"),
    (lambda plan, _f: _entry(plan, "images/images.tar")["segments"][-1].__setitem__(0, "disk"),
     "delta|base"),
    (lambda plan, _f: plan["files"].pop(), "disagree"),
    (lambda plan, _f: _entry(plan, "bin/kubeadm").update(sha256="0" * 64), "disagree"),
    (lambda plan, _f: _entry(plan, "bin/kubeadm").update(base_path="bin/kubectl"),
     "does not list"),
    (lambda plan, _f: _entry(plan, "bin/kubeadm").update(
        base_path="repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm"), "not the result's"),
    (lambda plan, _f: _entry(plan, "bin/kubeadm").update(**{"from": "pieces"}), "pieces"),
    (lambda plan, _f: plan.update(format=9), "delta.format 9"),
])
def test_a_lying_plan_is_refused_and_nothing_enters_the_cache(pair, change, message):
    root = pair["tmp"] / "root"
    unpack(pair, pair["base"].path, root)
    cache = root / "var" / "lib" / "kubecrate" / "bundles"
    before = sorted(os.listdir(cache))
    hostile = resign(pair, change)
    with pytest.raises(VerificationError, match=message.replace("|", r"\|")
                       .replace("(", r"\(")):
        unpack(pair, hostile, root)
    assert sorted(os.listdir(cache)) == before


def test_a_stock_tar_is_not_taken_for_a_delta(pair):
    assert type(open_source(str(pair["result"].path))) is TarSource


def test_pieces_that_do_not_rebuild_the_file_are_refused(pair):
    """Segments whose bytes are not the signed ones (pieces swapped within the same size)."""
    def swap(plan, folder: Path):
        pieces = folder / "delta" / "images" / "images.tar.pieces"
        data = bytearray(pieces.read_bytes())
        data[0] ^= 1
        pieces.write_bytes(bytes(data))

    root = pair["tmp"] / "root"
    unpack(pair, pair["base"].path, root)
    with pytest.raises(VerificationError, match="images/images.tar assembled"):
        unpack(pair, resign(pair, swap), root)


def test_the_result_signature_must_name_the_result(pair):
    def other(plan, folder: Path):
        (folder / "delta" / "bundle.json").write_bytes(dump_manifest({"x": 1}))

    root = pair["tmp"] / "root"
    unpack(pair, pair["base"].path, root)
    with pytest.raises(VerificationError, match="result's bundle.json"):
        unpack(pair, resign(pair, other), root)


def test_preflight_view_assembles_only_what_it_reads_outside_the_root(pair):
    from installer.format.bundleinfo import wanted_for_preflight

    root = pair["tmp"] / "root"
    unpack(pair, pair["base"].path, root)
    cache = root / "var" / "lib" / "kubecrate" / "bundles"
    before = sorted(os.listdir(cache))
    with open_source(str(pair["delta"].path)).view(public_key(pair), str(root),
                                                     wanted_for_preflight) as view:
        assert not view.cached and not view.directory.startswith(str(root))
        assert view.bundle.manifest_sha256 == pair["result"].manifest_sha256
        held = sorted(p.relative_to(view.directory).as_posix()
                      for p in Path(view.directory).rglob("*") if p.is_file())
    assert held == ["bundle.json"]  # make_source's tree has no repodata or keys
    assert sorted(os.listdir(cache)) == before
    assert not os.path.exists(view.directory)


def test_after_a_key_rotation_the_base_may_be_signed_by_the_old_key(tmp_path):
    """The hosts unpacked a bundle the old key signed; the new bundle and its delta are the new
    key's, and an installer that trusts both (until the old one expires) assembles it."""
    import datetime

    from installer.format import minisig

    old_key, _s, _p = make_key(tmp_path / "old-keys")
    new_key, _s2, _p2 = make_key(tmp_path / "new-keys")
    old = make_source(tmp_path / "old")
    new = make_source(tmp_path / "new")
    (new / "repo" / "Packages" / "socat-1.7.3.2-3.el7.x86_64.rpm").write_bytes(b"n" * 3000)
    base = pack_source(old, tmp_path / "out" / "old.tar", old_key, created=1)
    result = pack_source(new, tmp_path / "out" / "new.tar", new_key, created=2)
    with pytest.raises(VerificationError, match="not with a key this installer trusts"):
        write_delta(result.path, base.path, new_key, tmp_path / "out")
    delta = write_delta(result.path, base.path, new_key, tmp_path / "out", base_keys=[old_key])
    ring = minisig.Keyring((minisig.TrustedKey(new_key.public_key),
                            minisig.TrustedKey(old_key.public_key,
                                               datetime.date.today() + datetime.timedelta(30))))
    root = tmp_path / "root"
    for location in (base.path, delta.path):
        staged = open_source(str(location)).stage(ring, str(root))
        staged.commit()
    folder = root / "var" / "lib" / "kubecrate" / "bundles" / result.manifest_sha256
    bundlecache.verified_cache(str(folder), ring)


def test_a_delta_is_not_split_and_a_split_one_is_refused(pair, monkeypatch):
    from builder.bundle.split import split_bundle
    from builder.errors import UsageError as BuildUsageError
    from installer.format.errors import UsageError

    with pytest.raises(BuildUsageError, match="copy it whole"):
        split_bundle(pair["delta"].path, 10000, pair["key"])
    # parts of a delta made anyway (split told it is not one) are refused by the installer
    with monkeypatch.context() as patched:
        patched.setattr(deltamod, "base_named", lambda fields: None)
        written = split_bundle(pair["delta"].path, 10000, pair["key"])
    index = next(p for p in written if p.suffix == ".parts")
    with pytest.raises(UsageError, match="copy the delta tar whole"):
        open_source(str(index)).verify(public_key(pair))
