"""EL8 modularity end to end with the real tools: an AppStream-shaped repo (real modular RPMs
carrying %{modularitylabel}, createrepo_c + modifyrepo_c modules.yaml with a default and a
non-default container-tools stream), resolved by the builder through its module filter, written
as the bundle repo, and installed by real `dnf --installroot` through the repo file the
installer writes. Without `module_hotfixes=1` dnf refuses the bundle's modular RPMs."""

import pytest
import requests
from lab.dnfroot import dnf, installed, repoquery

from builder.cache import Cache
from builder.inputs.mirrors import GpgKey as PinnedKey
from builder.inputs.mirrors import YumRepo
from builder.rpm.modules import module_view
from builder.rpm.packages import RpmFile, fetch_keys, fetch_rpms, keyrings
from builder.rpm.repodata import load_repo
from builder.rpm.resolve import resolve
from builder.rpm.yumrepo import gather_xml, write_repo
from installer.render import render
from tests.integration.rpmsigning import GpgKey
from tests.rpmrepos import modules_yaml
from tests.tinyrpms import build_rpm, createrepo

pytestmark = pytest.mark.integration

RHEL8 = "1.module_el8.5.0+911+f19012f9"
DECOY = "1.module_el8.5.0+950+0123abcd"
LABEL = "container-tools:{}:8050020211112:f8e95b4e"
RPMS = [  # name, evr, stream (None: non-modular), requires
    ("container-selinux", f"2:2.167.0-{RHEL8}", "rhel8", ()),
    ("runc", f"1.0.2-{RHEL8}", "rhel8", ()),
    ("container-selinux", f"2:2.229.0-{DECOY}", "4.0", ()),  # the decoy: newer, hidden
    ("runc", f"1:1.1.4-{DECOY}", "4.0", ()),
    ("containerd.io", "1.6.32-3.1.el8", None, ("container-selinux >= 2:2.74", "runc")),
]


def artifact(name: str, evr: str) -> str:
    return f"{name}-{evr if ':' in evr else '0:' + evr}.noarch"


@pytest.fixture(scope="module")
def appstream(tmp_path_factory):
    """A signed modular repo and its pinned key, as the builder's preset would name them."""
    tmp = tmp_path_factory.mktemp("appstream")
    key = GpgKey(tmp / "gnupg", "EL8 test key <el8@kubecrate.invalid>")
    try:
        repo = tmp / "repo"
        rpms = [build_rpm(repo, name, evr, requires=req,
                          modularitylabel=LABEL.format(stream) if stream else "")
                for name, evr, stream, req in RPMS]
        key.sign(rpms, v3=False)
        streams = [{"name": "container-tools", "stream": stream,
                    "artifacts": [artifact(n, e) for n, e, s, _ in RPMS if s == stream]}
                   for stream in ("rhel8", "4.0")]
        (tmp / "modules.yaml").write_bytes(modules_yaml(streams, {"container-tools": "rhel8"}))
        createrepo(repo, modules=tmp / "modules.yaml")
        (tmp / "RPM-GPG-KEY-test").write_bytes(key.armored)
        yield YumRepo("appstream", repo.as_uri() + "/",
                      (PinnedKey((tmp / "RPM-GPG-KEY-test").as_uri(), key.fingerprint),))
    finally:
        key.close()


def bundle_repo(config: YumRepo, requests_, out, cache):
    session = requests.Session()
    view = module_view([load_repo(config, session)])
    view.check_requests(requests_)
    resolution = resolve(requests_, view.repos, arch="x86_64")
    keys = fetch_keys([config], session)
    paths = fetch_rpms([RpmFile.of(p, view.repos[0]) for p in resolution.packages],
                       keyrings(keys), cache, session)
    filelists, other = gather_xml(resolution.packages, view.repos)
    written = write_repo(out, resolution.packages, paths, filelists, other, keys,
                         timestamp=1700000000)
    return resolution, written


