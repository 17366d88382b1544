"""Small hand-written yum repositories for repodata and resolver tests.

    repo = write_repo(tmp_path / "base", [
        pkg("bash", "4.2-1", requires=["glibc >= 2.17"], files=["/bin/sh"]),
        pkg("glibc", "2.17-1", arch="i686"),
    ], comps={"core": {"mandatory": ["bash"]}})
    loaded = load(repo)           # builder.rpm.repodata.Repo over file://

`pkg` takes rpm dependency strings ("name", "name >= [epoch:]version[-release]"; a "pre:" prefix
marks Requires(pre)); `files` go to primary.xml, `more_files` only to filelists.xml.
"""

import gzip
import hashlib
import lzma
from pathlib import Path
from typing import Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

import requests
import yaml

from builder.inputs.mirrors import YumRepo
from builder.rpm.repodata import load_repo
from builder.rpm.vercmp import parse_evr

OPS = {"<": "LT", ">": "GT", "=": "EQ", "<=": "LE", ">=": "GE"}


def pkg(name: str, evr: str, arch: str = "x86_64", *, requires=(), provides=(), obsoletes=(),
        conflicts=(), files=(), more_files=(), sourcerpm: str = "") -> dict:
    return {"name": name, "evr": evr, "arch": arch, "requires": list(requires),
            "provides": list(provides), "obsoletes": list(obsoletes),
            "conflicts": list(conflicts), "files": list(files), "more_files": list(more_files),
            "sourcerpm": sourcerpm or f"{name}-{evr.split(':')[-1]}.src.rpm"}


def _entry(text: str) -> str:
    pre = text.startswith("pre:")
    text = text[4:] if pre else text
    parts = text.split()
    attrs = f"name={quoteattr(parts[0])}"
    if len(parts) == 3:
        evr = parse_evr(parts[2])
        attrs += f' flags="{OPS[parts[1]]}" epoch="{evr.epoch}" ver={quoteattr(evr.version)}'
        if evr.release is not None:
            attrs += f" rel={quoteattr(evr.release)}"
    if pre:
        attrs += ' pre="1"'
    return f"      <rpm:entry {attrs}/>\n"


def _checksum(spec: dict) -> str:
    return hashlib.sha256(f"{spec['name']}-{spec['evr']}.{spec['arch']}".encode()).hexdigest()


def primary_xml(specs: List[dict], checksum_type: str = "sha256", drop: str = "") -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/'
           'metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" '
           f'packages="{len(specs)}">\n']
    for s in specs:
        evr = parse_evr(s["evr"])
        fields = {
            "name": f"  <name>{escape(s['name'])}</name>\n",
            "arch": f"  <arch>{s['arch']}</arch>\n",
            "version": f'  <version epoch="{evr.epoch}" ver="{evr.version}" '
                       f'rel="{evr.release}"/>\n',
            "checksum": f'  <checksum type="{checksum_type}" pkgid="YES">'
                        f"{_checksum(s)}</checksum>\n",
            "location": f'  <location href="Packages/{s["name"]}-{evr.version}-{evr.release}.'
                        f'{s["arch"]}.rpm"/>\n',
            "size": '  <size package="1234" installed="10" archive="20"/>\n',
        }
        out.append('<package type="rpm">\n')
        out.extend(v for k, v in fields.items() if k != drop)
        out.append("  <summary>test &amp; fixture</summary>\n  <format>\n")
        out.append(f"    <rpm:sourcerpm>{s['sourcerpm']}</rpm:sourcerpm>\n")
        isa = {"x86_64": "(x86-64)", "aarch64": "(aarch-64)", "i686": ""}.get(s["arch"], "")
        if isa:  # rpmbuild adds name(isa) = EVR; `name = EVR` is left to the resolver to add
            s = dict(s, provides=[f"{s['name']}{isa} = {s['evr']}"] + s["provides"])
        for kind in ("provides", "requires", "conflicts", "obsoletes"):
            if s[kind]:
                out.append(f"    <rpm:{kind}>\n")
                out.extend(_entry(t) for t in s[kind])
                out.append(f"    </rpm:{kind}>\n")
        out.extend(f"    <file>{escape(f)}</file>\n" for f in s["files"])
        out.append("  </format>\n</package>\n")
    out.append("</metadata>\n")
    return "".join(out).encode()


def filelists_xml(specs: List[dict]) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<filelists xmlns="http://linux.duke.edu/'
           f'metadata/filelists" packages="{len(specs)}">\n']
    for s in specs:
        evr = parse_evr(s["evr"])
        out.append(f'<package pkgid="{_checksum(s)}" name="{s["name"]}" arch="{s["arch"]}">\n'
                   f'  <version epoch="{evr.epoch}" ver="{evr.version}" rel="{evr.release}"/>\n')
        out.extend(f"  <file>{escape(f)}</file>\n" for f in s["files"] + s["more_files"])
        out.append("</package>\n")
    return ("".join(out) + "</filelists>\n").encode()


def other_xml(specs: List[dict]) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<otherdata xmlns="http://linux.duke.edu/'
           f'metadata/other" packages="{len(specs)}">\n']
    for s in specs:
        out.append(f'<package pkgid="{_checksum(s)}" name="{s["name"]}" arch="{s["arch"]}">\n'
                   f'  <changelog author="t" date="1">- {escape(s["name"])}</changelog>\n'
                   "</package>\n")
    return ("".join(out) + "</otherdata>\n").encode()


