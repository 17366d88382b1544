"""The mirror world's EL8/EL9 slice (scripts/mirrorworld/yum_el8.yaml), judged by real dnf:
the builder's module filter sees exactly what dnf sees in the modular CentOS 8.5 AppStream, the
EL8 resolved set holds nothing from the non-default container-tools stream (whose newer
container-selinux is a decoy), the bundle repo written from it installs with real dnf through
the installer's repo file, and the Stream 9 repo in createrepo_c 1.x's zstd shape is read."""

import os
import pathlib

import pytest
import requests
from click.testing import CliRunner
from lab.dnfroot import dnf, installed, repoquery
from lab.tools import require_tool
from mirrorworld import yum

from builder.cache import Cache
from builder.cli import cli, main
from builder.inputs.mirrors import GpgKey, YumRepo, load_preset
from builder.rpm.modules import module_view, parse_modules
from builder.rpm.packages import RpmFile, fetch_keys, fetch_rpms, keyrings
from builder.rpm.repodata import load_repo, load_repos
from builder.rpm.resolve import resolve
from builder.rpm.yumrepo import gather_xml, write_repo
from installer.format.errors import ExitCode
from installer.render import render

pytestmark = pytest.mark.integration

EL8_HOST = ["podman", "container-selinux", "runc", "fuse-overlayfs", "haproxy", "keepalived",
            "conntrack-tools"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for tool in ("rpmbuild", "rpmsign", "createrepo_c", "gpg", "gpgconf", "dnf", "rpm"):
        require_tool(tool)
    cache = os.environ.get("KUBECRATE_MW_CACHE")
    cache = pathlib.Path(cache) if cache else tmp_path_factory.mktemp("mw-cache")
    www, work = cache / "www", cache / "work"
    return www, yum.generate(www, work, yum.EL8)


def yum_repo(world, rid):
    www, result = world
    key = result["gpgkeys"][result["repo_keys"][rid]]
    return YumRepo(rid, (www / result["repos"][rid]).as_uri() + "/",
                   (GpgKey((www / key["path"]).as_uri(), key["fingerprint"]),))


@pytest.fixture(scope="module")
def el8(world):
    session = requests.Session()
    return [load_repo(yum_repo(world, rid), session) for rid in ("baseos", "appstream")]


@pytest.mark.parametrize("ids, decoy", [
    (("baseos", "appstream"), "container-selinux-2:2.229.0-2.module_el8.6.0+1107+d59a301b.noarch"),
    (("rocky8-baseos", "rocky8-appstream"),
     "container-selinux-2:2.229.0-2.module+el8.9.0+1498+5a5d3e38.noarch")],
    ids=["centos8.5", "rocky8.9"])
def test_the_module_filter_sees_what_real_dnf_sees(world, tmp_path, ids, decoy):
    """BaseOS + modular AppStream of CentOS 8.5 and of Rocky 8.9: the same package set as
    `dnf repoquery` on an EL8 platform, the non-default stream's decoy hidden by both."""
    session = requests.Session()
    el8 = [load_repo(yum_repo(world, rid), session) for rid in ids]
    view = module_view(el8, "el8")
    assert view.active == ("container-tools:rhel8",)
    ours = {p.nevra for r in view.repos for p in r.packages}
    www, result = world
    assert sorted(ours) == repoquery(tmp_path, {rid: f"file://{www / result['repos'][rid]}/"
                                                for rid in ids})
    everything = {p.nevra for r in el8 for p in r.packages}
    assert decoy in everything - ours


def test_el8_resolution_holds_nothing_from_a_non_default_stream(el8):
    appstream = el8[1]
    streams, defaults = parse_modules(appstream.metadata("modules"), "appstream")
    assert defaults == {"container-tools": "rhel8"}
    non_default = {f"{a[0]}-{a[2]}-{a[3]}.{a[4]}" for s in streams if s.stream != "rhel8"
                   for a in s.artifacts}
    assert non_default  # the decoy stream exists and has packages
    result = resolve(EL8_HOST, module_view(el8).repos)
    shipped = {f"{p.name}-{p.version}-{p.release}.{p.arch}" for p in result.packages}
    assert not shipped & non_default
    assert result.package("container-selinux").version == "2.167.0"
    # the same request without the filter takes the decoy: what the filter prevents
    assert resolve(EL8_HOST, el8).package("container-selinux").version == "2.229.0"


def test_the_el8_bundle_repo_installs_with_real_dnf(world, el8, tmp_path):
    view = module_view(el8)
    result = resolve(["podman", "keepalived"], view.repos)
    session = requests.Session()
    keys = fetch_keys([r.config for r in el8], session)
    by_id = {r.id: r for r in el8}
    paths = fetch_rpms([RpmFile.of(p, by_id[p.repo]) for p in result.packages],
                       keyrings(keys), Cache(tmp_path / "cache"), session)
    filelists, other = gather_xml(result.packages, el8)
    repo = tmp_path / "bundle" / "repo"
    written = write_repo(repo, result.packages, paths, filelists, other, keys,
                         timestamp=1700000000)
    repos_d = tmp_path / "dnf" / "repos.d"
    repos_d.mkdir(parents=True)
    (repos_d / "kubecrate.repo").write_text(render(
        "kubecrate.repo.j2", bundle_name="el8", main=[], enabled=1, baseurl=str(repo),
        gpgkeys=[str(repo / k) for k in written.keys]))
    conf = tmp_path / "dnf" / "dnf.conf"
    conf.write_text(f"[main]\ngpgcheck=1\nreposdir={repos_d}\ncachedir={tmp_path / 'dc'}\n"
                    "plugins=False\ninstall_weak_deps=False\n")
    root = tmp_path / "root"
    root.mkdir()
    dnf(root, conf, repos_d, "--releasever=8", "install", "podman", "keepalived")
    got = installed(root)
    assert got["container-selinux"] == ["2.167.0-1.module_el8.5.0+911+f19012f9.noarch"]
    assert got["runc"] == ["1.0.2-1.module_el8.5.0+911+f19012f9.x86_64"]
    assert got["podman"] == ["3.3.1-9.module_el8.5.0+988+b1f0b741.x86_64"]


def test_the_worlds_el8_preset_serves_the_slice_over_http(mirror_world):
    preset = load_preset(mirror_world.preset_el8)
    repos = load_repos(preset, ["baseos", "appstream", "c9s-baseos"], requests.Session())
    view = module_view(repos[:2])
    assert view.active == ("container-tools:rhel8",)
    assert resolve(["runc"], view.repos).package("runc").release.startswith("1.module_el8.5.0")
    assert repos[2].repomd.files["primary"].href.endswith(".zst")


def test_kubecrate_why_on_the_el8_preset(mirror_world, capsys):
    """The CLI: the chain names the default stream's build; a pin only the non-default stream
    has is refused, naming the module stream and the repo."""
    preset = str(mirror_world.preset_el8)
    args = ["--mirrors", preset, "--repos", "baseos,appstream", "--base", "none"]
    out = CliRunner().invoke(cli, ["why", "container-selinux", *args, "-p", "podman"])
    assert out.exit_code == 0, out.output
    assert "container-selinux-2:2.167.0-1.module_el8.5.0+911+f19012f9.noarch (appstream): " \
        "needed by podman" in out.output
    with pytest.raises(SystemExit) as exited:
        main(["why", "runc", *args, "-p", "runc-1.1.4"])
    assert exited.value.code == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "runc-1.1.4: runc-1:1.1.4-1.module_el8.6.0+1107+d59a301b.x86_64 (appstream) is in " \
        "stream container-tools:4.0, not the default stream container-tools:rhel8" in err


def test_the_stream9_zstd_repo_is_read(world):
    repo = load_repo(yum_repo(world, "c9s-baseos"), requests.Session())
    assert repo.repomd.files["primary"].href.endswith(".xml.zst")
    assert repo.repomd.files["group"].href.endswith("comps-BaseOS.x86_64.xml.zst")
    assert repo.groups()["core"].mandatory == ("bash", "filesystem")
    assert resolve(["bash"], [repo]).package("bash").release == "6.el9"

