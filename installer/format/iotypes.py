"""The shapes of the file-like objects the bundle code streams through, for mypy: anything
with read() (a file, a hashing or verifying reader, a gzip stream) or write().

Python 3.6's typing has no Protocol, so the protocols exist only while type checking; at run
time the names are plain `object`, which is all an annotation needs.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Protocol  # novermin: read by mypy only, never imported at run time

    class Readable(Protocol):
        def read(self, size: int = ...) -> bytes: ...

    class Writable(Protocol):
        def write(self, data: bytes) -> object: ...

else:
    Readable = Writable = object
