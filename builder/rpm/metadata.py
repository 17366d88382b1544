"""The rpm-md XML formats: `Package` records (builder/rpm/records.py) from primary.xml, files
from filelists.xml, and the raw `<package>` elements of primary, filelists and other, kept byte
for byte so that the bundle's own repodata can be written from them.

Parsing streams: the decompressed XML is read in chunks, each complete `<package>...</package>`
is cut out as raw bytes and the cut elements are parsed in batches by the C XML parser. That keeps
memory bounded by the chunk size plus the records, and gives the exact upstream bytes of every
element (createrepo's primary.xml `<package>` record).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import re
import sys
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple
from xml.parsers import expat

from builder.rpm.records import Dep, Package, RepodataError
from builder.rpm.vercmp import EVR
from installer.format.iotypes import Readable

__all__ = ["Dep", "Package", "RepodataError", "iter_elements", "iter_filelists",
           "iter_packages", "read_packages"]

NS_COMMON = "http://linux.duke.edu/metadata/common"
NS_RPM = "http://linux.duke.edu/metadata/rpm"
NS_FILELISTS = "http://linux.duke.edu/metadata/filelists"
CHUNK = 1 << 20
_MAX_ELEMENT = 64 << 20  # no single package record is anywhere near this: a broken file
_OPEN = re.compile(rb"<package[\s>]")
_CLOSE = b"</package>"
_ROOT = re.compile(rb"<([A-Za-z_][\w.:-]*)[^>]*>")
_FLAGS = frozenset({"LT", "GT", "EQ", "LE", "GE"})
_C = "{%s}" % NS_COMMON
_R = "{%s}" % NS_RPM
_DEP_KINDS = ("provides", "requires", "obsoletes", "conflicts")


def iter_elements(stream: Readable, what: str = "metadata") -> Iterator[Tuple[bytes, bytes]]:
    """Yield (root start tag, raw `<package>` element) for every package element of an
    rpm-md XML stream (primary, filelists or other), in file order."""
    buf = b""
    root: Optional[bytes] = None
    for chunk in _read_ahead(stream):
        eof = not chunk
        buf += chunk
        if root is None:
            root = _root_tag(buf, eof, what)
            if root is None:
                continue
        pos = 0
        while True:
            start = _OPEN.search(buf, pos)
            if start is None:
                pos = max(pos, len(buf) - len(b"<package "))
                break
            end = buf.find(_CLOSE, start.start())
            if end < 0:
                pos = start.start()
                break
            end += len(_CLOSE)
            yield root, buf[start.start():end]
            pos = end
        buf = buf[pos:]
        if len(buf) > _MAX_ELEMENT:
            raise RepodataError(f"{what}: a <package> element longer than {_MAX_ELEMENT} bytes")
    if root is None:
        raise RepodataError(f"{what}: no XML root element")
    if _OPEN.search(buf):
        raise RepodataError(f"{what}: truncated (a <package> element never ends)")


def _read_ahead(stream: Readable) -> Iterator[bytes]:
    """The stream's chunks, then b"". Each next chunk is read in a thread while the caller
    parses the one before: decompressing (zlib, lzma, zstd) and hashing release the GIL, so
    they run on the other core."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rpmmd-read") as pool:
        ahead = pool.submit(stream.read, CHUNK)
        while True:
            chunk = ahead.result()
            if chunk:
                ahead = pool.submit(stream.read, CHUNK)
            yield chunk
            if not chunk:
                return


def _root_tag(buf: bytes, eof: bool, what: str) -> Optional[bytes]:
    pos = 0
    while True:
        match = _ROOT.search(buf, pos)
        if match is None:
            if eof:
                raise RepodataError(f"{what}: no XML root element")
            return None
        if buf[match.start() + 1:match.start() + 2] in (b"?", b"!"):
            pos = match.end()
            continue
        return match.group(0)


def _parse_batch(root: bytes, raws: List[bytes], what: str) -> List[ET.Element]:
    name = _ROOT.match(root).group(1)  # type: ignore[union-attr]
    text = root + b"".join(raws) + b"</" + name + b">"
    try:
        return list(ET.fromstring(text))
    except ET.ParseError as err:
        raise RepodataError(f"{what}: not well-formed XML ({err})") from None


