"""rpm's version ordering, exactly: `rpmvercmp`, EVR comparison and dependency range overlap.

The algorithm is rpm's (rpm 4.11's lib/rpmvercmp.c plus the `^` rule of
rpm >= 4.15); the code is ours. Two strings are walked in segments of digits or ASCII letters,
separators are skipped, `~` sorts before everything (even the end of the string) and `^` sorts
after the end of the string but before any further segment.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple, Optional

__all__ = ["EVR", "evr_key", "evrcmp", "overlaps", "parse_evr", "rpmvercmp"]

_DIGITS = re.compile(r"[0-9]+")
_ALPHA = re.compile(r"[A-Za-z]+")
_SKIP = re.compile(r"[^A-Za-z0-9~^]+")


def rpmvercmp(a: str, b: str) -> int:
    """Compare two version (or release) strings as rpm does: -1, 0 or 1."""
    if a == b:
        return 0
    if "~" in a or "^" in a or "~" in b or "^" in b:
        return _walk(a, b)
    key_a, key_b = _plain_key(a), _plain_key(b)
    return 0 if key_a == key_b else (1 if key_a > key_b else -1)


_SEGMENT = re.compile(r"[0-9]+|[A-Za-z]+")


@functools.lru_cache(maxsize=1 << 16)
def _plain_key(text: str) -> tuple:
    """A sort key equal to rpmvercmp's order for strings without `~` or `^`: the segments in
    turn, a number (compared as one, leading zeros and all) above any letters, letters by byte
    value, and a string that is a prefix of the other (separators aside) older."""
    return tuple((1, int(seg)) if seg[0] <= "9" else (0, seg) for seg in _SEGMENT.findall(text))


def _walk(a: str, b: str) -> int:
    """rpmvercmp itself: segment by segment, with `~` and `^`."""
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        m = _SKIP.match(a, i)
        if m:
            i = m.end()
        m = _SKIP.match(b, j)
        if m:
            j = m.end()
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            # Only one side has `^`: it is older than any further segment on the other.
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not ca or not cb:
            break
        numeric = ca.isdigit()
        pattern = _DIGITS if numeric else _ALPHA
        ma = pattern.match(a, i)
        mb = pattern.match(b, j)
        seg_a = ma.group() if ma else ""
        seg_b = mb.group() if mb else ""
        i += len(seg_a)
        j += len(seg_b)
        if not seg_b:
            # Segments of different types: a number is newer than letters.
            return 1 if numeric else -1
        if numeric:
            seg_a = seg_a.lstrip("0")
            seg_b = seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


class EVR(NamedTuple):
    """[epoch:]version[-release]; `release` None means "any release" in a requirement."""

    epoch: int
    version: str
    release: Optional[str] = None

    def __str__(self) -> str:
        text = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{text}-{self.release}" if self.release is not None else text


def parse_evr(text: str) -> EVR:
    """Parse `[epoch:]version[-release]` (the release starts after the last `-`)."""
    text = text.strip()
    epoch = 0
    head, colon, tail = text.partition(":")
    if colon and head.isdigit():
        epoch, text = int(head), tail
    elif colon and head == "":
        text = tail
    version, dash, release = text.rpartition("-")
    if not dash:
        return EVR(epoch, text, None)
    return EVR(epoch, version, release)


def evrcmp(a: EVR, b: EVR) -> int:
    """Order two EVRs: epoch numerically, then version, then release. A missing release on
    either side is not compared (rpm's rule for requirements such as `foo >= 1.2`)."""
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    sense = rpmvercmp(a.version, b.version)
    if sense == 0 and a.release is not None and b.release is not None:
        sense = rpmvercmp(a.release, b.release)
    return sense


evr_key = functools.cmp_to_key(evrcmp)
"""Sort key: `sorted(evrs, key=evr_key)` lists oldest first."""

_LESS, _GREATER, _EQUAL = 2, 4, 8
FLAG_BITS = {"LT": _LESS, "GT": _GREATER, "EQ": _EQUAL, "LE": _LESS | _EQUAL,
             "GE": _GREATER | _EQUAL}


def overlaps(flags_a: Optional[str], evr_a: Optional[EVR],
             flags_b: Optional[str], evr_b: Optional[EVR]) -> bool:
    """Whether two dependency ranges (flags as primary.xml writes them: LT, GT, EQ, LE, GE, or
    None for unversioned) intersect, as rpm's rpmdsCompare decides: an unversioned side always
    matches, and a missing release matches any release."""
    if not flags_a or not flags_b or evr_a is None or evr_b is None:
        return True
    if not evr_a.version or not evr_b.version:
        return True
    bits_a, bits_b = FLAG_BITS[flags_a], FLAG_BITS[flags_b]
    sense = evrcmp(evr_a, evr_b)
    if sense < 0:
        return bool(bits_a & _GREATER or bits_b & _LESS)
    if sense > 0:
        return bool(bits_a & _LESS or bits_b & _GREATER)
    return bool(bits_a & bits_b)
