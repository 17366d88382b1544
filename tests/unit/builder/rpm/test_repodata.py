"""Reading yum repodata: checksums, required primary fields, comps, filelists, raw elements."""

import dataclasses
import gzip
import io

import pytest
import requests

from builder.rpm.metadata import Dep, iter_packages
from builder.rpm.repodata import (
    MetadataChecksumError,
    RepodataError,
    load_repo,
    parse_repomd,
)
from builder.rpm.vercmp import EVR
from installer.format.errors import ExitCode
from tests.rpmrepos import load, pkg, primary_xml, write_repo, yum_repo

SPECS = [
    pkg("bash", "4.2.46-34.el7", requires=["pre:filesystem >= 3", "libc.so.6()(64bit)"],
        provides=["/bin/sh"], files=["/bin/bash", "/etc/bashrc"],
        more_files=["/usr/share/doc/bash/README"]),
    pkg("glibc", "2.17-317.el7", arch="i686", provides=["libc.so.6"],
        obsoletes=["glibc-profile < 2.4"], conflicts=["kernel < 2.6.32"]),
    pkg("docker-ce", "3:20.10.24-3.el7"),
]


def test_packages_carry_every_primary_field(tmp_path):
    repo = load(write_repo(tmp_path / "base", SPECS))
    bash, glibc, docker = repo.packages
    assert (bash.name, bash.epoch, bash.version, bash.release, bash.arch, bash.repo) == (
        "bash", 0, "4.2.46", "34.el7", "x86_64", "base")
    assert bash.location == "Packages/bash-4.2.46-34.el7.x86_64.rpm"
    assert len(bash.sha256) == 64 and bash.size == 1234
    assert bash.requires == (Dep("filesystem", "GE", EVR(0, "3", None), pre=True),
                             Dep("libc.so.6()(64bit)"))
    assert bash.requires_pre == (bash.requires[0],)
    assert bash.files == ("/bin/bash", "/etc/bashrc")  # primary's files only
    assert glibc.obsoletes == (Dep("glibc-profile", "LT", EVR(0, "2.4", None)),)
    assert glibc.conflicts[0].name == "kernel"
    assert docker.nevra == "docker-ce-3:20.10.24-3.el7.x86_64"
    assert repo.url(docker) == yum_repo(tmp_path / "base").baseurl + docker.location


def test_raw_package_xml_is_kept_byte_for_byte(tmp_path):
    repo = load(write_repo(tmp_path / "base", SPECS))
    text = primary_xml(SPECS)
    for package in repo.packages:
        assert package.xml.startswith(b'<package type="rpm">')
        assert package.xml.endswith(b"</package>")
        assert package.xml in text
    assert b"test &amp; fixture" in repo.packages[0].xml  # not re-serialised


def test_filelists_are_read_only_when_asked_and_by_pkgid(tmp_path):
    repo = load(write_repo(tmp_path / "base", SPECS))
    assert repo._files is None
    bash = repo.packages[0]
    assert "/usr/share/doc/bash/README" in repo.files()[bash.sha256]
    raw = repo.filelists_xml([bash.sha256])
    assert list(raw) == [bash.sha256]
    assert raw[bash.sha256].startswith(b'<package pkgid="' + bash.sha256.encode())
    assert b"<changelog" in repo.other_xml([bash.sha256])[bash.sha256]


@pytest.mark.parametrize("gz", [False, True])
def test_comps_plain_or_gzip(tmp_path, gz):
    comps = {"core": {"mandatory": ["bash"], "default": ["glibc"], "optional": ["docker-ce"]}}
    repo = load(write_repo(tmp_path / "base", SPECS, comps=comps, comps_gz=gz))
    core = repo.groups()["core"]
    assert (core.mandatory, core.default, core.optional) == (("bash",), ("glibc",),
                                                             ("docker-ce",))


def test_a_repo_without_comps_has_no_groups(tmp_path):
    assert load(write_repo(tmp_path / "base", SPECS)).groups() == {}


def test_checksum_mismatch_names_repo_and_file(tmp_path):
    root = write_repo(tmp_path / "updates", SPECS, corrupt="primary")
    with pytest.raises(MetadataChecksumError) as err:
        load(root)
    assert err.value.message.startswith("updates: repodata/")
    assert "primary.xml.gz" in err.value.message and "sha256 checksum mismatch" in err.value.message
    assert err.value.exit_code == ExitCode.VERIFY_FAILED


