"""File objects that hash what passes through them, so that nothing is read twice to be checked:
downloads into the cache, bundle and archive writing (signed or digested as written), and
source files re-hashed while tar copies them."""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO, Callable, Optional


class HashingWriter:
    """Writes through to `handle`, hashing (SHA-256 unless a `hasher` is given) and counting."""

    def __init__(self, handle: BinaryIO, hasher: Optional[Any] = None) -> None:
        self._handle = handle
        self.hash = hasher if hasher is not None else hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def tell(self) -> int:  # tarfile asks where it is
        return self.size


class HashingReader:
    """Reads from `handle`, hashing (SHA-256) what it returns and reporting its size."""

    def __init__(self, handle: BinaryIO,
                 progress: Optional[Callable[[int], None]] = None) -> None:
        self._handle = handle
        self._progress = progress
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self._handle.read(size)
        self.hash.update(block)
        if self._progress and block:
            self._progress(len(block))
        return block
