"""Members written into a staging folder (installer/format/memberfile.py): every byte lands,
whatever the file's size and however the reads cut it, with O_DIRECT and without."""

import errno
import fcntl
import os
import random

import pytest

from installer.format import memberfile
from installer.format.errors import VerificationError

# around the 4 KiB alignment and the buffer written at once, and empty
BUFFER = memberfile.DIRECT_CHUNK
SIZES = [0, 1, 4095, 4096, 4097, BUFFER - 1, BUFFER, BUFFER + 4096 + 7, 2 * BUFFER + 5]


def _write(folder, name, data, cut):
    with memberfile.create_file(str(folder), name, 0o640) as out:
        for start in range(0, len(data), cut):
            out.write(data[start : start + cut])
    return folder / name


@pytest.mark.parametrize("size", SIZES)
def test_every_byte_lands_whatever_the_size_and_the_cuts(tmp_path, size):
    data = random.Random(size).randbytes(size)
    for cut in (1 << 20, 65536 + 3, 999):
        path = _write(tmp_path / str(cut), "bin/kubeadm", data, cut)
        assert path.read_bytes() == data
        assert path.stat().st_mode & 0o777 == 0o640


class _RefusingDirect:
    """A file system that takes O_DIRECT at open but refuses the write (EINVAL)."""

    def __init__(self, handle):
        self._handle = handle
        self.refused = 0

    def write(self, data):
        if fcntl.fcntl(self._handle.fileno(), fcntl.F_GETFL) & os.O_DIRECT:
            self.refused += 1
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def test_a_file_system_refusing_direct_writes_still_gets_every_byte(tmp_path, monkeypatch):
    opened = []
    real = memberfile._raw_file
    monkeypatch.setattr(memberfile, "_raw_file",
                        lambda fd: opened.append(_RefusingDirect(real(fd))) or opened[-1])
    data = random.Random(1).randbytes(2 * BUFFER + 5)
    assert _write(tmp_path, "images/images.tar", data, 1 << 20).read_bytes() == data
    assert [handle.refused for handle in opened] == [1]  # refused once, then through the cache


def test_a_file_system_refusing_direct_io_at_open_gets_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(memberfile, "_set_direct", lambda fd, on: False)
    data = random.Random(2).randbytes(BUFFER + 4097)
    assert _write(tmp_path, "repo/a.rpm", data, 65536).read_bytes() == data


def test_an_existing_file_or_link_is_never_written(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubelet").write_bytes(b"theirs")
    os.symlink("/etc/passwd", str(tmp_path / "bin" / "kubectl"))
    for name in ("bin/kubelet", "bin/kubectl"):
        with pytest.raises(VerificationError, match="would overwrite or follow a link"):
            memberfile.create_file(str(tmp_path), name, 0o644)
    assert (tmp_path / "bin" / "kubelet").read_bytes() == b"theirs"
