"""The bundle cache (docs/bundle-format.md, docs/security.md): the bytes checked are the
bytes installed (one read, for both signature styles), the cache is checked whenever it is
used and can stand in for the tar, and a killed unpack leaves no staging folder behind."""

from __future__ import annotations

import builtins
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from lab.bundles import REPO, files_under, make_key, make_source, pack_source, run_installer

from builder.bundle.sign import sign_file
from installer import cli
from installer.format.errors import ExitCode, VerificationError

CACHE = "var/lib/kubecrate/bundles"
RPM = "repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm"


@pytest.fixture
def kit(tmp_path, source_date_epoch):
    key, _, public = make_key(tmp_path / "keys")
    source = make_source(tmp_path / "src")
    bundle = tmp_path / "out" / "k8s.tar"
    packed = pack_source(source, bundle, key)
    return {"key": key, "public": public, "source": source, "bundle": bundle,
            "packed": packed, "root": tmp_path / "root",
            "folder": tmp_path / "root" / CACHE / packed.manifest_sha256}


def installer(capfd, *args):
    """The installer CLI in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        cli.main([str(a) for a in args])
    out = capfd.readouterr()
    return done.value.code, out.out, out.err


def unpack(kit, bundle=None):
    return run_installer("unpack", str(bundle or kit["bundle"]), "--key", str(kit["public"]),
                         "--root", str(kit["root"]))


# ------------------------------------------------------------------------------- one read


def _restyle(path, key, style):
    """kubecrate's trusted comment names bundle.json's digest; stock `minisign -S` does not."""
    if style == "stock":
        sign_file(key, path, "timestamp:1700000000\tfile:k8s.tar\tprehashed")


@pytest.mark.parametrize("style", ["stock", "kubecrate"])
def test_a_bundle_swapped_after_the_signature_check_is_not_installed(kit, tmp_path, capfd,
                                                                     monkeypatch, style):
    """The attack: an older signed bundle (already in the cache) is swapped
    in for the new one after the installer checked the new one's signature. Each further open()
    of the bundle path sees the older bundle, deterministically; what gets unpacked must be
    the bundle whose signature was checked, or nothing."""
    old_source = make_source(tmp_path / "old")
    (old_source / "bin" / "kubeadm").write_bytes(b"#!/bin/sh\necho old kubeadm\n")
    old = pack_source(old_source, tmp_path / "old-out" / "k8s.tar", kit["key"])
    _restyle(old.path, kit["key"], style)
    _restyle(kit["bundle"], kit["key"], style)
    assert installer(capfd, "unpack", old.path, "--key", kit["public"],
                     "--root", kit["root"])[0] == 0
    swap_in = tmp_path / "swap-in.tar"
    shutil.copy(old.path, swap_in)

    target, opened, real_open = str(kit["bundle"]), [], builtins.open

    def open_then_swap(file, *args, **kwargs):
        if file == target:
            opened.append(file)
            if len(opened) > 1 and swap_in.exists():
                os.replace(swap_in, target)  # the swap between the check and the next read
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_then_swap)
    code, out, err = installer(capfd, "unpack", target, "--key", kit["public"],
                               "--root", kit["root"])
    monkeypatch.undo()
    new_folder = kit["root"] / CACHE / kit["packed"].manifest_sha256
    if code == 0:
        assert out.strip() == str(new_folder), "unpacked the swapped-in older bundle: " + err
        assert (new_folder / "bin/kubeadm").read_bytes() == b"#!/bin/sh\necho kubeadm\n"
    else:
        assert code == ExitCode.VERIFY_FAILED and not new_folder.exists(), err
    assert len(opened) == 1  # the bundle is read once: there is no second read to swap under


def test_unpack_reads_the_bundle_once_and_stages_nothing_before_the_signature(kit, tmp_path,
                                                                              monkeypatch):
    """A tar whose members all match its bundle.json but whose signature does not: the staging
    folder is removed and nothing else is written, and the error names the signature."""
    from installer import source

    other = make_source(tmp_path / "other")
    (other / "bin" / "kubeadm").write_bytes(b"#!/bin/sh\necho unsigned\n")
    forged = pack_source(other, tmp_path / "forged" / "k8s.tar", make_key(tmp_path / "k2")[0])
    _restyle(kit["bundle"], kit["key"], "stock")  # no bundle.json digest to stop at early
    shutil.copy(kit["bundle"].with_name("k8s.tar.minisig"), str(forged.path) + ".minisig")
    opened = []
    real = source.bundlemod.create_file
    monkeypatch.setattr(source.bundlemod, "create_file",
                        lambda *a: opened.append(a[1]) or real(*a))
    with pytest.raises(VerificationError, match="signature does not match key"):
        source.TarSource(str(forged.path)).stage(kit["key"].public_key, str(kit["root"]))
    assert "bin/kubeadm" in opened  # it was extracted, into the staging folder only
    assert files_under(kit["root"]) == []


# ------------------------------------------------------------ the cache checked when used


def _change(folder):
    (folder / RPM).write_bytes(b"R" * 3000)  # same size, other bytes
    return RPM


def _grow(folder):
    with open(folder / RPM, "ab") as handle:
        handle.write(b"x")
    return RPM


def _add(folder):
    (folder / "bin" / "kubectl").write_bytes(b"#!/bin/sh\necho planted\n")
    return "bin/kubectl"


def _delete(folder):
    (folder / "images" / "images.tar").unlink()
    return "images/images.tar"


def _delete_manifest(folder):
    (folder / "bundle.json").unlink()  # before: "Directory not empty", exit 1
    return "bundle.json"


def _symlink(folder):
    (folder / RPM).unlink()
    (folder / RPM).symlink_to("/etc/passwd")
    return RPM


DAMAGE = {"changed": _change, "grown": _grow, "added": _add, "deleted": _delete,
          "bundle.json deleted": _delete_manifest, "symlink": _symlink}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_cache_is_refused_named_and_not_used(kit, how):
    assert unpack(kit).returncode == 0
    folder = kit["folder"]
    name = DAMAGE[how](folder)
    again = unpack(kit)
    assert again.returncode == ExitCode.VERIFY_FAILED, again.stdout + again.stderr
    assert "already unpacked" not in again.stderr
    assert name in again.stderr and "rm -rf {}".format(folder) in again.stderr
    cached = run_installer("verify", str(folder), "--key", str(kit["public"]))
    assert cached.returncode == ExitCode.VERIFY_FAILED and name in cached.stderr


@pytest.mark.parametrize("how", ["changed", "bundle.json changed"])
def test_a_damaged_cache_of_a_stock_signed_bundle_is_refused_too(kit, how):
    """No bundle.json digest in the signature: the tar, read in full, vouches for the cache."""
    _restyle(kit["bundle"], kit["key"], "stock")
    assert unpack(kit).returncode == 0
    if how == "changed":
        name = _change(kit["folder"])
    else:
        manifest = kit["folder"] / "bundle.json"
        manifest.write_text(manifest.read_text().replace('"name": "k8s"', '"name": "k9s"'))
        name = "bundle.json: not the bundle's"
    again = unpack(kit)
    assert again.returncode == ExitCode.VERIFY_FAILED, again.stdout + again.stderr
    assert name in again.stderr and "rm -rf" in again.stderr


def test_binaries_are_hashed_while_copied_from_the_cache(tmp_path):
    """The cache changed after it was checked: the copy into /usr/bin refuses and writes
    nothing."""
    from installer.host import Host

    cached = tmp_path / "bundles" / "d" / "bin" / "kubelet"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"#!/bin/sh\necho planted\n")
    signed = "0" * 64
    host = Host(str(tmp_path / "root"))
    with pytest.raises(VerificationError, match="bin/kubelet in the bundle cache has sha256"):
        host.copy_in(str(cached), "/usr/bin/kubelet", 0o755, signed, "bin/kubelet")
    assert not (tmp_path / "root" / "usr/bin/kubelet").exists()
    assert os.listdir(str(tmp_path / "root" / "usr/bin")) == []  # no temporary file left


def test_cached_files_are_fsynced_before_the_rename(kit, monkeypatch):
    from installer import bundlecache, source
    from installer.format import bundle

    synced, renamed = set(), []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        synced.add(os.path.realpath("/proc/self/fd/{}".format(fd)))
        return real_fsync(fd)

    def rename(src, dst):
        renamed.append((src, {p for p in synced if p.startswith(str(src))}))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    staged = source.TarSource(str(kit["bundle"])).stage(kit["key"].public_key, str(kit["root"]))
    staged.commit()
    (staging, synced_then), = renamed
    expected = {os.path.join(staging, f.path) for f in staged.bundle.manifest.files}
    assert expected | {os.path.join(staging, "bundle.json"),
                       os.path.join(staging, bundlecache.SIGNATURE_NAME)} <= synced_then
    assert bundle.cache_root(str(kit["root"])) + "/.unpack-" in staging


# ---------------------------------------------------- the cache folder instead of the tar


def test_the_cache_folder_verifies_and_unpacks_without_the_tar(kit):
    assert unpack(kit).returncode == 0
    assert (kit["folder"] / "bundle.minisig").read_text() == \
        kit["bundle"].with_name("k8s.tar.minisig").read_text()
    kit["bundle"].unlink()
    kit["bundle"].with_name("k8s.tar.minisig").unlink()
    checked = run_installer("verify", str(kit["folder"]), "--key", str(kit["public"]))
    assert checked.returncode == 0, checked.stderr
    assert "verified k8s: 3 files, bundle.json sha256 {}".format(
        kit["packed"].manifest_sha256) in checked.stderr
    again = unpack(kit, kit["folder"])
    assert again.returncode == 0 and "already unpacked" in again.stderr
    # a copy of the folder (another host's cache) is copied in, checked while copying
    other = kit["root"].parent / "other-root"
    moved = run_installer("unpack", str(kit["folder"]), "--key", str(kit["public"]),
                          "--root", str(other))
    assert moved.returncode == 0, moved.stderr
    assert (other / CACHE / kit["packed"].manifest_sha256 / "bin/kubeadm").read_bytes() == \
        (kit["source"] / "bin/kubeadm").read_bytes()


@pytest.mark.parametrize("damage", ["signature", "trusted comment", "other key"])
def test_a_cache_folder_is_only_as_good_as_its_kept_signature(kit, tmp_path, damage):
    assert unpack(kit).returncode == 0
    kept = kit["folder"] / "bundle.minisig"
    if damage == "signature":
        kept.unlink()
        expect = "has no bundle.minisig"
    elif damage == "trusted comment":
        kept.write_text(kept.read_text().replace("bundle:k8s", "bundle:k9s"))
        expect = "trusted comment does not match"
    else:
        other_key = make_key(tmp_path / "other")[0]
        stock = kit["root"].parent / "stock.tar"
        shutil.copy(kit["bundle"], stock)
        sign_file(other_key, stock, "timestamp:1\tfile:k8s.tar\tprehashed")
        kept.write_text(stock.with_name("stock.tar.minisig").read_text())
        expect = "was signed with key"
    checked = run_installer("verify", str(kit["folder"]), "--key", str(kit["public"]))
    assert checked.returncode == ExitCode.VERIFY_FAILED and expect in checked.stderr
    if damage == "signature":  # an older installer's cache: the tar puts the signature back
        assert unpack(kit).returncode == 0
        assert run_installer("verify", str(kit["folder"]), "--key",
                             str(kit["public"])).returncode == 0


def test_a_stock_signed_cache_needs_the_tar(kit):
    _restyle(kit["bundle"], kit["key"], "stock")
    assert unpack(kit).returncode == 0
    checked = run_installer("verify", str(kit["folder"]), "--key", str(kit["public"]))
    assert checked.returncode == ExitCode.VERIFY_FAILED
    assert "names no bundle.json digest" in checked.stderr and "--bundle" in checked.stderr


# ----------------------------------------------------------- killed unpacks leave nothing

STALL = textwrap.dedent("""
    import sys, time
    from installer import cli
    from installer.format import bundle
    real = bundle._write
    def stall(item):
        real(item)
        if item[1] is None:  # the first member is written and closed: stop here
            sys.stdout.write("stalled\\n"); sys.stdout.flush()
            time.sleep(120)
    bundle._write = stall
    cli.main(sys.argv[1:])
