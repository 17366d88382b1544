"""A minimal streaming tar reader that trusts nothing.

Python 3.6's tarfile has no extraction filter and follows links on extraction; bundles need only
regular files and folders, so this reader parses ustar/PAX/GNU headers itself, reports every
member's true kind, and never touches the file system.
"""

from typing import Dict, Iterator, NamedTuple, Optional

from installer.format.errors import VerificationError
from installer.format.iotypes import Readable

BLOCK = 512
MAX_EXTENDED_HEADER = 1 << 20

KINDS = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"5": "dir",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char device",
    b"4": "block device",
    b"6": "fifo",
}
# How a member's kind reads in a message ("bundle member 'x' is a symbolic link").
KIND_PHRASES = {"dir": "a folder", "hardlink": "a hard link", "symlink": "a symbolic link",
                "char device": "a character device", "block device": "a block device",
                "fifo": "a FIFO", "other": "a tar member of an unknown type"}


def kind_phrase(kind: str) -> str:
    return KIND_PHRASES.get(kind, "a " + kind)


class Entry(NamedTuple):
    name: str
    kind: str  # file, dir, hardlink, symlink, char device, block device, fifo, other
    size: int
    mode: int


def _cstring(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _number(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = _cstring(field).strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise VerificationError("tar header: bad {} field {!r}".format(what, field))


def _pax_records(data: bytes) -> Dict[str, str]:
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise VerificationError("tar: malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise VerificationError("tar: malformed PAX record length")
        record = data[pos : pos + length]
        if length <= space - pos + 1 or not record.endswith(b"\n") or b"=" not in record:
            raise VerificationError("tar: malformed PAX record")
        key, _, value = record[space - pos + 1 : -1].partition(b"=")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError("tar: PAX record is not UTF-8")
        pos += length
    return records


class TarReader:
    """Iterate over a tar stream; call `read_data()` (or not) before the next entry."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._remaining = 0  # unread data bytes of the current entry
        self._padding = 0

    def _read_exact(self, size: int) -> bytes:
        parts = []
        while size > 0:
            block = self._stream.read(size)
            if not block:
                raise VerificationError("bundle is truncated (tar stream ended early)")
            parts.append(block)
            size -= len(block)
        return b"".join(parts)

    def _skip_rest(self) -> None:
        for _ in self.read_data():
            pass
        if self._padding:
            self._read_exact(self._padding)
            self._padding = 0

    def read_data(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Yield the current entry's data in chunks."""
        while self._remaining > 0:
            block = self._stream.read(min(chunk, self._remaining))
            if not block:
                raise VerificationError("bundle is truncated (inside a member)")
            self._remaining -= len(block)
            yield block

    def _header(self) -> Optional[bytes]:
        self._skip_rest()
        block = self._read_exact(BLOCK)
        if block == b"\0" * BLOCK:
            return None
        stored = _number(block[148:156], "checksum")
        if sum(block[:148]) + 8 * 32 + sum(block[156:]) != stored:
            raise VerificationError("tar header checksum mismatch (corrupt bundle)")
        return block

    def _data_of(self, size: int) -> bytes:
        if size > MAX_EXTENDED_HEADER:
            raise VerificationError("tar: extended header too large")
        data = self._read_exact(size)
        pad = -size % BLOCK
        if pad:
            self._read_exact(pad)
        return data

    def entries(self) -> Iterator[Entry]:
        overrides: Dict[str, str] = {}
        while True:
            block = self._header()
            if block is None:
                return
            kind_flag = block[156:157]
            size = _number(block[124:136], "size")
            if kind_flag in (b"x", b"L", b"K"):
                data = self._data_of(size)
                if kind_flag == b"x":
                    overrides.update(_pax_records(data))
                elif kind_flag == b"L":
                    overrides["path"] = _cstring(data).decode("utf-8", "replace")
                else:
                    overrides["linkpath"] = _cstring(data).decode("utf-8", "replace")
                continue
            if kind_flag == b"g":
                raise VerificationError("tar: global PAX headers are not allowed in a bundle")
            name_bytes = _cstring(block[0:100])
            if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
                name_bytes = _cstring(block[345:500]) + b"/" + name_bytes
            try:
                name = name_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise VerificationError("tar: member name is not UTF-8: {!r}".format(name_bytes))
            name = overrides.get("path", name)
            if "size" in overrides:
                try:
                    size = int(overrides["size"])
                except ValueError:
                    raise VerificationError("tar: bad PAX size")
            overrides = {}
            kind = KINDS.get(kind_flag, "other")
            if kind == "dir":
                name = name.rstrip("/")
            if kind != "file":
                size = size if kind == "other" else 0
            self._remaining = size
            self._padding = -size % BLOCK
            yield Entry(name, kind, size, _number(block[100:108], "mode"))
