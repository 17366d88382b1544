"""`cache list` and `cache prune` (installer/cachecare.py) on a cache filled by real unpacks of
signed bundles: what an operator upgrading a host several times sees, what prune keeps, and
that a killed prune or a running unpack never costs a bundle that is still needed."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest
from lab.bundles import REPO, make_key, make_source, pack_source

from installer import cli
from installer.host import Host
from installer.state import State

CACHE = "var/lib/kubecrate/bundles"


def installer(capfd, *args):
    """The installer CLI in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        cli.main([str(a) for a in args])
    out = capfd.readouterr()
    return done.value.code, out.out, out.err


@pytest.fixture
def upgraded(tmp_path, source_date_epoch, capfd):
    """A host that unpacked five bundles over time (a 1 s apart, oldest first): `old1`,
    `old2`, `previous` (installed before), `current` (installed now), `next` (unpacked for
    the next upgrade). state.json names the current and previous ones as install writes them."""
    key, _, public = make_key(tmp_path / "keys")
    root = tmp_path / "root"
    digests = {}
    for number, label in enumerate(("old1", "old2", "previous", "current", "next")):
        source = make_source(tmp_path / label)
        (source / "bin" / "kubeadm").write_bytes(b"#!/bin/sh\necho " + label.encode() + b"\n")
        packed = pack_source(source, tmp_path / "out" / label / "k8s.tar", key)
        code, _, err = installer(capfd, "unpack", packed.path, "--key", public, "--root", root)
        assert code == 0, err
        folder = root / CACHE / packed.manifest_sha256
        os.utime(folder, (1_700_000_000 + number, 1_700_000_000 + number))
        digests[label] = packed.manifest_sha256
    state = State.load(Host(str(root)))
    state.use_bundle(digests["previous"])
    state.use_bundle(digests["current"])
    state.save()
    return {"root": root, "public": public, "digests": digests}


def test_prune_keeps_the_bundle_in_use_the_one_before_and_the_newest(upgraded, capfd):
    root, digests = upgraded["root"], upgraded["digests"]
    code, out, _ = installer(capfd, "cache", "list", "--root", root)
    assert code == 0
    assert "5 bundle(s) in {}".format(root / CACHE) in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines[digests["current"][:12]].endswith("[in use]")
    assert lines[digests["previous"][:12]].endswith("[previous]")
    assert lines[digests["next"][:12]].endswith("[newest unpacked, not installed yet]")
    assert not lines[digests["old1"][:12]].endswith("]")

    code, out, _ = installer(capfd, "cache", "prune", "--dry-run", "--root", root)
    assert code == 0 and "would remove 2 bundle(s)" in out
    assert sorted(os.listdir(root / CACHE)) == sorted(digests.values())

    code, out, _ = installer(capfd, "cache", "prune", "--root", root)
    assert code == 0, out
    assert "removed {} (".format(digests["old1"]) in out
    assert "removed {} (".format(digests["old2"]) in out
    assert "kept {} (k8s): in use".format(digests["current"]) in out
    left = sorted(os.listdir(root / CACHE))
    assert left == sorted(digests[k] for k in ("previous", "current", "next"))
    for label in ("previous", "current", "next"):  # what is kept still verifies in full
        code, _, err = installer(capfd, "verify", root / CACHE / digests[label],
                                 "--key", upgraded["public"], "--root", root)
        assert code == 0, err
    code, out, _ = installer(capfd, "cache", "prune", "--json", "--root", root)
    assert json.loads(out)["removed"] == []


def test_a_prune_killed_halfway_loses_nothing_kept_and_the_next_one_finishes(upgraded, capfd,
                                                                            monkeypatch):
    from installer import cachecare

    root, digests = upgraded["root"], upgraded["digests"]
    def killed(path):
        raise KeyboardInterrupt("killed between the rename and the delete")

    monkeypatch.setattr(cachecare.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        cachecare.prune(str(root))
    monkeypatch.undo()
    names = os.listdir(root / CACHE)
    assert digests["old1"] not in names  # renamed out of the digests' namespace first
    assert [n for n in names if n.startswith(".unpack-pruned-")]
    code, out, _ = installer(capfd, "cache", "prune", "--root", root)
    assert code == 0, out
    assert "left by a killed unpack" in out
    assert sorted(os.listdir(root / CACHE)) == sorted(
        digests[k] for k in ("previous", "current", "next"))


def test_prune_leaves_an_unpack_in_progress_and_refuses_beside_an_install(upgraded, capfd):
    root = upgraded["root"]
    filling = root / CACHE / ".unpack-running"
    filling.mkdir()
    held = os.open(str(filling), os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a running unpack holds its staging folder
    lock = root / "var/lib/kubecrate/install.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; f=open(sys.argv[1],'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush(); "
         "print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = installer(capfd, "cache", "prune", "--root", root)
        assert code != 0
        assert "another kubecrate run (pid {}) is working on this host".format(holder.pid) in err
        assert len(os.listdir(root / CACHE)) == 6
    finally:
        holder.kill()
        holder.wait(timeout=10)
    code, out, _ = installer(capfd, "cache", "prune", "--root", root)
    assert code == 0, out
    assert filling.is_dir()
    os.close(held)


def test_install_records_the_bundle_it_replaces(tmp_path):
    host = Host(str(tmp_path))
    state = State.load(host)
    state.use_bundle("a" * 64)
    state.use_bundle("a" * 64)  # a re-run of the same install
    assert "previous_bundle" not in state.data
    state.use_bundle("b" * 64)
    state.save()
    again = State.load(host).data
    assert (again["bundle"], again["previous_bundle"]) == ("b" * 64, "a" * 64)