""")


def test_a_killed_unpack_leaves_no_staging_folder_after_the_next_start(kit):
    cache = kit["root"] / CACHE
    args = ["unpack", str(kit["bundle"]), "--key", str(kit["public"]), "--root", str(kit["root"])]

    def stalled_unpack():
        proc = subprocess.Popen([sys.executable, "-c", STALL, *args], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "stalled\n", proc.stderr.read()
        return proc

    victim = stalled_unpack()
    staging = [p for p in cache.iterdir() if p.name.startswith(".unpack-")]
    assert len(staging) == 1 and any(staging[0].rglob("*"))
    # a run that is still filling its staging folder keeps it
    busy = stalled_unpack()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert staging[0].exists()  # what a killed unpack leaked before
    live = [p for p in cache.iterdir() if p.name.startswith(".unpack-") and p != staging[0]]
    assert len(live) == 1
    done = unpack(kit)
    assert done.returncode == 0, done.stderr
    assert not staging[0].exists() and live[0].exists()
    busy.send_signal(signal.SIGKILL)
    busy.wait(timeout=30)
    again = unpack(kit)  # the bundle is in the cache now: nothing to stage, still cleaned
    assert again.returncode == 0 and "already unpacked" in again.stderr
    assert sorted(p.name for p in cache.iterdir()) == [kit["packed"].manifest_sha256]


def test_a_member_may_not_take_the_name_of_the_kept_signature(kit, tmp_path):
    from lab.bundles import hostile_bundle, member

    forged = hostile_bundle(tmp_path / "h.tar", kit["key"], [member("bundle.minisig", b"x")])
    result = unpack(kit, forged)
    assert result.returncode == ExitCode.VERIFY_FAILED
    assert "duplicate or reserved path 'bundle.minisig'" in result.stderr
    assert files_under(kit["root"]) == []
