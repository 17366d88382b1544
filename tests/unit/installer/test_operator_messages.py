"""Messages that made the operator guess: each names the file and says what
to do, with the exit code of the README's table."""

import errno
import os

import pytest
from lab.bundles import (
    files_under,
    hostile_bundle,
    member,
    signed_bundle,
)

from installer import atomic, cli
from installer.format import bundle, minisig
from installer.format.errors import ExitCode


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    top = tmp_path_factory.mktemp("messages")
    key, public, out = signed_bundle(top)
    return {"key": key, "public": public, "bundle": out, "top": top}


def installer(capfd, *args):
    """The installer CLI in-process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    return done.value.code, capfd.readouterr().err


def test_a_fifo_as_the_bundle_is_named_not_an_illegal_seek(tmp_path, capfd, kit):
    fifo = tmp_path / "k8s.tar"
    os.mkfifo(str(fifo))
    for command in ("verify", "unpack"):
        code, err = installer(capfd, command, str(fifo), "--key", str(kit["public"]),
                              "--root", str(tmp_path / "root"))
        assert code == ExitCode.USAGE, err
        assert "error: bundle {} is a FIFO (named pipe), not a regular file".format(fifo) in err
        assert "copy it to a regular file" in err and "Illegal seek" not in err


def test_a_bundle_name_too_long_for_its_signature_says_so(tmp_path, capfd, kit):
    long = tmp_path / ("k" * (255 - len(".tar")) + ".tar")  # the longest name ext4 allows
    long.write_bytes(kit["bundle"].read_bytes())
    code, err = installer(capfd, "verify", str(long), "--key", str(kit["public"]))
    assert code == ExitCode.VERIFY_FAILED, err
    assert "its file name (the bundle's plus .minisig) is longer than the file system " \
        "allows" in err and "pass --signature" in err
    assert "File name too long" not in err


def test_a_full_disk_names_the_cache_and_leaves_nothing(tmp_path, capfd, kit, monkeypatch):
    def full(staging, relpath, mode):
        handle = real(staging, relpath, mode)

        def write(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        handle.write = write
        return handle

    real = bundle.create_file
    monkeypatch.setattr(bundle, "create_file", full)
    root = tmp_path / "root"
    code, err = installer(capfd, "unpack", str(kit["bundle"]), "--key", str(kit["public"]),
                          "--root", str(root))
    assert code == ExitCode.ERROR, err
    assert "error: no space left on the file system holding {} while unpacking {} (".format(
        bundle.cache_root(str(root)), kit["bundle"]) in err and "MiB free)" in err
    assert files_under(root) == []  # no staging folder, no half-written member


def test_a_full_disk_while_writing_a_host_file_names_it(tmp_path):
    def fill(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "etc" / "containerd" / "config.toml"
    target.parent.mkdir(parents=True)
    with pytest.raises(Exception) as err:
        atomic.replace_file(str(target), fill, 0o644)
    assert getattr(err.value, "message", "").startswith(
        "no space left on the file system holding {} while writing it".format(target))
    assert os.listdir(str(target.parent)) == []


def test_an_unknown_tar_member_type_reads_as_english(tmp_path, capfd, kit):
    strange = hostile_bundle(tmp_path / "h.tar", kit["key"], [member("bin/x", kind=b"9")])
    code, err = installer(capfd, "verify", str(strange), "--key", str(kit["public"]))
    assert code == ExitCode.VERIFY_FAILED, err
    assert "bundle member 'bin/x' is a tar member of an unknown type: bundles hold only " \
        "regular files and folders" in err and "is a other" not in err


def test_a_non_utf8_untrusted_comment_is_not_blamed_on_the_trusted_one(tmp_path, capfd, kit):
    signed = tmp_path / "k8s.tar"
    signed.write_bytes(kit["bundle"].read_bytes())
    sig = (kit["bundle"].parent / "k8s.tar.minisig").read_bytes()
    first, rest = sig.split(b"\n", 1)
    (tmp_path / "k8s.tar.minisig").write_bytes(b"untrusted comment: caf\xe9\n" + rest)
    code, err = installer(capfd, "verify", str(signed), "--key", str(kit["public"]))
    assert code == ExitCode.OK, err  # line 1 is signed by nothing; stock minisign ignores it
    lines = rest.split(b"\n")
    lines[1] = b"trusted comment: caf\xe9"
    (tmp_path / "k8s.tar.minisig").write_bytes(first + b"\n" + b"\n".join(lines))
    with pytest.raises(Exception) as bad:
        minisig.load_signature(str(tmp_path / "k8s.tar.minisig"))
    assert bad.value.message == "{}: line 3 (the trusted comment) is not UTF-8".format(
        tmp_path / "k8s.tar.minisig")


def test_verify_and_unpack_show_a_byte_bar_on_a_terminal_only(tmp_path, kit):
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    def run(command, terminal):
        args = [sys.executable, "-m", "installer", command, str(kit["bundle"]), "--key",
                str(kit["public"])] + (["--root", str(tmp_path / command)]
                                       if command == "unpack" else [])
        if not terminal:
            return subprocess.run(args, capture_output=True, text=True, timeout=60).stderr
        controller, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=follower) as proc:
            os.close(follower)
            seen = b""
            while True:
                try:
                    data = os.read(controller, 4096)
                except OSError:  # EIO: the installer closed the terminal
                    break
                if not data:
                    break
                seen += data
            assert proc.wait(timeout=60) == 0, seen
        os.close(controller)
        return seen.decode("utf-8", "replace")

    for command in ("verify", "unpack"):
        shown = run(command, terminal=True)
        assert "\r{}:   0%|".format(command) in shown and "B/s]" in shown, shown
        assert "B/s]" not in run(command, terminal=False)