def _batches(stream: Readable, what: str) -> Iterator[Tuple[bytes, ET.Element]]:
    pending: List[bytes] = []
    root = b""
    for root, raw in iter_elements(stream, what):
        pending.append(raw)
        if len(pending) >= 512:
            yield from zip(pending, _parse_batch(root, pending, what))
            pending = []
    if pending:
        yield from zip(pending, _parse_batch(root, pending, what))


def iter_packages(stream: Readable, repo: str, what: str = "primary.xml") -> Iterator[Package]:
    """Parse a (decompressed) primary.xml stream into Package records for repository `repo`.
    A record without name, arch, version, SHA-256 checksum, location or size is an error.

    Records in createrepo's own layout are read by `_fast_batch` (regular expressions over the
    text, after expat has checked each batch is well-formed); any record it is not sure of
    (entities, comments, other namespaces, missing or odd fields) goes through ElementTree, which
    gives the same Package or the error. Equal dependency entries share one Dep object. The
    stream is read a chunk ahead in a thread (`_read_ahead`)."""
    where = f"{repo}: {what}"
    deps: Dict[str, Dep] = {}
    index = 0
    pending: List[bytes] = []
    root = b""
    for root, raw in iter_elements(stream, where):
        pending.append(raw)
        if len(pending) >= 512:
            yield from _package_batch(root, pending, repo, where, index, deps)
            index += len(pending)
            pending = []
    if pending:
        yield from _package_batch(root, pending, repo, where, index, deps)


def read_packages(stream: Readable, repo: str, what: str = "primary.xml") -> Tuple[Package, ...]:
    """Every record of iter_packages at once, with the cyclic GC paused for the whole read:
    the records are acyclic, and a collector let run between batches walks every record made
    so far, again and again (a third of the time on a large primary.xml)."""
    with no_gc():
        return tuple(iter_packages(stream, repo, what))


def _package_batch(root: bytes, raws: List[bytes], repo: str, where: str, index: int,
                   deps: Dict[str, Dep]) -> List[Package]:
    with no_gc():
        return _read_batch(root, raws, repo, where, index, deps)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic records: its passes over
    every tuple made so far are a third of the time of reading a large primary.xml.

    On the way out, everything made meanwhile is moved to the oldest generation unexamined
    (`gc.freeze()` then `gc.unfreeze()`, both a list splice), as if it had survived the young
    collections: otherwise the first young collection after `gc.enable()` walks every record
    just made, and promoting them all counts towards the next full collection (a tenth of a
    load-and-resolve). Nothing stays frozen: full collections still see all of it. Skipped when
    something else has frozen objects (unfreeze would thaw those too)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _read_batch(root: bytes, raws: List[bytes], repo: str, where: str, index: int,
                deps: Dict[str, Dep]) -> List[Package]:
    if _fast_root(root):
        found = _fast_batch(raws, repo, deps, *_check_well_formed(root, raws, where))
    else:
        found = [None] * len(raws)
    out: List[Package] = []
    elements: Optional[List[ET.Element]] = None
    for n, pkg in enumerate(found):
        if pkg is None:
            if elements is None:
                elements = _parse_batch(root, raws, where)
            pkg = _package(elements[n], raws[n], repo, f"{where}: package #{index + n + 1}")
        out.append(pkg)
    return out


def _fast_root(root: bytes) -> bool:
    """Whether the root binds the default namespace to rpm-md's common one and `rpm:` to its rpm
    one, as createrepo writes them (the fast reader relies on those prefixes)."""
    return (b'xmlns="' + NS_COMMON.encode() + b'"' in root
            and b'xmlns:rpm="' + NS_RPM.encode() + b'"' in root)


