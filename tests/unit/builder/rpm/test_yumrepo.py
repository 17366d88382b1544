"""The repodata rules CentOS 7's yum 3 depends on, checked on what builder.rpm.yumrepo writes:
gzip-compressed XML, SHA-256 checksums that match, the required primary fields, hrefs into
Packages/, and byte-for-byte determinism."""

import gzip
import hashlib
import io
import xml.etree.ElementTree as ET

import pytest

from builder.rpm.metadata import NS_COMMON, NS_RPM, RepodataError, iter_packages
from builder.rpm.openpgp import PublicKey
from builder.rpm.packages import KeyFile
from builder.rpm.yumrepo import NS_REPO, check_primary, key_file_names, write_repo

R = "{%s}" % NS_REPO
C = "{%s}" % NS_COMMON

PRIMARY = """<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="{c}" xmlns:rpm="{r}" packages="2">
<package type="rpm">
  <name>socat</name><arch>x86_64</arch>
  <version epoch="0" ver="1.7.3.2" rel="2.el7"/>
  <checksum type="sha256" pkgid="YES">{a}</checksum>
  <summary>Bidirectional data relay</summary><description>d</description>
  <packager>CentOS</packager><url>http://x</url>
  <time file="1" build="1"/><size package="5" installed="0" archive="0"/>
  <location xml:base="http://mirror.example/centos/7/os/x86_64/"
    href="Packages/socat-1.7.3.2-2.el7.x86_64.rpm"/>
  <format><rpm:license>GPLv2</rpm:license>
    <rpm:provides><rpm:entry name="socat" flags="EQ" epoch="0" ver="1.7.3.2" rel="2.el7"/>
    </rpm:provides>
    <file>/usr/bin/socat</file></format>
</package>
<package type="rpm">
  <name>haproxy</name><arch>x86_64</arch>
  <version epoch="0" ver="1.5.18" rel="9.el7"/>
  <checksum type="sha256" pkgid="YES">{b}</checksum>
  <summary>TCP/HTTP proxy &amp; load balancer</summary><description>d</description>
  <packager>CentOS</packager><url>http://x</url>
  <time file="1" build="1"/><size package="6" installed="0" archive="0"/>
  <location href="x86_64/h/haproxy-1.5.18-9.el7.x86_64.rpm"/>
  <format><rpm:license>GPLv2</rpm:license>
    <rpm:requires><rpm:entry name="shadow-utils" pre="1"/></rpm:requires></format>
</package>
</metadata>
"""


def fixture_packages(tmp_path, primary=PRIMARY):
    blobs = {"socat": b"socat", "haproxy": b"haprox"}
    sums = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    text = primary.format(c=NS_COMMON, r=NS_RPM, a=sums["socat"], b=sums["haproxy"])
    packages = list(iter_packages(io.BytesIO(text.encode()), "base"))
    paths = {}
    for name, data in blobs.items():
        path = tmp_path / "cache" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[sums[name]] = path
    filelists = {p.pkgid: (f'<package pkgid="{p.pkgid}" name="{p.name}" arch="x86_64">'
                           f'<file>/usr/bin/{p.name}</file></package>').encode()
                 for p in packages}
    other = {p.pkgid: (f'<package pkgid="{p.pkgid}" name="{p.name}" arch="x86_64">'
                       '<changelog author="a" date="1">- x</changelog></package>').encode()
             for p in packages}
    return packages, paths, filelists, other


def key(name, fpr):
    return KeyFile("base", f"https://example.invalid/{name}", f"armored {fpr}".encode(),
                   PublicKey(fpr, 0, (f"{name} <k@example.invalid>",), ()))


@pytest.fixture
def written(tmp_path):
    packages, paths, filelists, other = fixture_packages(tmp_path)
    keys = [key("RPM-GPG-KEY-CentOS-7", "A" * 40), key("gpg", "B" * 40)]
    result = write_repo(tmp_path / "repo", packages, paths, filelists, other, keys,
                        timestamp=1700000000)
    return tmp_path / "repo", result


def repomd(repo):
    root = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    return {d.get("type"): d for d in root.iter(R + "data")}


def test_metadata_is_gzip_xml_with_matching_sha256(written):
    repo, result = written
    entries = repomd(repo)
    assert set(entries) == {"primary", "filelists", "other"}  # no sqlite, no zstd, no comps
    for kind, data in entries.items():
        href = data.find(R + "location").get("href")
        assert href.startswith("repodata/") and href.endswith(f"-{kind}.xml.gz")
        stored = (repo / href).read_bytes()
        assert stored[:2] == b"\x1f\x8b"  # gzip
        opened = gzip.decompress(stored)
        for tag, blob in (("checksum", stored), ("open-checksum", opened)):
            el = data.find(R + tag)
            assert el.get("type") == "sha256"
            assert el.text == hashlib.sha256(blob).hexdigest()
        assert int(data.findtext(R + "size")) == len(stored)
        assert int(data.findtext(R + "open-size")) == len(opened)
        assert data.findtext(R + "timestamp") == "1700000000"
        assert href in result.metadata
    root = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    assert root.findtext(R + "revision") == "1700000000"


