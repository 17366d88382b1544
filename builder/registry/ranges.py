"""A blob fetched as byte ranges on several connections (builder/registry/client.py decides
which layers are split and runs the jobs; the transport, with its retries and resume at the
right Range, is builder/registry/endpoint.py and builder/net/http.py)."""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from builder.cache import Cache

if TYPE_CHECKING:
    from builder.registry.client import _Resolved

__all__ = ["PART_MIN", "Split", "fetch_range", "part_ranges"]

PART_MIN = 8 << 20  # a layer is fetched in ranges only when each is at least this big
PART_COPY = 1 << 20


class Split:
    """A blob fetched as byte ranges on several connections. Its first range is the lead: it
    streams straight into the blob's checks (digest, diff ID) as a whole blob would, then
    takes the other ranges in order: one no connection has started yet it fetches itself,
    straight on; one another connection fetched (into an unnamed file beside the cache) it
    copies in when that is done. So the lead only ever waits for a range being fetched, and
    a fast link, where the lead catches up, copies little."""

    def __init__(self, resolved: _Resolved, desc: Dict[str, Any], diff_id: str,
                 ranges: List[Tuple[int, int]]) -> None:
        self.resolved, self.desc, self.diff_id, self.ranges = resolved, desc, diff_id, ranges
        self.files: List[Any] = [None] * len(ranges)
        self.futures: List[Future] = [None] * (len(ranges) - 1)  # type: ignore[list-item]
        # ... of ranges 1.. in order, complete once `submitted` is set
        self.submitted = threading.Event()

    def fetch(self, index: int, sink: Any, progress: Optional[Callable[[int], None]]) -> None:
        r = self.resolved
        r.endpoint.blob(r.pull.repository, self.desc["digest"], self.desc["size"], sink,
                        str(r.image), progress, stop=self.ranges[index][1])

    def lead(self, sink: Any, progress: Optional[Callable[[int], None]]) -> None:
        """Fill `sink` (a _fetch_blob sink, at byte 0) with the whole blob."""
        self.fetch(0, sink, progress)
        self.submitted.wait()
        for index, future in enumerate(self.futures, 1):
            if future.cancel():  # not started (or the pull is failing): fetch it here
                self.fetch(index, sink, progress)
                continue
            future.result()  # running or done: its error, if any, is the blob's
            handle = self.files[index]
            handle.seek(0)
            for block in iter(partial(handle.read, PART_COPY), b""):
                sink.write(block)
            handle.close()

    def close(self) -> None:
        for handle in self.files:
            if handle is not None:
                handle.close()


class _PartSink:
    """Where a range's bytes go: its `size` counts from the blob's first byte, so the
    transport asks for (and resumes at) the right Range."""

    def __init__(self, start: int, handle: Any) -> None:
        self._start, self._handle, self._written = start, handle, 0

    @property
    def size(self) -> int:
        return self._start + self._written

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._written += len(data)


def fetch_range(split: Split, index: int, cache: Cache,
                 progress: Optional[Callable[[int], None]]) -> None:
    """Range `index` (> 0) of a Split, into an unnamed file the lead copies in."""
    folder = cache.path(split.desc["digest"]).parent
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.TemporaryFile(prefix=".part-", dir=folder)
    try:
        split.fetch(index, _PartSink(split.ranges[index][0], handle), progress)
    except BaseException:
        handle.close()
        raise
    split.files[index] = handle


def part_ranges(size: int, share: int, connections: int) -> List[Tuple[int, int]]:
    """[start, stop) byte ranges for a blob of `size`: about `share` bytes each, no part under
    PART_MIN, at most `connections` of them (one range, the whole blob, when it is small)."""
    count = max(1, min(connections, round(size / max(share, PART_MIN))))
    bounds = [size * i // count for i in range(count + 1)]
    return list(zip(bounds, bounds[1:]))
