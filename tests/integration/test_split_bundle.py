"""A bundle split for removable media (`kubecrate split`, installer/format/parts.py): the
parts install as the tar does, and a damaged part is named with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

from lab.bundles import REPO, files_under, make_key, make_source, pack_source, run_installer

CACHE = "var/lib/kubecrate/bundles"


def kubecrate(*args):
    return subprocess.run([sys.executable, "-c", "from builder.cli import main; main()",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_four_parts_install_like_the_tar_and_a_damaged_third_is_named(tmp_path,
                                                                        source_date_epoch):
    key, secret, public = make_key(tmp_path / "keys")
    source = make_source(tmp_path / "src")
    (source / "images" / "images.tar").write_bytes(bytes(range(256)) * 400)  # ~100 KiB
    packed = pack_source(source, tmp_path / "out" / "k8s.tar", key)
    size = (packed.path.stat().st_size // 4) + 1
    done = kubecrate("split", packed.path, "--size", size, "--key", secret)
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "out" / "k8s.tar.parts").read_text())
    assert [p["name"] for p in index["parts"]] == [f"k8s.tar.part-00{n}" for n in (1, 2, 3, 4)]
    assert all(p["size"] <= size for p in index["parts"])

    # only the parts, the index and the signatures travel
    stick = tmp_path / "stick"
    stick.mkdir()
    for name in [p["name"] for p in index["parts"]] + ["k8s.tar.parts", "k8s.tar.parts.minisig",
                                                       "k8s.tar.minisig"]:
        (stick / name).write_bytes((tmp_path / "out" / name).read_bytes())

    whole = tmp_path / "whole"
    assert run_installer("unpack", packed.path, "--key", public, "--root", whole).returncode == 0
    split = tmp_path / "split"
    done = run_installer("unpack", stick / "k8s.tar.part-002", "--key", public, "--root", split)
    assert done.returncode == 0, done.stderr
    assert files_under(split / CACHE) == files_under(whole / CACHE)

    third = stick / "k8s.tar.part-003"
    data = bytearray(third.read_bytes())
    data[len(data) // 2] ^= 1
    third.write_bytes(bytes(data))
    broken = tmp_path / "broken"
    done = run_installer("unpack", stick / "k8s.tar.parts", "--key", public, "--root", broken)
    assert done.returncode == 3, done.stderr
    assert f"part 3 of k8s.tar ({third}) is damaged" in done.stderr
    assert "copy that part again" in done.stderr
    assert files_under(broken) == []


def test_an_index_not_signed_by_the_key_is_refused(tmp_path, source_date_epoch):
    key, secret, public = make_key(tmp_path / "keys")
    packed = pack_source(make_source(tmp_path / "src"), tmp_path / "out" / "k8s.tar", key)
    assert kubecrate("split", packed.path, "--size", "2K", "--key", secret).returncode == 0
    index = tmp_path / "out" / "k8s.tar.parts"
    document = json.loads(index.read_text())
    document["parts"][0]["sha256"] = "0" * 64
    index.write_text(json.dumps(document))
    done = run_installer("unpack", index, "--key", public, "--root", tmp_path / "root")
    assert done.returncode == 3 and "k8s.tar.parts" in done.stderr, done.stderr
    assert files_under(tmp_path / "root") == []


def test_the_index_is_signed_only_with_the_bundles_own_key(tmp_path, source_date_epoch):
    """After a key rotation keys/kubecrate.key (split's default) may be the retiring key: an
    index it signed would stop verifying at the old key's expiry (docs/security.md)."""
    key, _secret, _public = make_key(tmp_path / "keys")
    _old, old_secret, _old_public = make_key(tmp_path / "old")
    packed = pack_source(make_source(tmp_path / "src"), tmp_path / "out" / "k8s.tar", key)
    done = kubecrate("split", packed.path, "--size", "2K", "--key", old_secret)
    assert done.returncode == 2, done.stderr
    assert "sign the index with the bundle's own key" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["k8s.tar", "k8s.tar.minisig"]
