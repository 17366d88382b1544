"""Yum repository metadata: fetch `repodata/repomd.xml`, then the files it names, each verified
against its checksum in repomd.xml before it is parsed (as yum does).

    session = new_session()  # builder/net/http.py
    repos = load_repos(preset, ["base", "updates", "extras", "docker-ce-stable"], session)
    repos[0].packages            # Package records from primary.xml.gz
    repos[0].groups()["core"]    # comps, plain or compressed
    repos[0].files()             # filelists.xml.gz, fetched only when first asked for

All network I/O goes through one injected `requests.Session` and builder/net/http.py (explicit
timeouts, a few bounded retries); `file://` base URLs are read from disk. Metadata may be gzip,
xz, bzip2 or zstd (createrepo_c >= 1.0 writes zstd by default); the checksum repomd.xml gives is
checked on the stored (compressed) bytes, the open-checksum on the decompressed ones.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import xml.etree.ElementTree as ET
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Type,
)
from urllib.parse import urljoin

from builder.cache import Cache
from builder.inputs.mirrors import MirrorPreset, YumRepo
from builder.rpm.metadata import (
    CHUNK,
    Dep,
    Package,
    RepodataError,
    iter_filelists,
    raw_by_pkgid,
    read_packages,
)
from installer.format.errors import ExitCode

__all__ = ["DEFAULT_PRIORITY", "Dep", "Group", "MetadataChecksumError", "MetadataFile",
           "Package", "Repo", "RepodataError", "Repomd", "load_repo", "load_repos",
           "parse_comps", "parse_repomd"]

log = logging.getLogger(__name__)

DEFAULT_PRIORITY = 99  # yum-plugin-priorities' default; lower wins
TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
RETRIES = 3  # attempts in a row per file
NS_REPO = "{http://linux.duke.edu/metadata/repo}"
_HASHES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256",
           "sha384": "sha384", "sha512": "sha512", "md5": "md5"}


class MetadataChecksumError(RepodataError):
    """A metadata file does not match the checksum repomd.xml gives for it."""

    exit_code = ExitCode.VERIFY_FAILED


class MetadataFile(NamedTuple):
    """One `<data>` entry of repomd.xml."""

    type: str
    href: str
    checksum_type: str
    checksum: str
    open_checksum_type: Optional[str] = None
    open_checksum: Optional[str] = None
    size: Optional[int] = None


class Repomd(NamedTuple):
    revision: str
    files: Mapping[str, MetadataFile]
    raw: bytes


class Group(NamedTuple):
    """A comps group: mandatory and default members are installed with it, optional never."""

    id: str
    name: str
    mandatory: Tuple[str, ...]
    default: Tuple[str, ...]
    optional: Tuple[str, ...]
    conditional: Tuple[Tuple[str, str], ...] = ()  # (package, installed only with this one)


def parse_repomd(data: bytes, repo_id: str = "") -> Repomd:
    """Parse repomd.xml; every `<data>` entry needs a location and a checksum."""
    where = f"{repo_id}: repodata/repomd.xml" if repo_id else "repomd.xml"
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise RepodataError(f"{where}: not well-formed XML ({err})") from None
    if root.tag != NS_REPO + "repomd":
        raise RepodataError(f"{where}: root element is {root.tag!r}, not repomd")
    files: Dict[str, MetadataFile] = {}
    for entry in root.iter(NS_REPO + "data"):
        kind = entry.get("type") or ""
        location = entry.find(NS_REPO + "location")
        checksum = entry.find(NS_REPO + "checksum")
        opened = entry.find(NS_REPO + "open-checksum")
        if location is None or not location.get("href") or checksum is None or not checksum.text:
            raise RepodataError(f"{where}: <data type={kind!r}> lacks a location or checksum")
        size = entry.findtext(NS_REPO + "size")
        files[kind] = MetadataFile(
            type=kind, href=location.get("href") or "",
            checksum_type=checksum.get("type") or "sha256", checksum=checksum.text.strip().lower(),
            open_checksum_type=opened.get("type") if opened is not None else None,
            open_checksum=opened.text.strip().lower() if opened is not None and opened.text
            else None,
            size=int(size) if size and size.strip().isdigit() else None)
    return Repomd(root.findtext(NS_REPO + "revision") or "", files, data)


def parse_comps(data: bytes, what: str = "comps.xml") -> Dict[str, Group]:
    """Groups of a comps.xml by id (`core`, ...)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise RepodataError(f"{what}: not well-formed XML ({err})") from None
    groups: Dict[str, Group] = {}
    for group in root.iter("group"):
        lists: Dict[str, List[str]] = {"mandatory": [], "default": [], "optional": []}
        conditional: List[Tuple[str, str]] = []
        for req in group.iter("packagereq"):
            kind = req.get("type") or "mandatory"
            name = (req.text or "").strip()
            if kind == "conditional":
                conditional.append((name, req.get("requires") or ""))
            elif kind in lists and name:
                lists[kind].append(name)
        gid = (group.findtext("id") or "").strip()
        groups[gid] = Group(gid, (group.findtext("name") or gid).strip(),
                            tuple(lists["mandatory"]), tuple(lists["default"]),
                            tuple(lists["optional"]), tuple(conditional))
    return groups