def test_open_checksum_mismatch_is_refused(tmp_path):
    root = write_repo(tmp_path / "base", SPECS, corrupt="primary-open")
    with pytest.raises(MetadataChecksumError, match="uncompressed sha256 checksum mismatch"):
        load(root)


@pytest.mark.parametrize("field", ["name", "arch", "version", "checksum", "location", "size"])
def test_required_primary_fields(tmp_path, field):
    root = write_repo(tmp_path / "base", SPECS[:1], drop=field)
    with pytest.raises(RepodataError, match="required field.* missing"):
        load(root)


def test_package_checksums_must_be_sha256(tmp_path):
    root = write_repo(tmp_path / "base", SPECS, checksum_type="sha")
    with pytest.raises(RepodataError, match="needs sha256"):
        load(root)


def test_metadata_is_gzip_as_yum3_reads_it(tmp_path):
    root = write_repo(tmp_path / "base", SPECS)
    repo = load(root)
    for kind in ("primary", "filelists", "other"):
        entry = repo.repomd.files[kind]
        assert entry.href.endswith(".xml.gz") and entry.checksum_type == "sha256"
        gzip.decompress((root / entry.href).read_bytes())


@pytest.mark.parametrize("cut", [40, 400])
def test_truncated_or_broken_primary_is_an_error(cut):
    text = primary_xml(SPECS)
    with pytest.raises(RepodataError, match="truncated|well-formed"):
        list(iter_packages(io.BytesIO(text[:-cut]), "base"))
    with pytest.raises(RepodataError, match="well-formed"):
        list(iter_packages(io.BytesIO(text.replace(b"</name>", b"</nam>", 1)), "base"))


def test_primary_is_parsed_across_chunk_boundaries(monkeypatch):
    monkeypatch.setattr("builder.rpm.metadata.CHUNK", 7)
    packages = list(iter_packages(io.BytesIO(primary_xml(SPECS)), "base"))
    assert [p.name for p in packages] == ["bash", "glibc", "docker-ce"]
    assert all(p.xml in primary_xml(SPECS) for p in packages)


def test_repomd_needs_locations_and_checksums():
    with pytest.raises(RepodataError, match="lacks a location or checksum"):
        parse_repomd(b'<repomd xmlns="http://linux.duke.edu/metadata/repo">'
                     b'<data type="primary"><location href="x"/></data></repomd>', "base")
    with pytest.raises(RepodataError, match="not well-formed"):
        parse_repomd(b"<repomd", "base")


class FakeResponse:
    def __init__(self, status, content=b""):
        self.status_code, self.content = status, content


class FakeSession:
    """Serves a repo written by write_repo over a made-up http:// URL; records every call."""

    def __init__(self, root, statuses=()):
        self.root, self.statuses, self.calls = root, list(statuses), []

    def get(self, url, timeout=None):
        self.calls.append((url, timeout))
        if self.statuses:
            status = self.statuses.pop(0)
            if isinstance(status, Exception):
                raise status
            return FakeResponse(status)
        path = self.root / url.split("/repo/", 1)[1]
        return FakeResponse(200, path.read_bytes()) if path.exists() else FakeResponse(404)


def http_repo(root):
    return dataclasses.replace(yum_repo(root), baseurl="http://mirror.invalid/repo/")


def test_http_fetch_uses_the_session_with_timeouts_and_bounded_retries(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    root = write_repo(tmp_path / "base", SPECS)
    session = FakeSession(root, [503, requests.ConnectionError("reset")])
    repo = load_repo(http_repo(root), session)
    assert len(repo.packages) == 3
    assert all(timeout is not None for _url, timeout in session.calls)
    assert session.calls[0][0] == "http://mirror.invalid/repo/repodata/repomd.xml"
    assert len(session.calls) == 4  # two failures, repomd, primary: nothing else yet

    failing = FakeSession(root, [500] * 10)
    with pytest.raises(RepodataError, match=r"base: repomd.xml: cannot fetch .* \(HTTP 500\)"):
        load_repo(http_repo(root), failing)
    assert len(failing.calls) == 3


def test_http_404_is_not_retried(tmp_path):
    session = FakeSession(tmp_path)
    with pytest.raises(RepodataError, match="HTTP 404"):
        load_repo(http_repo(tmp_path), session)
    assert len(session.calls) == 1