def _check_well_formed(root: bytes, raws: List[bytes], where: str) -> Tuple[bytes, bool]:
    """Raise unless the batch is well-formed XML. Return the batch's elements joined, and
    whether expat met a comment, CDATA section, processing instruction or namespace declaration
    in them (rare: the fast reader then looks for those in each element)."""
    name = _ROOT.match(root).group(1)  # type: ignore[union-attr]
    parser = expat.ParserCreate(namespace_separator="}")
    odd: List[bool] = []
    body = b"".join(raws)

    def met(*_args: Any) -> None:
        odd.append(True)

    def declared(*_args: Any) -> None:  # the root's own declarations come before the body
        if parser.CurrentByteIndex >= len(root):
            odd.append(True)

    parser.CommentHandler = parser.StartCdataSectionHandler = met
    parser.ProcessingInstructionHandler = met
    parser.StartNamespaceDeclHandler = declared
    try:
        parser.Parse(root + body + b"</" + name + b">", True)
    except expat.ExpatError as err:
        raise RepodataError(f"{where}: not well-formed XML ({err})") from None
    return body, bool(odd)


def _package(el: ET.Element, raw: bytes, repo: str, where: str) -> Package:
    if el.tag != _C + "package":
        raise RepodataError(f"{where}: unexpected element {el.tag!r}")
    name = el.findtext(_C + "name")
    arch = el.findtext(_C + "arch")
    if name:
        where += f" ({name})"
    version = el.find(_C + "version")
    checksum = el.find(_C + "checksum")
    location = el.find(_C + "location")
    size = el.find(_C + "size")
    missing = [field for field, ok in (
        ("name", name), ("arch", arch),
        ("version ver/rel", version is not None and version.get("ver") is not None
         and version.get("rel") is not None),
        ("checksum", checksum is not None and checksum.text),
        ("location href", location is not None and location.get("href")),
        ("size package", size is not None and size.get("package")),
    ) if not ok]
    if missing:
        raise RepodataError(f"{where}: required field(s) missing: {', '.join(missing)}")
    assert version is not None and checksum is not None and location is not None
    assert size is not None
    if checksum.get("type") != "sha256":
        raise RepodataError(
            f"{where}: package checksum type is {checksum.get('type')!r}, kubecrate needs sha256",
            hint="regenerate the repository with `createrepo_c` (sha256 is its default)")
    try:
        epoch = int(version.get("epoch") or 0)
        nbytes = int(size.get("package") or "")
    except ValueError:
        raise RepodataError(f"{where}: epoch or size is not a number") from None
    deps: Dict[str, Tuple[Dep, ...]] = {kind: () for kind in _DEP_KINDS}
    files: List[str] = []
    sourcerpm = ""
    fmt = el.find(_C + "format")
    if fmt is not None:
        for child in fmt:
            tag = child.tag
            if tag == _C + "file":
                if child.text:
                    files.append(child.text)
            elif tag.startswith(_R):
                kind = tag[len(_R):]
                if kind in deps:
                    deps[kind] = tuple(_dep(entry, where) for entry in child)
                elif kind == "sourcerpm":
                    sourcerpm = child.text or ""
    return Package(
        name=sys.intern(name or ""), epoch=epoch, version=version.get("ver") or "",
        release=version.get("rel") or "", arch=sys.intern(arch or ""), repo=repo,
        location=location.get("href") or "", sha256=(checksum.text or "").strip().lower(),
        size=nbytes, provides=deps["provides"], requires=deps["requires"],
        obsoletes=deps["obsoletes"], conflicts=deps["conflicts"], files=tuple(files),
        sourcerpm=sourcerpm, xml=raw)


def _dep(entry: ET.Element, where: str) -> Dep:
    name = entry.get("name")
    if not name:
        raise RepodataError(f"{where}: a dependency entry without a name")
    flags = entry.get("flags") or None
    if flags is not None and flags not in _FLAGS:
        raise RepodataError(f"{where}: {name}: unknown flags {flags!r}")
    ver = entry.get("ver")
    evr = None
    if ver is not None:
        try:
            evr = EVR(int(entry.get("epoch") or 0), ver, entry.get("rel"))
        except ValueError:
            raise RepodataError(f"{where}: {name}: epoch is not a number") from None
    return Dep(sys.intern(name), flags, evr, entry.get("pre") in ("1", "true"))


