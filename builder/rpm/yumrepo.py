"""Write the bundle's `repo/`: the RPMs under `Packages/`, fresh rpm-md repodata that CentOS 7's
yum 3 reads, and the vendors' public keys so that hosts keep `gpgcheck=1`.

    filelists, other = gather_xml(resolution.packages, repos)
    write_repo(bundle / "repo", resolution.packages, paths, filelists, other, keys)

The repodata is built from the upstream `<package>` elements byte for byte, with only `location
href` rewritten to `Packages/<file>`: primary, filelists and other as gzip-compressed XML named
`<sha256>-<type>.xml.gz`, and `repomd.xml` with SHA-256 checksum, open-checksum, size, open-size
and a timestamp from SOURCE_DATE_EPOCH. No zstd, no sqlite (yum 3 falls back to the XML), no
comps. The same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple
from xml.sax.saxutils import quoteattr

from builder.bundle.pack import source_date_epoch
from builder.cache import place
from builder.errors import BuildError
from builder.rpm.metadata import NS_COMMON, NS_FILELISTS, NS_RPM, Package, RepodataError
from builder.rpm.packages import KeyFile

__all__ = ["NS_OTHER", "NS_REPO", "WrittenRepo", "gather_xml", "key_file_names",
           "write_repo"]

NS_OTHER = "http://linux.duke.edu/metadata/other"
NS_REPO = "http://linux.duke.edu/metadata/repo"
_LOCATION = re.compile(rb"<location\b[^>]*/>|<location\b[^>]*>\s*</location>")
_SAFE_FILE = re.compile(r"\A[A-Za-z0-9_.+~^-]+\.rpm\Z")
_ROOTS = {
    "primary": (b'<metadata xmlns="%s" xmlns:rpm="%s" packages="%%d">'
                % (NS_COMMON.encode(), NS_RPM.encode()), b"</metadata>"),
    "filelists": (b'<filelists xmlns="%s" packages="%%d">' % NS_FILELISTS.encode(),
                  b"</filelists>"),
    "other": (b'<otherdata xmlns="%s" packages="%%d">' % NS_OTHER.encode(), b"</otherdata>"),
}
# What yum 3's sqlitecachec / yum.packages read from every primary record.
PRIMARY_FIELDS = ("name", "arch", "version", "checksum", "summary", "time", "size", "location",
                  "format")


class WrittenRepo(NamedTuple):
    """What `write_repo` wrote, relative to the repo folder: RPMs, metadata, key files."""

    packages: Tuple[str, ...]  # "Packages/x.rpm"
    metadata: Tuple[str, ...]  # "repodata/repomd.xml", "repodata/<sha>-primary.xml.gz", ...
    keys: Tuple[str, ...]  # "RPM-GPG-KEY-CentOS-7", ...
    package_sha256: Tuple[str, ...] = ()  # of each of `packages`, in the same order


def gather_xml(packages: Iterable[Package], repos: Iterable[Any]
               ) -> Tuple[Dict[str, bytes], Dict[str, bytes]]:
    """The raw filelists.xml and other.xml elements of `packages`, by pkgid, from each one's
    `repodata.Repo` (anything with `id`, `filelists_xml(pkgids)`, `other_xml(pkgids)`)."""
    by_repo: Dict[str, List[str]] = {}
    for package in packages:
        by_repo.setdefault(package.repo, []).append(package.pkgid)
    filelists: Dict[str, bytes] = {}
    other: Dict[str, bytes] = {}
    for repo in repos:
        if repo.id in by_repo:
            filelists.update(repo.filelists_xml(by_repo[repo.id]))
            other.update(repo.other_xml(by_repo[repo.id]))
    return filelists, other


def key_file_names(keys: Iterable[KeyFile]) -> Dict[str, KeyFile]:
    """A file name for each distinct key (by fingerprint): the URL's own name when it is an
    `RPM-GPG-KEY-*` file, else `RPM-GPG-KEY-<first word of the key's user id>`; a clash of
    names between different keys gets the key id appended."""
    named: Dict[str, KeyFile] = {}
    seen = set()
    for keyfile in sorted(keys, key=lambda k: (k.key.fingerprint, k.url)):
        if keyfile.key.fingerprint in seen:
            continue
        seen.add(keyfile.key.fingerprint)
        base = keyfile.url.rstrip("/").rsplit("/", 1)[-1]
        if not re.match(r"^RPM-GPG-KEY-[A-Za-z0-9_.-]+$", base):
            word = re.split(r"[^A-Za-z0-9_.-]+", keyfile.key.name.strip())[0] or "vendor"
            base = f"RPM-GPG-KEY-{word}"
        if base in named:
            base = f"{base}-{keyfile.key.key_id}"
        named[base] = keyfile
    return dict(sorted(named.items()))


def _file_name(package: Package) -> str:
    name = package.location.rsplit("/", 1)[-1]
    if not _SAFE_FILE.match(name) or name.startswith("."):
        raise RepodataError(f"{package.nevra}: unsafe package file name {name!r} in repodata")
    return name


def _relocated(package: Package, name: str) -> bytes:
    """The primary element with `<location>` pointing at Packages/<name> (no xml:base)."""
    found = _LOCATION.findall(package.xml)
    if len(found) != 1:
        raise RepodataError(f"{package.nevra}: expected one <location> in its primary record, "
                            f"found {len(found)}")
    href = quoteattr(f"Packages/{name}").encode()
    return _LOCATION.sub(lambda _m: b"<location href=" + href + b"/>", package.xml)


def _document(kind: str, elements: Sequence[bytes]) -> bytes:
    head, tail = _ROOTS[kind]
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n' + head % len(elements) + b"\n"
            + b"".join(e.rstrip() + b"\n" for e in elements) + tail + b"\n")


def check_primary(xml: bytes) -> int:
    """Parse a primary.xml document and check the fields yum 3 needs in every record; return
    the number of packages. Written metadata is checked like this before anything trusts it."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise RepodataError(f"written primary.xml is not well-formed: {err}") from None
    c = "{%s}" % NS_COMMON
    records = list(root)
    if root.tag != c + "metadata" or int(root.get("packages", "-1")) != len(records):
        raise RepodataError("written primary.xml: wrong root element or packages count")
    for record in records:
        name = record.findtext(c + "name") or "?"
        missing = [f for f in PRIMARY_FIELDS if record.find(c + f) is None]
        checksum = record.find(c + "checksum")
        if checksum is not None and (checksum.get("type") != "sha256"
                                     or checksum.get("pkgid") != "YES"):
            missing.append('checksum type="sha256" pkgid="YES"')
        href = record.find(c + "location")
        if href is not None and not (href.get("href") or "").startswith("Packages/"):
            missing.append("location href=Packages/...")
        if missing:
            raise RepodataError(f"written primary.xml: {name}: missing {', '.join(missing)}")
    return len(records)