def _getter(session: Any, timeout: Tuple[float, float]) -> Callable[[str, str], bytes]:
    """Whole metadata files through builder/net/http.py (bounded retries, file:// read)."""
    from builder.net.http import Policy, read_url  # not at import time: the resolver needs none

    policy = Policy(attempts=RETRIES, timeout=timeout)
    return lambda url, what: read_url(
        session, url, what, policy=policy, error=RepodataError,
        hint="check the mirror preset's baseurl and that the mirror is up")


class Repo:
    """One repository's metadata: its packages, and comps and filelists on demand."""

    def __init__(self, repo: YumRepo, repomd: Repomd, packages: Tuple[Package, ...],
                 fetch: Callable[[MetadataFile], bytes]):
        self.id = repo.id
        self.baseurl = repo.baseurl
        self.priority = repo.priority if repo.priority is not None else DEFAULT_PRIORITY
        self.config = repo
        self.repomd = repomd
        self.packages = packages
        self._fetch = fetch
        self._files: Optional[Dict[str, Tuple[str, ...]]] = None
        self._groups: Optional[Dict[str, Group]] = None

    def __repr__(self) -> str:
        return f"<Repo {self.id} ({len(self.packages)} packages, priority {self.priority})>"

    def url(self, package: Package) -> str:
        """Download URL of one of this repo's packages."""
        return urljoin(self.baseurl, package.location)

    def has(self, kind: str) -> bool:
        return kind in self.repomd.files

    def open(self, kind: str) -> BinaryIO:
        """A stream of the decompressed bytes of a repomd entry (`primary`, `other`, ...): the
        stored file is verified first, the uncompressed bytes when the stream reaches its end."""
        entry = self.repomd.files.get(kind)
        if entry is None:
            raise RepodataError(f"{self.id}: repomd.xml has no {kind!r} metadata")
        return io.BufferedReader(_OpenStream(self._fetch(entry), entry, f"{self.id}: {entry.href}"))

    def metadata(self, kind: str) -> bytes:
        """All decompressed, verified bytes of a repomd entry."""
        with self.open(kind) as stream:
            return b"".join(iter(lambda: stream.read(CHUNK), b""))

    def groups(self) -> Dict[str, Group]:
        """comps groups by id; empty when the repo has no comps (plain `group` preferred)."""
        if self._groups is None:
            # plain comps first, then any compressed copy (Stream 9 serves `.xml.zst`)
            kinds = ["group"] + [f"group_{c}" for c in ("gz", "xz", "zst", "bz2")]
            kind = next((k for k in kinds if self.has(k)), None)
            self._groups = parse_comps(self.metadata(kind), f"{self.id}: comps") if kind else {}
        return self._groups

    def files(self) -> Dict[str, Tuple[str, ...]]:
        """Every packaged path by pkgid, from filelists.xml (fetched once, on first call)."""
        if self._files is None:
            with self.open("filelists") as stream:
                self._files = {pkgid: files for pkgid, files, _raw in
                               iter_filelists(stream, f"{self.id}: filelists.xml")}
        return self._files

    def filelists_xml(self, pkgids: Iterable[str]) -> Dict[str, bytes]:
        """Raw filelists.xml `<package>` elements by pkgid (for the bundle's own repodata)."""
        with self.open("filelists") as stream:
            return raw_by_pkgid(stream, frozenset(pkgids), f"{self.id}: filelists.xml")

    def other_xml(self, pkgids: Iterable[str]) -> Dict[str, bytes]:
        """Raw other.xml `<package>` elements (changelogs) by pkgid."""
        with self.open("other") as stream:
            return raw_by_pkgid(stream, frozenset(pkgids), f"{self.id}: other.xml")


def load_repo(repo: YumRepo, session: Any, *, cache: Optional[Cache] = None,
              timeout: Tuple[float, float] = TIMEOUT) -> Repo:
    """Fetch repomd.xml and primary.xml of one repository, verified; comps, filelists and other
    are fetched later, only if asked for, and kept (compressed) once fetched."""
    get = _getter(session, timeout)
    raw = get(repo.url("repodata/repomd.xml"), f"{repo.id}: repomd.xml")
    repomd = parse_repomd(raw, repo.id)
    if "primary" not in repomd.files:
        raise RepodataError(f"{repo.id}: repomd.xml names no primary metadata")
    stored: Dict[str, bytes] = {}

    def fetch(entry: MetadataFile) -> bytes:
        if entry.type not in stored:
            stored[entry.type] = _fetch_verified(get, repo, entry, cache)
        return stored[entry.type]

    result = Repo(repo, repomd, (), fetch)
    with result.open("primary") as stream:
        result.packages = read_packages(stream, repo.id)
    stored.pop("primary")  # every record keeps its raw XML; the file itself is not needed
    log.debug("%s: %d packages (repomd revision %s)", repo.id, len(result.packages),
              repomd.revision)
    return result


