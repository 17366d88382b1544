"""Warm rebuilds trust earlier outputs only while they verify: the record's inputs, the signed
digests, and the stat identity that stands in for re-reading an unchanged file."""

import os

import pytest
from lab.bundles import make_source

from builder.bundle import keys, rebuild
from builder.bundle.pack import pack
from builder.bundle.sign import sign_file
from builder.cache import Cache


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A packed bundle and a signed 'installer' in out/, recorded as built from inputs 'x'."""
    monkeypatch.setattr(rebuild, "RACY_NS", 0)  # no need to wait out the racy window
    key = keys.generate()
    out = tmp_path / "out"
    packed = pack(make_source(tmp_path / "src"), out / "b.tar", key, created=1)
    installer = out / "kubecrate-installer.pyz"
    installer.write_bytes(b"#!/bin/sh\n" * 100)
    sign_file(key, installer)
    cache = Cache(tmp_path / "cache")
    rebuild.record(cache, out, "b", "x", {
        "bundle": packed.path, "installer": installer, "manifest_sha256": packed.manifest_sha256,
        "bundle_size": packed.size, "installer_size": 1000, "sections": {}, "counts": {},
        "digests": {"bundle": packed.blake2b}})
    reads = []
    real = rebuild.minisig.file_digest
    monkeypatch.setattr(rebuild.minisig, "file_digest",
                        lambda path, *a: reads.append(os.path.basename(path)) or real(path, *a))
    return {"cache": cache, "out": out, "key": key, "bundle": packed.path, "reads": reads}


def test_unchanged_outputs_are_kept_without_reading_them_again(built):
    kept = rebuild.reusable(built["cache"], built["out"], "b", "x", built["key"])
    assert kept is not None and kept["bundle"] == built["bundle"]
    assert built["reads"] == []


def test_other_inputs_or_another_key_build_again(built):
    assert rebuild.reusable(built["cache"], built["out"], "b", "y", built["key"]) is None
    assert rebuild.reusable(built["cache"], built["out"], "b", "x", keys.generate()) is None


def test_an_edit_with_its_mtime_put_back_is_read_and_refused(built):
    path = built["bundle"]
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.seek(2000)
        byte = handle.read(1)
        handle.seek(2000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime moves all the same
    assert rebuild.reusable(built["cache"], built["out"], "b", "x", built["key"]) is None
    assert built["reads"] == ["b.tar"]


def test_a_racy_record_reads_the_files_once_then_trusts_them(built, monkeypatch):
    monkeypatch.setattr(rebuild, "RACY_NS", 10**18)  # every file counts as just written
    assert rebuild.reusable(built["cache"], built["out"], "b", "x", built["key"]) is not None
    assert built["reads"] == ["b.tar", "kubecrate-installer.pyz"]
    monkeypatch.setattr(rebuild, "RACY_NS", 0)
    assert rebuild.reusable(built["cache"], built["out"], "b", "x", built["key"]) is not None
    assert built["reads"] == ["b.tar", "kubecrate-installer.pyz"]


def test_a_swapped_signature_is_refused(built, tmp_path):
    other = pack(make_source(tmp_path / "other"), tmp_path / "o" / "b.tar", keys.generate(),
                 created=2)
    os.replace(other.signature_path, built["bundle"].with_name("b.tar.minisig"))
    assert rebuild.reusable(built["cache"], built["out"], "b", "x", built["key"]) is None