def comps_xml(groups: Dict[str, Dict[str, List[str]]]) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<comps>\n']
    for gid, kinds in groups.items():
        out.append(f"  <group>\n    <id>{gid}</id>\n    <name>{gid.title()}</name>\n"
                   "    <packagelist>\n")
        for kind, names in kinds.items():
            out.extend(f'      <packagereq type="{kind}">{n}</packagereq>\n' for n in names)
        out.append("    </packagelist>\n  </group>\n")
    return ("".join(out) + "</comps>\n").encode()


def modules_yaml(streams: List[dict], defaults: Dict[str, str]) -> bytes:
    """A modules.yaml: modulemd v2 documents ({"name", "stream", "artifacts": [nevra, ...],
    optional "version", "context", "platform" (el8), "requires": {module: [streams]}}) and
    modulemd-defaults."""
    docs = []
    for s in streams:
        docs.append({"document": "modulemd", "version": 2, "data": {
            "name": s["name"], "stream": s["stream"], "version": s.get("version", 8050020211112),
            "context": s.get("context", "f8e95b4e"), "arch": "x86_64",
            "summary": f"{s['name']} for tests", "description": "test module",
            "license": {"module": ["MIT"]},
            "dependencies": [{"requires": dict({"platform": [s.get("platform", "el8")]},
                                               **s.get("requires", {}))}],
            "artifacts": {"rpms": list(s["artifacts"])}}})
    for module, stream in defaults.items():
        docs.append({"document": "modulemd-defaults", "version": 1,
                     "data": {"module": module, "stream": stream}})
    return yaml.safe_dump_all(docs, explicit_start=True, sort_keys=False).encode() + b"...\n"


def write_repo(root: Path, specs: List[dict], *, comps: Optional[dict] = None,
               comps_gz: bool = False, checksum_type: str = "sha256", drop: str = "",
               corrupt: str = "", modules: Optional[bytes] = None) -> Path:
    """Write repodata/ under `root`; `corrupt` names a metadata type whose file is altered
    after repomd.xml was written ("primary", or "primary-open" for a wrong open-checksum)."""
    data = root / "repodata"
    data.mkdir(parents=True, exist_ok=True)
    files = {"primary": primary_xml(specs, checksum_type, drop),
             "filelists": filelists_xml(specs), "other": other_xml(specs)}
    entries = []
    for kind, xml in files.items():
        stored = gzip.compress(xml, mtime=0)
        digest = hashlib.sha256(stored).hexdigest()
        open_digest = hashlib.sha256(xml).hexdigest()
        if corrupt == f"{kind}-open":
            open_digest = "0" * 64
        href = f"repodata/{digest}-{kind}.xml.gz"
        (root / href).write_bytes(stored + (b"x" if corrupt == kind else b""))
        entries.append(f'  <data type="{kind}">\n    <checksum type="sha256">{digest}</checksum>\n'
                       f'    <open-checksum type="sha256">{open_digest}</open-checksum>\n'
                       f'    <location href="{href}"/>\n    <size>{len(stored)}</size>\n'
                       "  </data>\n")
    if modules is not None:
        stored = lzma.compress(modules)
        digest = hashlib.sha256(stored).hexdigest()
        href = f"repodata/{digest}-modules.yaml.xz"
        (root / href).write_bytes(stored)
        entries.append(f'  <data type="modules">\n    <checksum type="sha256">{digest}</checksum>'
                       f'\n    <location href="{href}"/>\n  </data>\n')
    if comps is not None:
        xml = comps_xml(comps)
        stored = gzip.compress(xml, mtime=0) if comps_gz else xml
        digest = hashlib.sha256(stored).hexdigest()
        href = f"repodata/{digest}-comps.xml" + (".gz" if comps_gz else "")
        (root / href).write_bytes(stored)
        entries.append(f'  <data type="{"group_gz" if comps_gz else "group"}">\n'
                       f'    <checksum type="sha256">{digest}</checksum>\n'
                       f'    <location href="{href}"/>\n  </data>\n')
    (data / "repomd.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/'
        'repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n  <revision>1</revision>\n'
        + "".join(entries) + "</repomd>\n")
    return root


def yum_repo(root: Path, repo_id: Optional[str] = None, priority: Optional[int] = None):
    return YumRepo(repo_id or root.name, root.resolve().as_uri() + "/", (), priority)


def load(root: Path, repo_id: Optional[str] = None, priority: Optional[int] = None):
    return load_repo(yum_repo(root, repo_id, priority), requests.Session())


def repos(tmp_path: Path, layout: Dict[str, List[dict]], priorities=None, comps=None,
          modules=None):
    """Several repos at once: {"base": [pkg(...)], "updates": [...]} -> [Repo, ...];
    `modules` maps a repo id to its modules.yaml bytes."""
    priorities = priorities or {}
    out = []
    for rid, specs in layout.items():
        root = write_repo(tmp_path / rid, specs, comps=(comps or {}).get(rid),
                          modules=(modules or {}).get(rid))
        out.append(load(root, rid, priorities.get(rid)))
    return out