def load_repos(preset: MirrorPreset, repo_ids: Iterable[str], session: Any, *,
               cache: Optional[Cache] = None,
               timeout: Tuple[float, float] = TIMEOUT) -> List[Repo]:
    """`load_repo` for each id of the preset, in the order given."""
    return [load_repo(preset.repo(rid), session, cache=cache, timeout=timeout)
            for rid in repo_ids]


def _fetch_verified(get: Callable[[str, str], bytes], repo: YumRepo, entry: MetadataFile,
                    cache: Optional[Cache]) -> bytes:
    """The file as stored (compressed), checked against repomd's checksum before anything
    reads it."""
    what = f"{repo.id}: {entry.href}"
    if entry.checksum_type != "sha256":
        cache = None  # the cache is addressed by sha256
    if cache is not None and cache.has(entry.checksum):
        data = cache.path(entry.checksum).read_bytes()
    else:
        data = get(repo.url(entry.href), what)
    _check(hashlib.new(_algorithm(entry.checksum_type, what), data).hexdigest(), entry.checksum,
           entry.checksum_type, what, "")
    if cache is not None and not cache.has(entry.checksum):
        cache.put_bytes(data, what)
    return data


class _OpenStream(io.RawIOBase):
    """Decompresses while reading and checks the open-checksum once the end is reached."""

    def __init__(self, data: bytes, entry: MetadataFile, what: str):
        self._inner = _decompressor(data, entry.href, what)
        kind = entry.open_checksum_type or entry.checksum_type
        self._hash = hashlib.new(_algorithm(kind, what)) if entry.open_checksum else None
        self._entry, self._what = entry, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)

    def _read(self, size: int) -> bytes:
        try:
            chunk = self._inner.read(size)
        except _DECOMPRESS_ERRORS as err:
            raise RepodataError(f"{self._what}: cannot decompress: {err}") from None
        if self._hash is not None:
            if chunk:
                self._hash.update(chunk)
            elif size != 0:
                _check(self._hash.hexdigest(), self._entry.open_checksum or "",
                       self._entry.open_checksum_type or self._entry.checksum_type,
                       self._what, "uncompressed ")
                self._hash = None
        return chunk


_DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError)


def _algorithm(kind: str, what: str) -> str:
    algorithm = _HASHES.get(kind)
    if algorithm is None:
        raise RepodataError(f"{what}: unknown checksum type {kind!r} in repomd.xml")
    return algorithm


def _check(actual: str, expected: str, kind: str, what: str, which: str) -> None:
    if actual != expected:
        raise MetadataChecksumError(
            f"{what}: {which}{kind} checksum mismatch: repomd.xml says {expected}, "
            f"the file has {actual}",
            hint="the mirror is mid-sync or serves stale metadata; retry later or use another")


def _decompressor(data: bytes, href: str, what: str) -> Any:
    raw = io.BytesIO(data)
    if href.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if href.endswith(".xz"):
        return lzma.LZMAFile(raw)
    if href.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if href.endswith(".zst"):
        return _zstd_reader(raw, what)
    if href.endswith(".zck"):
        # repomd always names a plain compressed twin beside a zchunk file; only a repo that
        # lists zchunk alone lands here.
        raise RepodataError(f"{what}: zchunk metadata is not supported",
                            hint="point the preset at a mirror that also serves gz/xz/zstd")
    return raw


def _zstd_reader(raw: BinaryIO, what: str) -> Any:
    """A reader of zstd-compressed bytes (createrepo_c >= 1.0's default, Stream 9's comps).
    The stdlib has no zstd before Python 3.14, so the pinned `zstandard` wheel decodes it."""
    try:
        import zstandard
    except ImportError:
        raise RepodataError(f"{what}: zstd metadata needs the `zstandard` package",
                            hint="reinstall kubecrate (pip install -e .), which pins it") from None
    return _ZstdReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
                       zstandard.ZstdError)


class _ZstdReader:
    """zstandard's reader, its errors raised as OSError like gzip's, lzma's and bz2's."""

    def __init__(self, inner: Any, error: Type[Exception]):
        self._inner, self._error = inner, error

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except self._error as err:
            raise OSError(f"zstd: {err}") from None