def dnf_config(folder, repo, keys, hotfixes: bool):
    """The installer's own kubecrate.repo (enabled) as dnf's only repo."""
    text = render("kubecrate.repo.j2", bundle_name="el8-test", main=[], enabled=1,
                  baseurl=str(repo), gpgkeys=[str(repo / k) for k in keys])
    if not hotfixes:
        assert "module_hotfixes=1\n" in text
        text = text.replace("module_hotfixes=1\n", "")
    repos_d = folder / "repos.d"
    repos_d.mkdir(parents=True)
    (repos_d / "kubecrate.repo").write_text(text)
    conf = folder / "dnf.conf"
    conf.write_text("[main]\ngpgcheck=1\ninstall_weak_deps=False\n"
                    f"reposdir={repos_d}\ncachedir={folder / 'cache'}\nplugins=False\n")
    return conf, repos_d


def test_the_bundle_carries_the_default_stream_and_dnf_installs_it(appstream, tmp_path):
    resolution, written = bundle_repo(appstream, ["containerd.io"], tmp_path / "repo",
                                      Cache(tmp_path / "cache"))
    assert sorted(p.nevra for p in resolution.packages) == [
        f"container-selinux-2:2.167.0-{RHEL8}.noarch", "containerd.io-1.6.32-3.1.el8.noarch",
        f"runc-1.0.2-{RHEL8}.noarch"]
    root = tmp_path / "root"
    root.mkdir()
    conf, repos_d = dnf_config(tmp_path / "dnf", tmp_path / "repo", written.keys, True)
    dnf(root, conf, repos_d, "--releasever=8", "install", "containerd.io")
    got = installed(root)
    assert got["container-selinux"] == [f"2.167.0-{RHEL8}.noarch"]
    assert got["runc"] == [f"1.0.2-{RHEL8}.noarch"]


def test_without_module_hotfixes_dnf_refuses_the_bundles_modular_rpms(appstream, tmp_path):
    _, written = bundle_repo(appstream, ["containerd.io"], tmp_path / "repo",
                             Cache(tmp_path / "cache"))
    root = tmp_path / "root"
    root.mkdir()
    conf, repos_d = dnf_config(tmp_path / "dnf", tmp_path / "repo", written.keys, False)
    proc = dnf(root, conf, repos_d, "--releasever=8", "install", "containerd.io", check=False)
    assert proc.returncode != 0
    assert "No available modular metadata for modular package" in proc.stdout + proc.stderr
    assert "container-selinux" not in installed(root)


@pytest.mark.parametrize("el9_version, expect", [
    (0, ["runc-1.0.0-1.m1.noarch", "runc-1.0.2-1.m2.noarch", "runc-1.0.3-1.m3.noarch"]),
    (3, ["runc-1.2.0-1.el8.noarch"]),
])
def test_versions_and_platform_contexts_as_real_dnf_sees_them(tmp_path, el9_version, expect):
    """Every version and context of the default stream is offered, the non-default stream is
    not; when the stream's newest build needs another platform dnf offers nothing of it and
    the non-modular package reappears. module_view and `dnf repoquery` list the same set."""
    repo = tmp_path / "repo"
    builds = [("rhel8", 1, "c1", "el8", "1.0.0-1.m1"), ("rhel8", 2, "c1", "el8", "1.0.2-1.m2"),
              ("rhel8", el9_version, "c9", "el9", "1.0.3-1.m3"),
              ("4.0", 4, "c1", "el8", "1.1.4-1.m4")]
    for stream, version, context, _, evr in builds:
        build_rpm(repo, "runc", evr, modularitylabel=f"ct:{stream}:{version}:{context}")
    build_rpm(repo, "runc", "1.2.0-1.el8")  # non-modular: shadowed while a stream is active
    build_rpm(repo, "haproxy", "1.8.27-2.el8")
    streams = [{"name": "ct", "stream": stream, "version": version, "context": context,
                "platform": platform, "artifacts": [artifact("runc", evr)]}
               for stream, version, context, platform, evr in builds]
    (tmp_path / "modules.yaml").write_bytes(modules_yaml(streams, {"ct": "rhel8"}))
    createrepo(repo, modules=tmp_path / "modules.yaml")
    view = module_view([load_repo(YumRepo("appstream", repo.as_uri() + "/", ()),
                                  requests.Session())], "el8")
    ours = sorted(p.nevra for p in view.repos[0].packages)
    assert ours == ["haproxy-1.8.27-2.el8.noarch"] + expect
    assert ours == repoquery(tmp_path / "dnf", {"appstream": repo.as_uri() + "/"})