# Attribute values and text as the fast reader takes them: no entity references and no
# characters an XML parser would normalise, so the text is what ElementTree would give.
_VAL = r'[^"<&\t\n\r]'
_TXT = r"[^<&\r]"
_F_HEAD = re.compile(
    r'<package type="rpm">\s*<name>(' + _TXT + r'+)</name>\s*<arch>(' + _TXT + r'+)</arch>'
    r'\s*<version epoch="([0-9]*)" ver="(' + _VAL + r'+)" rel="(' + _VAL + r'+)"\s*/>'
    r'\s*<checksum type="sha256" pkgid="YES">([0-9A-Fa-f \n\t]+)</checksum>')
_F_SIZE = re.compile(r'<size package="([0-9]+)"')
_F_LOCATION = re.compile(r'<location(?: xml:base="' + _VAL + r'*")? href="(' + _VAL + r'+)"')
_F_SECTIONS = tuple((f"<rpm:{kind}", f"<rpm:{kind}>", f"</rpm:{kind}>")
                    for kind in _DEP_KINDS)
_F_SOURCERPM = re.compile(r"<rpm:sourcerpm>(" + _TXT + r"*)</rpm:sourcerpm>")
_F_FILE = re.compile(r'<file(?: type="[a-z]+")?>(' + _TXT + r"*)</file>")
# [^>] (one excluded character) is scanned much faster than [^<>]. In well-formed XML no tag
# holds a "<", and every "<" of a section must start one of its entries (counted per section).
_F_ENTRY = re.compile(r"<rpm:entry ([^>]*)/>")
_F_ATTRS = re.compile(  # ( ver=") and ( rel=") tell an absent attribute from an empty one
    r'name="(' + _VAL + r'+)"(?: flags="(LT|GT|EQ|LE|GE)")?(?: epoch="([0-9]*)")?'
    r'(?:( ver=")(' + _VAL + r'*)")?(?:( rel=")(' + _VAL + r'*)")?(?: pre="([01]|true|false)")?'
    r"\s*")
# Entry texts joined by "<" (which none contains): each match is one whole entry text
_F_ATTRS_ALL = re.compile(r"(?:\A|<)(?:" + _F_ATTRS.pattern + r")(?=<|\Z)")
_ZERO = frozenset({"", "0"})
_TRUE = frozenset({"1", "true"})
_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: too slow here


def _fast_batch(raws: List[bytes], repo: str, cache: Dict[str, Dep], body: bytes,
                odd: bool) -> List[Optional[Package]]:
    """The Packages of a well-formed batch of `<package>` elements (`body` is them joined), None
    for each element `_fast_fields` or `_fast_deps` cannot read (the caller asks ElementTree).
    `odd`: expat met comments, CDATA, PIs or namespace declarations in the batch. Dependency
    entries are parsed once per distinct text (`cache`, kept across batches), and those new in
    this batch all in one pattern pass."""
    entries: List[str] = []
    rows = [_fast_fields(raw, repo, odd, entries) for raw in raws]
    bad = _fast_deps(set(entries).difference(cache), cache)
    get = cache.__getitem__
    out: List[Optional[Package]] = []
    for row in rows:
        if row is None or bad and not all(bad.isdisjoint(row[k]) for k in range(9, 13)):
            out.append(None)
            continue
        provides, requires, obsoletes, conflicts = row[9:13]
        row[9] = tuple(map(get, provides)) if provides else ()
        row[10] = tuple(map(get, requires)) if requires else ()
        if obsoletes:
            row[11] = tuple(map(get, obsoletes))
        if conflicts:
            row[12] = tuple(map(get, conflicts))
        out.append(_new(Package, row))
    return out


