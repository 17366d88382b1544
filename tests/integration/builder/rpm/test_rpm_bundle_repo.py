"""Acceptance for the bundle's repo/: resolve against @core, download (digest and signature
checked), write repo/, then `dnf --installroot` on a root holding only @core installs every
requested package with ONLY the bundle repo enabled and gpgcheck=1 using the bundled keys.
A corrupted or badly signed RPM from the mirror is refused, named, and never cached."""

import shutil
import subprocess

import pytest
import requests
from lab.dnfroot import dnf, installed, write_config
from lab.tools import require_tool

from builder.cache import Cache
from builder.inputs.mirrors import GpgKey as PinnedKey
from builder.inputs.mirrors import YumRepo, load_preset
from builder.rpm.base import group_base
from builder.rpm.openpgp import KeyPinError
from builder.rpm.packages import RpmFetchError, RpmFile, fetch_keys, fetch_rpms, keyrings
from builder.rpm.repodata import load_repo, load_repos
from builder.rpm.resolve import resolve
from builder.rpm.yumrepo import gather_xml, write_repo
from installer.format.errors import ExitCode
from tests.integration.rpmsigning import GpgKey, copy_repo, createrepo, serve

pytestmark = pytest.mark.integration

REPO_IDS = ["base", "updates", "extras", "docker-ce-stable"]
PRIMARY = ("docker-ce-20.10.24 docker-ce-cli-20.10.24 containerd.io keepalived haproxy "
           "conntrack-tools socat ipvsadm ipset ebtables chrony python3").split()
SETS = {
    "primary": PRIMARY,
    # Older Docker, pinned by version, and the os repo's python3 pinned by version-release.
    "older-docker": ["docker-ce-20.10.23", "docker-ce-cli-20.10.23",
                     "docker-ce-rootless-extras-20.10.23", "containerd.io-1.6.31",
                     "python3-3.6.8-18.el7"],
    # containerd-only hosts: pins with release, and a file provide.
    "containerd": ["containerd.io-1.6.33-3.1.el7", "keepalived-1.3.5", "haproxy-1.5.18-9.el7",
                   "socat", "conntrack-tools", "/usr/bin/python3"],
}
EXPECT = {  # name -> version-release.arch that must be installed
    "primary": {"docker-ce": "20.10.24-3.el7.x86_64", "docker-ce-cli": "20.10.24-3.el7.x86_64",
                "containerd.io": "1.6.33-3.1.el7.x86_64", "python3": "3.6.8-21.el7_9.x86_64"},
    "older-docker": {"docker-ce": "20.10.23-3.el7.x86_64",
                     "docker-ce-cli": "20.10.23-3.el7.x86_64",
                     "containerd.io": "1.6.31-3.1.el7.x86_64",
                     "python3": "3.6.8-18.el7.x86_64"},
    "containerd": {"containerd.io": "1.6.33-3.1.el7.x86_64", "haproxy": "1.5.18-9.el7.x86_64",
                   "python3": "3.6.8-21.el7_9.x86_64"},
}


@pytest.fixture(scope="module")
def world(mirror_world):
    preset = load_preset(mirror_world.preset)
    session = requests.Session()
    repos = load_repos(preset, REPO_IDS, session)
    keys = fetch_keys([preset.repo(r) for r in REPO_IDS], session)
    return preset, session, repos, keys, group_base(repos, "x86_64")


@pytest.fixture(scope="module")
def core_root(world, mirror_world, tmp_path_factory):
    """A root holding only @core, installed from the mirror world with GPG checks on."""
    preset, *_ = world
    tmp = tmp_path_factory.mktemp("core")
    conf, repos_d = write_config(tmp, {
        rid: (preset.repo(rid).baseurl, [k.url for k in preset.repo(rid).gpgkeys])
        for rid in REPO_IDS})
    root = tmp / "root"
    root.mkdir()
    dnf(root, conf, repos_d, "install", "@core")
    return root


def build_repo(world, requests_, out, cache):
    preset, session, repos, keys, base = world
    resolution = resolve(requests_, repos, arch="x86_64", base=base)
    by_id = {r.id: r for r in repos}
    paths = fetch_rpms([RpmFile.of(p, by_id[p.repo]) for p in resolution.packages],
                       keyrings(keys), cache, session)
    filelists, other = gather_xml(resolution.packages, repos)
    return resolution, write_repo(out, resolution.packages, paths, filelists, other, keys,
                                  timestamp=1700000000)


@pytest.mark.parametrize("name", sorted(SETS))
def test_bundle_repo_alone_installs_every_requested_package(world, core_root, tmp_path, name):
    cache = Cache(tmp_path / "cache")
    resolution, written = build_repo(world, SETS[name], tmp_path / "bundle" / "repo", cache)
    repo = tmp_path / "bundle" / "repo"
    assert written.keys == ("RPM-GPG-KEY-CentOS-7", "RPM-GPG-KEY-Docker")
    assert not [p for p in resolution.packages if p.arch == "i686"]
    root = tmp_path / "root"
    shutil.copytree(core_root, root, symlinks=True)
    before = installed(root)
    conf, repos_d = write_config(tmp_path / "dnf", {
        "kubecrate": (repo.as_uri() + "/", [(repo / k).as_uri() for k in written.keys])})
    dnf(root, conf, repos_d, "install", *SETS[name])
    now = installed(root)
    for request in SETS[name]:  # rpm -q takes name[-version[-release]], -qf a path
        query = ["-qf"] if request.startswith("/") else ["-q"]
        assert subprocess.run([require_tool("rpm"), "--root", str(root), *query, request],
                              capture_output=True).returncode == 0, request
    for pkg, vra in EXPECT[name].items():
        assert now[pkg] == [vra], pkg
    shipped = {p.name for p in resolution.packages}
    assert {n for n in now if n not in before and n != "gpg-pubkey"} <= shipped
    assert not shipped & {n for n in before if n not in ("python3", "python3-libs")}
    # A second build from the warm cache writes the same bytes.
    _, again = build_repo(world, SETS[name], tmp_path / "again" / "repo", cache)
    for rel in written.metadata + written.keys:
        assert (tmp_path / "again" / "repo" / rel).read_bytes() == (repo / rel).read_bytes()