def test_primary_has_the_fields_yum3_reads_and_hrefs_into_packages(written):
    repo, result = written
    href = repomd(repo)["primary"].find(R + "location").get("href")
    xml = gzip.decompress((repo / href).read_bytes())
    assert check_primary(xml) == 2
    root = ET.fromstring(xml)
    locations = [p.find(C + "location").attrib for p in root]
    # Sorted by file name; xml:base dropped, so yum looks in this repo, not the old mirror.
    assert locations == [{"href": "Packages/haproxy-1.5.18-9.el7.x86_64.rpm"},
                         {"href": "Packages/socat-1.7.3.2-2.el7.x86_64.rpm"}]
    assert result.packages == ("Packages/haproxy-1.5.18-9.el7.x86_64.rpm",
                               "Packages/socat-1.7.3.2-2.el7.x86_64.rpm")
    assert (repo / result.packages[0]).read_bytes() == b"haprox"
    summary = root[0].findtext(C + "summary")
    assert summary == "TCP/HTTP proxy & load balancer"  # upstream bytes kept, escapes intact
    for kind in ("filelists", "other"):
        href = repomd(repo)[kind].find(R + "location").get("href")
        doc = ET.fromstring(gzip.decompress((repo / href).read_bytes()))
        assert doc.get("packages") == "2" and len(doc) == 2


def test_keys_are_written_with_vendor_names(written):
    repo, result = written
    assert result.keys == ("RPM-GPG-KEY-CentOS-7", "RPM-GPG-KEY-gpg")
    assert (repo / "RPM-GPG-KEY-CentOS-7").read_bytes() == b"armored " + b"A" * 40


def test_key_names_come_from_the_user_id_and_never_clash():
    docker = KeyFile("docker-ce-stable", "https://download.docker.com/linux/centos/gpg", b"",
                     PublicKey("C" * 40, 0, ("Docker Release (CE rpm) <docker@docker.com>",), ()))
    other = docker._replace(key=docker.key._replace(fingerprint="D" * 40))
    names = key_file_names([docker, other, docker])
    assert list(names) == ["RPM-GPG-KEY-Docker", "RPM-GPG-KEY-Docker-DDDDDDDDDDDDDDDD"]


def test_output_is_deterministic(tmp_path):
    outputs = []
    for run in ("a", "b"):
        packages, paths, filelists, other = fixture_packages(tmp_path / run)
        write_repo(tmp_path / run / "repo", list(reversed(packages)) if run == "b" else packages,
                   paths, filelists, other, [], timestamp=1700000000)
        outputs.append({p.relative_to(tmp_path / run / "repo"): p.read_bytes()
                        for p in (tmp_path / run / "repo").rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]


def test_missing_filelists_record_is_an_error_naming_the_package(tmp_path):
    packages, paths, filelists, other = fixture_packages(tmp_path)
    del filelists[packages[0].pkgid]
    with pytest.raises(RepodataError, match="socat-1.7.3.2-2.el7.x86_64: no filelists record"):
        write_repo(tmp_path / "repo", packages, paths, filelists, other, [], timestamp=0)


def test_check_primary_rejects_records_yum3_cannot_use(tmp_path):
    packages, *_ = fixture_packages(tmp_path)
    body = packages[0].xml.replace(b"<summary>Bidirectional data relay</summary>", b"")
    doc = (f'<metadata xmlns="{NS_COMMON}" xmlns:rpm="{NS_RPM}" packages="1">'.encode()
           + body + b"</metadata>")
    with pytest.raises(RepodataError, match="socat: missing summary"):
        check_primary(doc)
    sha1 = packages[0].xml.replace(b'type="sha256"', b'type="sha"')
    with pytest.raises(RepodataError, match="sha256"):
        check_primary(f'<metadata xmlns="{NS_COMMON}" xmlns:rpm="{NS_RPM}" packages="1">'
                      .encode() + sha1 + b"</metadata>")


def test_unsafe_file_names_are_refused(tmp_path):
    evil = PRIMARY.replace("Packages/socat-1.7.3.2-2.el7.x86_64.rpm", "Packages/..rpm")
    packages, paths, filelists, other = fixture_packages(tmp_path, evil)
    with pytest.raises(RepodataError, match="unsafe package file name"):
        write_repo(tmp_path / "repo", packages, paths, filelists, other, [], timestamp=0)


def test_rpms_are_hard_linked_from_the_cache_not_copied(tmp_path):
    packages, paths, filelists, other = fixture_packages(tmp_path)
    result = write_repo(tmp_path / "repo", packages, paths, filelists, other, [], timestamp=0)
    assert sorted(result.package_sha256) == sorted(paths)
    for relpath, sha in zip(result.packages, result.package_sha256):
        assert (tmp_path / "repo" / relpath).stat().st_ino == paths[sha].stat().st_ino, relpath
