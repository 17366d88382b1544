"""primary.xml's fast reader (patterns over createrepo's layout) gives exactly the Package records
ElementTree gives, and hands every record it is not sure of to ElementTree."""

import io

import pytest

import builder.rpm.metadata as rpmmd
from builder.rpm.metadata import Dep, RepodataError, iter_packages
from builder.rpm.vercmp import EVR

ROOT = (b'<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/'
        b'common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="9">\n')
HEAD = ('<package type="rpm">\n  <name>{name}</name>\n  <arch>x86_64</arch>\n'
        '  <version epoch="{epoch}" ver="1.0" rel="1.el7"/>\n'
        '  <checksum type="sha256" pkgid="YES">{sha}</checksum>\n'
        '  <summary>s</summary>\n  <description>d &lt;b&gt;</description>\n'
        '  <time file="1" build="1"/>\n  <size package="42" installed="1" archive="1"/>\n')
STANDARD = HEAD + (
    '  <location xml:base="https://mirror.invalid/el7" href="Packages/{name}.rpm"/>\n'
    '  <format>\n    <rpm:license>GPLv2</rpm:license>\n'
    '    <rpm:sourcerpm>{name}-1.0-1.el7.src.rpm</rpm:sourcerpm>\n'
    '    <rpm:provides>\n      <rpm:entry name="{name}" flags="EQ" epoch="2" ver="1.0" '
    'rel="1.el7"/>\n      <rpm:entry name="lib{name}.so.1()(64bit)"/>\n    </rpm:provides>\n'
    '    <rpm:requires>\n      <rpm:entry name="/bin/sh" pre="1"/>\n'
    '      <rpm:entry name="glibc" flags="GE" epoch="0" ver="2.17"/>\n'
    '      <rpm:entry name="odd" flags="LT" ver="" rel=""/>\n    </rpm:requires>\n'
    '    <rpm:obsoletes><rpm:entry name="old-{name}" flags="LE" epoch="0" ver="0.9" '
    'rel="1"/></rpm:obsoletes>\n'
    '    <rpm:conflicts><rpm:entry name="x"/></rpm:conflicts>\n'
    '    <rpm:recommends><rpm:entry name="ignored"/></rpm:recommends>\n'
    '    <file>/usr/bin/{name}</file>\n    <file type="dir">/etc/{name}.d</file>\n'
    '    <file></file>\n  </format>\n</package>\n')
# Records the fast reader must not trust: each one goes to ElementTree.
UNUSUAL = [
    STANDARD.replace("<name>{name}</name>", "<name>{name}&amp;co</name>"),  # an entity
    STANDARD.replace('<rpm:entry name="x"/>', '<rpm:entry flags="EQ" name="x" ver="1"/>'),
    STANDARD.replace('<rpm:entry name="x"/>', "<rpm:entry name='x'/>"),  # single quotes
    STANDARD.replace("<rpm:requires>", "<rpm:requires><!-- c -->"),
    STANDARD.replace('<rpm:conflicts><rpm:entry name="x"/></rpm:conflicts>', "<rpm:conflicts/>"),
    STANDARD.replace("<rpm:sourcerpm>{name}-1.0-1.el7.src.rpm</rpm:sourcerpm>",
                     "<rpm:sourcerpm/>"),
    STANDARD.replace('<file type="dir">', '<file type="dir" x="1">'),
    STANDARD.replace('pkgid="YES"', 'pkgid="YES" x="1"'),
    STANDARD.replace("</rpm:requires>", '<rpm:entry name="tab\tin"/></rpm:requires>'),
    # a section inside CDATA, a processing instruction, `rpm:` bound to another namespace
    STANDARD.replace("<summary>s</summary>", "<summary><![CDATA[<rpm:requires><rpm:entry "
                     'name="fake"/></rpm:requires>]]></summary>'),
    STANDARD.replace("<rpm:license>", "<?pi x?><rpm:license>"),
    STANDARD.replace("<format>", '<format xmlns:rpm="urn:other">'),
]


def document(templates):
    body = "".join(t.format(name=f"p{n}", epoch=n % 3, sha=f"{n:064X}")
                   for n, t in enumerate(templates))
    return ROOT + body.encode() + b"</metadata>\n"


def read(data, fast=True, monkeypatch=None):
    if not fast:
        monkeypatch.setattr(rpmmd, "_fast_root", lambda root: False)
    return list(iter_packages(io.BytesIO(data), "base"))


@pytest.fixture
def slow_reads(monkeypatch):
    """Count the records ElementTree reads."""
    calls = []
    real = rpmmd._package

    def counting(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(rpmmd, "_package", counting)
    return calls


def test_fast_reader_equals_elementtree_on_createrepo_layout(monkeypatch, slow_reads):
    data = document([STANDARD] * 3)
    fast = read(data)
    assert slow_reads == []  # all three read by the fast reader
    first = fast[0]
    assert first.location == "Packages/p0.rpm" and first.size == 42 and first.sha256 == "0" * 64
    assert first.requires == (Dep("/bin/sh", pre=True), Dep("glibc", "GE", EVR(0, "2.17", None)),
                              Dep("odd", "LT", EVR(0, "", "")))
    assert first.files == ("/usr/bin/p0", "/etc/p0.d")
    assert first.sourcerpm == "p0-1.0-1.el7.src.rpm" and first.xml in data
    assert fast == read(data, fast=False, monkeypatch=monkeypatch)


@pytest.mark.parametrize("template", UNUSUAL, ids=[
    "entity", "attribute-order", "single-quotes", "comment", "empty-section", "empty-sourcerpm",
    "file-attribute", "checksum-attribute", "tab-in-attribute", "cdata", "pi", "rebound-prefix"])
def test_unusual_records_are_read_by_elementtree(monkeypatch, slow_reads, template):
    data = document([STANDARD, template])
    fast = read(data)
    assert len(slow_reads) == 1
    assert fast == read(data, fast=False, monkeypatch=monkeypatch)


def test_fast_reader_still_refuses_malformed_xml():
    data = document([STANDARD]).replace(b"</summary>", b"</summar>")
    with pytest.raises(RepodataError, match="not well-formed"):
        read(data)


def test_an_entry_the_patterns_cannot_read_goes_to_elementtree_in_every_batch(
        monkeypatch, slow_reads):
    """Dependency entries are parsed once per distinct text across batches (512 records each);
    one the patterns cannot read must send every record holding it to ElementTree, in later
    batches too, never a record with a missing dependency."""
    odd = next(t for t in UNUSUAL if "tab\tin" in t)  # a tab in an attribute value
    data = document([odd] + [STANDARD] * 512 + [odd])
    fast = read(data)
    assert len(slow_reads) == 2
    assert fast == read(data, fast=False, monkeypatch=monkeypatch)
    assert all(None not in p.requires for p in fast)


def test_records_read_are_not_left_frozen_and_others_frozen_objects_stay_frozen():
    """read_packages hands what it made to the oldest generation (gc.freeze + gc.unfreeze):
    nothing may stay frozen, and objects frozen by someone else must not be thawed."""
    import gc

    data = document([STANDARD] * 3)
    assert gc.get_freeze_count() == 0
    rpmmd.read_packages(io.BytesIO(data), "base")
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        rpmmd.read_packages(io.BytesIO(data), "base")
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
