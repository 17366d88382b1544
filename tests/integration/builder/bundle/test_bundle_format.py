"""The signed bundle format against the real minisign tool, tampering and hostile tars."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import pytest
from lab.bundles import (
    files_under,
    hostile_bundle,
    make_key,
    make_source,
    manifest_of,
    member,
    pack_source,
    run_installer,
)
from lab.tools import require_tool

from builder.bundle import keys
from builder.errors import BuildError
from installer.format.errors import ExitCode


@pytest.fixture(scope="module")
def minisign():
    return require_tool("minisign")


@pytest.fixture
def kit(tmp_path, source_date_epoch):
    key, secret, public = make_key(tmp_path / "keys")
    source = make_source(tmp_path / "src")
    bundle = tmp_path / "out" / "k8s.tar"
    packed = pack_source(source, bundle, key)
    return {"key": key, "secret": secret, "public": public, "source": source,
            "bundle": bundle, "packed": packed, "root": tmp_path / "root"}


def test_stock_minisign_verifies_kubecrate_signatures(kit, minisign):
    out = subprocess.run([minisign, "-Vm", str(kit["bundle"]), "-p", str(kit["public"])],
                         capture_output=True, text=True, check=True)
    assert f"bundle.json-sha256:{kit['packed'].manifest_sha256}" in out.stdout
    assert "bundle:k8s" in out.stdout


def test_kubecrate_verifies_what_stock_minisign_signed(tmp_path, minisign, source_date_epoch):
    subprocess.run([minisign, "-G", "-W", "-p", str(tmp_path / "m.pub"), "-s",
                    str(tmp_path / "m.key")], check=True, capture_output=True)
    key = keys.load_secret_key(tmp_path / "m.key")  # we also read minisign's secret keys
    bundle = tmp_path / "b.tar"
    pack_source(make_source(tmp_path / "src"), bundle, key)
    (tmp_path / "b.tar.minisig").unlink()
    subprocess.run([minisign, "-S", "-s", str(tmp_path / "m.key"), "-m", str(bundle),
                    "-t", "any comment at all"], check=True, capture_output=True)
    result = run_installer("verify", str(bundle), "--key", str(tmp_path / "m.pub"))
    assert result.returncode == 0, result.stderr
    assert "any comment at all" in result.stderr
    result = run_installer("unpack", str(bundle), "--key", str(tmp_path / "m.pub"),
                           "--root", str(tmp_path / "root"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "root" / result.stdout.strip() / "bin" / "kubeadm").exists()


def test_stock_minisign_signs_with_a_kubecrate_key(kit, minisign):
    kit["bundle"].with_name("k8s.tar.minisig").unlink()
    subprocess.run([minisign, "-S", "-s", str(kit["secret"]), "-m", str(kit["bundle"])],
                   check=True, capture_output=True)
    result = run_installer("verify", str(kit["bundle"]), "--key", str(kit["public"]))
    assert result.returncode == 0, result.stderr


def test_keygen_writes_minisign_formats(kit):
    secret = kit["secret"]
    assert secret.stat().st_mode & 0o777 == 0o600
    lines = secret.read_text().splitlines()
    assert lines[0] == "untrusted comment: minisign encrypted secret key"
    pub = kit["public"].read_text().splitlines()
    assert pub[0] == f"untrusted comment: minisign public key {kit['key'].public_key.id_hex}"


def test_passphrase_protected_minisign_key(tmp_path, minisign):
    subprocess.run([minisign, "-G", "-p", str(tmp_path / "e.pub"), "-s", str(tmp_path / "e.key")],
                   input="s3cret\ns3cret\n", text=True, check=True, capture_output=True)
    key = keys.load_secret_key(tmp_path / "e.key", lambda: "s3cret")
    assert key.public_key.to_file_text().splitlines()[1] == \
        (tmp_path / "e.pub").read_text().splitlines()[1]
    with pytest.raises(keys.SigningKeyError, match="wrong passphrase"):
        keys.load_secret_key(tmp_path / "e.key", lambda: "guess")


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_signature(path, line_no, change):
    lines = path.read_text().split("\n")
    lines[line_no] = change(lines[line_no])
    path.write_text("\n".join(lines))


def _non_canonical(line):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = line.rstrip("=")
    pad = line[len(body):]
    return body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1] + pad


def _b64_flip(line):
    import base64
    raw = bytearray(base64.b64decode(line))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


TAMPERING = {
    "tar byte": lambda b, s: _flip(b, 5000),
    "tar truncated": lambda b, s: os.truncate(b, os.path.getsize(b) - 1024),
    "signature": lambda b, s: _edit_signature(s, 1, _b64_flip),
    "trusted comment": lambda b, s: _edit_signature(s, 2, lambda t: t.replace("k8s", "k9s")),
    "global signature": lambda b, s: _edit_signature(s, 3, _b64_flip),
    "non-canonical base64": lambda b, s: _edit_signature(s, 1, _non_canonical),
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
@pytest.mark.parametrize("command", ["verify", "unpack"])
def test_tampering_fails_with_exit_3_and_writes_nothing(kit, how, command):
    bundle, signature = kit["bundle"], kit["bundle"].with_name("k8s.tar.minisig")
    TAMPERING[how](bundle, signature)
    result = run_installer(command, str(bundle), "--key", str(kit["public"]),
                           "--root", str(kit["root"]))
    assert result.returncode == ExitCode.VERIFY_FAILED, result.stderr
    assert result.stderr.startswith("error: ")
    assert files_under(kit["root"]) == []


def test_wrong_key_names_the_key(kit, tmp_path):
    _, _, other = make_key(tmp_path / "other")
    result = run_installer("verify", str(kit["bundle"]), "--key", str(other))
    assert result.returncode == ExitCode.VERIFY_FAILED
    assert kit["key"].public_key.id_hex in result.stderr


def test_unpack_places_every_member_and_is_a_no_op_the_second_time(kit):
    args = ("unpack", str(kit["bundle"]), "--key", str(kit["public"]), "--root", str(kit["root"]))
    first = run_installer(*args)
    assert first.returncode == 0, first.stderr
    target = kit["root"] / "var/lib/kubecrate/bundles" / kit["packed"].manifest_sha256
    assert first.stdout.strip() == str(target)
    assert (target / "bin/kubeadm").read_bytes() == (kit["source"] / "bin/kubeadm").read_bytes()
    assert (target / "bin/kubeadm").stat().st_mode & 0o777 == 0o755
    assert (target / "repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm").stat().st_mode & 0o777 == 0o644
    assert manifest_of(kit["bundle"])["name"] == "k8s"
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    second = run_installer(*args)
    assert second.returncode == 0 and "already unpacked" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*")} == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_gzip_bundle_verifies_and_unpacks(kit, tmp_path):
    gz = tmp_path / "out" / "k8s-gz.tar"
    pack_source(kit["source"], gz, kit["key"], compress="gzip")
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    result = run_installer("unpack", str(gz), "--key", str(kit["public"]),
                           "--root", str(kit["root"]))
    assert result.returncode == 0, result.stderr


H = {"data": b"payload"}
HOSTILE = {
    "dot-dot": [member("../x", b"evil")],
    "absolute": [member("/etc/x", b"evil")],
    "symlink": [member("bin/link", kind=tarfile.SYMTYPE, linkname="/etc/passwd")],
    "hard link": [member("bin/hard", kind=tarfile.LNKTYPE, linkname="bin/kubeadm")],
    "device": [member("dev/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "fifo": [member("bin/fifo", kind=tarfile.FIFOTYPE)],
    "duplicate": [member("bin/a", b"one"), member("bin/a", b"one")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_is_refused_and_leaves_nothing(kit, tmp_path, case):
    bundle = hostile_bundle(tmp_path / "h.tar", kit["key"], HOSTILE[case])
    result = run_installer("unpack", str(bundle), "--key", str(kit["public"]),
                           "--root", str(kit["root"]))
    assert result.returncode == ExitCode.VERIFY_FAILED, (case, result.stderr)
    assert files_under(kit["root"]) == []
    assert not (tmp_path / "x").exists()


def _listed(path, data, **override):
    import hashlib
    entry = {"path": path, "size": len(data), "mode": 0o644,
             "sha256": hashlib.sha256(data).hexdigest()}
    entry.update(override)
    return entry


LYING = {
    "extra member": ([member("bin/a", b"one"), member("bin/extra", b"two")],
                     [_listed("bin/a", b"one")], "not listed"),
    "missing member": ([member("bin/a", b"one")],
                       [_listed("bin/a", b"one"), _listed("bin/b", b"two")], "missing"),
    "bytes differ": ([member("bin/a", b"one")], [_listed("bin/a", b"eno")], "sha256"),
    "size differs": ([member("bin/a", b"one")], [_listed("bin/a", b"one", size=4)], "size"),
}


@pytest.mark.parametrize("case", sorted(LYING))
def test_members_that_do_not_match_bundle_json_are_refused(kit, tmp_path, case):
    members, listed, message = LYING[case]
    bundle = hostile_bundle(tmp_path / "h.tar", kit["key"], members, listed)
    for command in ("verify", "unpack"):
        result = run_installer(command, str(bundle), "--key", str(kit["public"]),
                               "--root", str(kit["root"]))
        assert result.returncode == ExitCode.VERIFY_FAILED, (case, result.stderr)
        assert message in result.stderr and "bin/" in result.stderr
        assert files_under(kit["root"]) == []


def test_packing_is_deterministic(tmp_path, source_date_epoch):
    key = keys.generate()
    first = make_source(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    for path in second.rglob("*"):
        os.utime(path, (1234567, 1234567))
        os.chown(path, 4321, 4321)
    old = os.umask(0o077)
    try:
        (second / "bin" / "kubeadm").chmod(0o700)  # executable either way: 0755 in the bundle
        for compress in (None, "gzip"):
            a = pack_source(first, tmp_path / f"a-{compress}" / "k.tar", key, compress=compress)
            b = pack_source(second, tmp_path / f"b-{compress}" / "k.tar", key, compress=compress)
            assert a.path.read_bytes() == b.path.read_bytes(), compress
            assert a.signature_path.read_bytes() == b.signature_path.read_bytes()
    finally:
        os.umask(old)
    with tarfile.open(tmp_path / "a-None" / "k.tar") as tar:
        names = tar.getnames()
        assert names[0] == "bundle.json" and names[1:] == sorted(names[1:])
        for info in tar.getmembers():
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            assert info.mtime == source_date_epoch


def test_pack_refuses_a_symlink_in_the_source(tmp_path):
    source = make_source(tmp_path / "src")
    (source / "bin" / "link").symlink_to("kubeadm")
    from builder.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["pack", str(source), "--out", str(tmp_path / "x.tar"), "--key",
              str(make_key(tmp_path / "k")[1])])
    assert exit_.value.code == ExitCode.ERROR
    assert not (tmp_path / "x.tar").exists()


def test_known_digests_and_modes_give_the_same_bundle_and_a_wrong_digest_is_caught(tmp_path):
    """What stage hands pack for files linked from the cache: their SHA-256 (not re-read) and
    their mode (a link's own mode is the cache's); pack still checks the digest as it copies."""
    from builder.bundle.pack import pack, scan

    key = keys.generate()
    source = make_source(tmp_path / "src")
    plain = pack(source, tmp_path / "plain" / "k.tar", key, created=1)
    entries = {e["path"]: e for e in scan(source)}
    kubeadm = source / "bin" / "kubeadm"
    kubeadm.chmod(0o644)  # as a hard link to a 0644 cache file would be
    known = {path: e["sha256"] for path, e in entries.items()}
    linked = pack(source, tmp_path / "linked" / "k.tar", key, created=1, digests=known,
                  modes={"bin/kubeadm": 0o755})
    assert linked.path.read_bytes() == plain.path.read_bytes()
    wrong = dict(known, **{"bin/kubeadm": "0" * 64})
    with pytest.raises(BuildError, match="bin/kubeadm changed while the bundle was being packed"):
        pack(source, tmp_path / "wrong" / "k.tar", key, created=1, digests=wrong)
    assert not (tmp_path / "wrong" / "k.tar").exists()
