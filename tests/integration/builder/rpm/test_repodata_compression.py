"""The builder reads createrepo_c's real output in every compression EL mirrors serve: gzip
(EL7/8), xz (EL8/9 modules), bzip2 (old sqlite), zstd (createrepo_c >= 1.0's default and
CentOS Stream 9's comps) and refuses a zstd file whose bytes do not match repomd.xml."""

import hashlib
import pathlib

import pytest

from builder.rpm.repodata import MetadataChecksumError, RepodataError
from installer.format.errors import ExitCode
from tests.rpmrepos import load
from tests.tinyrpms import build_rpm, createrepo, repomd_hrefs

pytestmark = pytest.mark.integration

COMPS = b"""<?xml version="1.0" encoding="UTF-8"?>
<comps><group><id>core</id><name>Core</name><packagelist>
<packagereq type="mandatory">bash</packagereq></packagelist></group></comps>
"""
SUFFIX = {"gz": ".gz", "xz": ".xz", "bz2": ".bz2", "zstd": ".zst"}


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    out = tmp_path_factory.mktemp("rpms")
    build_rpm(out, "bash", "4.4.20-2.el8")
    build_rpm(out, "runc", "1:1.0.2-1.el8", requires=["bash"])
    return out


def _repo(rpms: pathlib.Path, tmp: pathlib.Path, compress: str) -> pathlib.Path:
    repo = tmp / f"appstream-{compress}"
    repo.mkdir()
    for rpm in rpms.glob("*.rpm"):
        (repo / rpm.name).write_bytes(rpm.read_bytes())
    (tmp / "comps.xml").write_bytes(COMPS)
    return createrepo(repo, compress=compress, groupfile=tmp / "comps.xml")


@pytest.mark.parametrize("compress", ["gz", "xz", "bz2", "zstd"])
def test_createrepo_c_output_is_read_in_every_compression(rpms, tmp_path, compress):
    repo_dir = _repo(rpms, tmp_path, compress)
    hrefs = repomd_hrefs(repo_dir)
    assert hrefs["primary"].endswith(".xml" + SUFFIX[compress])  # the real tool wrote that
    repo = load(repo_dir)
    assert sorted(p.nevra for p in repo.packages) == [
        "bash-4.4.20-2.el8.noarch", "runc-1:1.0.2-1.el8.noarch"]
    runc = next(p for p in repo.packages if p.name == "runc")
    assert runc.requires[0].name == "bash"
    assert runc.sha256 in repo.files()  # filelists, same compression
    assert repo.groups()["core"].mandatory == ("bash",)


def test_compressed_only_comps_is_read(rpms, tmp_path):
    """createrepo_c >= 1.0 publishes comps compressed only, under the plain `group` type (the
    Stream 9 shape, `comps-BaseOS.x86_64.xml.zst`)."""
    repo_dir = _repo(rpms, tmp_path, "zstd")
    hrefs = repomd_hrefs(repo_dir)
    assert hrefs["group"].endswith("comps.xml.zst") and "group_gz" not in hrefs
    assert load(repo_dir).groups()["core"].mandatory == ("bash",)


def test_zstd_metadata_with_a_wrong_checksum_names_repo_and_file(rpms, tmp_path):
    repo_dir = _repo(rpms, tmp_path, "zstd")
    href = repomd_hrefs(repo_dir)["primary"]
    stored = repo_dir / href
    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(MetadataChecksumError) as err:
        load(repo_dir, "appstream")
    message = err.value.message
    assert message.startswith(f"appstream: {href}: sha256 checksum mismatch")
    assert hashlib.sha256(stored.read_bytes()).hexdigest() in message
    assert err.value.exit_code == ExitCode.VERIFY_FAILED


def test_zstd_bytes_that_do_not_decode_are_a_clear_error(rpms, tmp_path):
    """A file repomd vouches for that is not zstd at all (a mirror's misconfigured rewrite)."""
    repo_dir = _repo(rpms, tmp_path, "zstd")
    hrefs = repomd_hrefs(repo_dir)
    repomd = repo_dir / "repodata" / "repomd.xml"
    stored = repo_dir / hrefs["filelists"]
    garbage = b"not zstd at all"
    old, new = hashlib.sha256(stored.read_bytes()).hexdigest(), hashlib.sha256(garbage).hexdigest()
    stored.unlink()
    (repo_dir / hrefs["filelists"].replace(old, new)).write_bytes(garbage)
    repomd.write_text(repomd.read_text().replace(old, new))
    repo = load(repo_dir, "appstream")
    with pytest.raises(RepodataError, match=r"appstream: .*filelists\.xml\.zst: cannot decompress"):
        repo.files()