def _fast_fields(raw: bytes, repo: str, odd: bool, entries: List[str]) -> Optional[List[Any]]:
    """Package's fields (dependency sections as lists of entry texts, also added to `entries`)
    of one createrepo-shaped, well-formed `<package>` element, or None when it is shaped
    otherwise. Each field is found by `str.find` and read by an anchored pattern; with no
    comments, CDATA or entities in the element, every `<` starts a tag, so a tag name found is
    that element."""
    if odd and (b"<!" in raw or b"<?" in raw or b"xmlns" in raw):
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    head = _F_HEAD.match(text)
    if head is None:
        return None
    pos = head.end()
    find = text.find
    size = _F_SIZE.match(text, find("<size", pos))
    location = _F_LOCATION.match(text, find("<location", pos))
    if size is None or location is None or find("<size", size.end()) >= 0 or find(
            "<location", location.end()) >= 0:
        return None
    sections: List[Sequence[Any]] = []  # found entries per section, () when absent
    for tag, start_tag, end_tag in _F_SECTIONS:
        start = find(tag, pos)
        if start < 0:
            sections.append(())
            continue
        end = find(end_tag, start)
        if (end < 0 or not text.startswith(start_tag, start)
                or find(tag, start + len(tag)) >= 0):  # <rpm:requires/>, or a repeat
            return None
        start += len(start_tag)
        found = _F_ENTRY.findall(text, start, end)
        if len(found) != text.count("<", start, end):  # an entry the pattern did not read
            return None
        sections.append(found)
        entries += found
    start = find("<file", pos)  # the pattern scans from the first file on, not the whole record
    texts = _F_FILE.findall(text, start) if start >= 0 else []
    if start >= 0 and text.count("<file", start) != len(texts):
        return None
    sourcerpm = ""
    start = find("<rpm:sourcerpm", pos)
    if start >= 0:
        match = _F_SOURCERPM.match(text, start)
        if match is None:
            return None
        sourcerpm = match.group(1)
    name, arch, epoch, ver, rel, checksum = head.groups()
    return [sys.intern(name), int(epoch or 0), ver, rel, sys.intern(arch), repo, location.group(1),
            checksum.strip().lower(), int(size.group(1)), *sections,
            tuple(filter(None, texts)), sourcerpm, raw]


def _fast_deps(new: Set[str], cache: Dict[str, Dep]) -> Set[str]:
    """Parse the entry texts `new` into `cache`; return those the pattern cannot read."""
    if not new:
        return set()
    todo = list(new)
    found = _F_ATTRS_ALL.findall("<".join(todo))  # "<" is in no entry text
    if len(found) != len(todo):  # some entry is shaped otherwise: find which, one by one
        found = []
        for attrs in todo:
            match = _F_ATTRS.fullmatch(attrs)
            found.append(match.groups("") if match else None)
    bad = {attrs for attrs, fields in zip(todo, found) if fields is None}
    if bad:  # not cached: each batch holding one finds it again, and ElementTree reads those
        todo, found = [a for a in todo if a not in bad], [f for f in found if f is not None]
    intern, zero = sys.intern, _ZERO
    cache.update(zip(todo, [
        _new(Dep, (intern(name), flags or None, _new(EVR, (
            0 if epoch in zero else int(epoch), ver, rel if has_rel else None))
            if has_ver else None, pre in _TRUE))
        for name, flags, epoch, has_ver, ver, has_rel, rel, pre in found]))
    return bad


def iter_filelists(stream: Readable, what: str = "filelists.xml"
                   ) -> Iterator[Tuple[str, Tuple[str, ...], bytes]]:
    """Yield (pkgid, every file and directory path, raw element) from a filelists.xml stream."""
    tag = "{%s}file" % NS_FILELISTS
    for raw, el in _batches(stream, what):
        pkgid = el.get("pkgid")
        if not pkgid:
            raise RepodataError(f"{what}: a <package> without pkgid")
        yield pkgid.lower(), tuple(f.text for f in el.iter(tag) if f.text), raw


def raw_by_pkgid(stream: Readable, pkgids: frozenset[str], what: str) -> Dict[str, bytes]:
    """The raw `<package>` elements of filelists.xml or other.xml for the given pkgids."""
    found: Dict[str, bytes] = {}
    pattern = re.compile(rb'pkgid="([0-9A-Fa-f]+)"')
    for _root, raw in iter_elements(stream, what):
        match = pattern.search(raw, 0, raw.find(b">"))
        if match and match.group(1).decode().lower() in pkgids:
            found[match.group(1).decode().lower()] = raw
    return found