def _gzip(data: bytes) -> bytes:
    # mtime 0 and no file name in the gzip header: the same XML gives the same bytes.
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def _repomd(entries: Sequence[Tuple[str, str, bytes, bytes]], timestamp: int) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<repomd xmlns="{NS_REPO}" xmlns:rpm="{NS_RPM}">',
             f"  <revision>{timestamp}</revision>"]
    for kind, href, stored, opened in entries:
        lines += [
            f'  <data type="{kind}">',
            f'    <checksum type="sha256">{hashlib.sha256(stored).hexdigest()}</checksum>',
            f'    <open-checksum type="sha256">{hashlib.sha256(opened).hexdigest()}'
            "</open-checksum>",
            f"    <location href={quoteattr(href)}/>",
            f"    <timestamp>{timestamp}</timestamp>",
            f"    <size>{len(stored)}</size>",
            f"    <open-size>{len(opened)}</open-size>",
            "  </data>",
        ]
    return ("\n".join(lines + ["</repomd>"]) + "\n").encode()


def write_repo(out: Path, packages: Iterable[Package], rpm_paths: Mapping[str, Path],
               filelists: Mapping[str, bytes], other: Mapping[str, bytes],
               keys: Iterable[KeyFile], timestamp: Optional[int] = None) -> WrittenRepo:
    """Write `out/Packages/*.rpm` (hard-linked or copied from `rpm_paths`, by sha256),
    `out/repodata/` and the key files into a folder that must not exist yet or be empty.
    `timestamp` defaults to SOURCE_DATE_EPOCH. Every package needs its filelists and other
    element (by pkgid)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out}: already exists and is not empty")
    stamp = source_date_epoch() if timestamp is None else int(timestamp)
    chosen: Dict[str, Package] = {}
    for package in packages:
        name = _file_name(package)
        previous = chosen.setdefault(name, package)
        if previous.pkgid != package.pkgid:
            raise RepodataError(f"two different packages are both named {name} "
                                f"(from {previous.repo} and {package.repo})")
    ordered = [chosen[name] for name in sorted(chosen)]
    lacking = [f"{p.nevra}: no {what} record" for p in ordered
               for what, table in (("filelists", filelists), ("other", other))
               if p.pkgid not in table]
    lacking += [f"{p.nevra}: not downloaded" for p in ordered if p.pkgid not in rpm_paths]
    if lacking:
        raise RepodataError("cannot write the bundle repo:\n  " + "\n  ".join(lacking))

    (out / "Packages").mkdir(parents=True, exist_ok=True)
    written, sums = [], []
    for name, package in zip(sorted(chosen), ordered):
        place(rpm_paths[package.pkgid], out / "Packages" / name)
        written.append(f"Packages/{name}")
        sums.append(package.sha256)
    docs = {
        "primary": _document("primary", [_relocated(p, _file_name(p)) for p in ordered]),
        "filelists": _document("filelists", [filelists[p.pkgid] for p in ordered]),
        "other": _document("other", [other[p.pkgid] for p in ordered]),
    }
    check_primary(docs["primary"])
    (out / "repodata").mkdir()
    entries = []
    for kind, xml in docs.items():
        stored = _gzip(xml)
        href = f"repodata/{hashlib.sha256(stored).hexdigest()}-{kind}.xml.gz"
        (out / href).write_bytes(stored)
        entries.append((kind, href, stored, xml))
    (out / "repodata" / "repomd.xml").write_bytes(_repomd(entries, stamp))
    names = key_file_names(keys)
    for name, keyfile in names.items():
        (out / name).write_bytes(keyfile.data)
    metadata = ["repodata/repomd.xml"] + [href for _, href, _, _ in entries]
    return WrittenRepo(tuple(written), tuple(sorted(metadata)), tuple(names), tuple(sums))