def cache_files(cache):
    return sorted(p.name for p in cache.root.rglob("*") if p.is_file())


def test_corrupted_rpm_is_refused_and_not_cached(world, mirror_world, tmp_path):
    _preset, session, repos, keys, base = world
    docker = next(r for r in repos if r.id == "docker-ce-stable")
    rel = "download.docker.com/linux/centos/7/x86_64/stable/"
    victim = next(p for p in docker.packages if p.nevra == "docker-ce-cli-1:20.10.24-3.el7.x86_64")
    cache = Cache(tmp_path / "cache")
    with serve(mirror_world.www, {rel + victim.location: -100}) as url:
        served = YumRepo("docker-ce-stable", f"{url}/{rel}", docker.config.gpgkeys)
        repo = load_repo(served, session)
        resolution = resolve(["docker-ce-20.10.24"], [*repos[:3], repo], base=base)
        by_id = {r.id: r for r in [*repos[:3], repo]}
        files = [RpmFile.of(p, by_id[p.repo]) for p in resolution.packages]
        with pytest.raises(RpmFetchError) as err:
            fetch_rpms(files, keyrings(keys), cache, session)
    assert err.value.exit_code == ExitCode.VERIFY_FAILED
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert "docker-ce-cli-20.10.24-3.el7.x86_64.rpm" in problem and "sha256" in problem
    assert f"{url}/{rel}{victim.location}" in problem
    assert victim.sha256 not in cache_files(cache)
    assert not [n for n in cache_files(cache) if n.startswith(".part")]
    assert len(cache_files(cache)) == len(files) - 1  # the good ones are kept


def test_badly_signed_rpm_is_refused_and_not_cached(world, mirror_world, tmp_path):
    _preset, session, repos, keys, base = world
    rel = "download.docker.com/linux/centos/7/x86_64/stable"
    tree = tmp_path / "www"
    copy = copy_repo(mirror_world.www / rel, tree / rel)
    evil = GpgKey(tmp_path / "gnupg", "Not Docker <evil@example.invalid>")
    try:
        evil.sign([copy / "Packages" / "containerd.io-1.6.33-3.1.el7.x86_64.rpm"])
    finally:
        evil.close()
    createrepo(copy)  # the mirror's metadata agrees with the bad file: only the signature tells
    docker = next(r for r in repos if r.id == "docker-ce-stable")
    cache = Cache(tmp_path / "cache")
    with serve(tree) as url:
        repo = load_repo(YumRepo("docker-ce-stable", f"{url}/{rel}/", docker.config.gpgkeys),
                         session)
        resolution = resolve(["containerd.io", "docker-ce-cli-20.10.24"], [*repos[:3], repo],
                             base=base)
        by_id = {r.id: r for r in [*repos[:3], repo]}
        files = [RpmFile.of(p, by_id[p.repo]) for p in resolution.packages]
        with pytest.raises(RpmFetchError) as err:
            fetch_rpms(files, keyrings(keys), cache, session)
    assert err.value.exit_code == ExitCode.VERIFY_FAILED
    assert len(err.value.problems) == 1, err.value.problems
    problem = err.value.problems[0]
    assert problem.startswith("containerd.io-1.6.33-3.1.el7.x86_64.rpm: ")
    assert f"key id {evil.fingerprint[-16:]}, which is not trusted" in problem
    assert f"{url}/{rel}/Packages/containerd.io-1.6.33-3.1.el7.x86_64.rpm" in problem
    bad = next(p for p in repo.packages if p.name == "containerd.io"
               and p.version == "1.6.33")
    assert bad.sha256 not in cache_files(cache)
    assert not [n for n in cache_files(cache) if n.startswith(".part")]


def test_a_cached_rpm_that_no_longer_verifies_is_dropped(world, tmp_path):
    """A pin that changed (another vendor key) must not let an old cached file through."""
    _preset, session, repos, keys, _base = world
    docker = next(r for r in repos if r.id == "docker-ce-stable")
    pkg = next(p for p in docker.packages if p.name == "containerd.io")
    cache = Cache(tmp_path / "cache")
    fetch_rpms([RpmFile.of(pkg, docker)], keyrings(keys), cache, session)
    assert cache.has(pkg.sha256)
    centos_only = {"docker-ce-stable": keyrings(keys)["base"]}
    with pytest.raises(RpmFetchError, match="not trusted"):
        fetch_rpms([RpmFile.of(pkg, docker)], centos_only, cache, session)
    assert not cache.has(pkg.sha256)


def test_key_pin_mismatch_names_repo_url_and_fingerprints(world):
    preset, session, *_ = world
    docker = preset.repo("docker-ce-stable")
    centos_fpr = preset.repo("base").gpgkeys[0].fingerprint
    wrong = YumRepo(docker.id, docker.baseurl, (PinnedKey(docker.gpgkeys[0].url, centos_fpr),))
    with pytest.raises(KeyPinError) as err:
        fetch_keys([wrong], session)
    message = err.value.message
    assert docker.id in message and docker.gpgkeys[0].url in message
    assert centos_fpr in message and docker.gpgkeys[0].fingerprint in message
