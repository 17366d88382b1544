"""The mirror world's yum repos, judged by real tools: dnf installs @core and then the kubeadm
host packages into an empty root with GPG checks on, and `rpm -K` checks every signature."""

import gzip
import os
import pathlib
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from lab.dnfroot import dnf, installed, write_config
from lab.tools import require_tool
from mirrorworld import yum, yumdata

pytestmark = pytest.mark.integration

NS = {"repo": "http://linux.duke.edu/metadata/repo",
      "common": "http://linux.duke.edu/metadata/common",
      "rpm": "http://linux.duke.edu/metadata/rpm"}
KUBE_PACKAGES = ["docker-ce-20.10.24", "keepalived", "haproxy", "conntrack-tools", "socat",
                 "python3"]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    for tool in ("rpmbuild", "rpmsign", "createrepo_c", "gpg", "gpgconf"):
        require_tool(tool)
    # The same folders as scripts/mirror-world, so that a shared cache is built once.
    cache = os.environ.get("KUBECRATE_MW_CACHE")
    cache = pathlib.Path(cache) if cache else tmp_path_factory.mktemp("mw-cache")
    www, work = cache / "www", cache / "work"
    return www, yum.generate(www, work)


def write_dnf_config(tmp: pathlib.Path, www: pathlib.Path, result: dict, keys: dict = None):
    """A private dnf.conf and reposdir with file:// repos; `keys` maps repo id to the gpgkey
    (key id in result["gpgkeys"]) when a test wants a wrong one."""
    vendor = {"docker-ce-stable": "docker"}

    def key_url(rid: str) -> str:
        key = (keys or {}).get(rid, vendor.get(rid, "centos"))
        return f"file://{www / result['gpgkeys'][key]['path']}"

    return write_config(tmp, {rid: (f"file://{www / path}/", [key_url(rid)])
                              for rid, path in result["repos"].items()})


@pytest.fixture(scope="session")
def host_root(world, tmp_path_factory):
    """An empty root that first gets @core, then the kubeadm host packages."""
    require_tool("rpm")
    www, result = world
    tmp = tmp_path_factory.mktemp("dnf")
    conf, repos_d = write_dnf_config(tmp, www, result)
    root = tmp / "root"
    root.mkdir()
    dnf(root, conf, repos_d, "install", "@core")
    after_core = installed(root)
    dnf(root, conf, repos_d, "install", *KUBE_PACKAGES)
    return root, after_core, installed(root)


def primary(www: pathlib.Path, repo_path: str) -> ET.Element:
    repomd = ET.parse(www / repo_path / "repodata" / "repomd.xml").getroot()
    href = repomd.find("repo:data[@type='primary']/repo:location", NS).get("href")
    with gzip.open(www / repo_path / href) as f:
        return ET.parse(f).getroot()


def test_core_then_kube_packages_install_with_gpg_checks(host_root):
    root, after_core, now = host_root
    for name in ("bash", "glibc", "systemd", "coreutils", "iptables", "iproute", "util-linux",
                 "policycoreutils", "selinux-policy-targeted", "yum", "chrony"):
        assert name in after_core, f"@core did not install {name}"
    assert "ntpdate" not in after_core, "an optional @core member must not be installed"
    assert "docker-ce" not in after_core and "python3" not in after_core
    assert now["docker-ce"] == ["20.10.24-3.el7.x86_64"]
    assert now["docker-ce-cli"] == ["20.10.24-3.el7.x86_64"]
    assert now["containerd.io"] == ["1.6.33-3.1.el7.x86_64"]
    for name in ("docker-ce-rootless-extras", "container-selinux", "fuse-overlayfs", "fuse3-libs",
                 "slirp4netns", "policycoreutils-python", "libcgroup", "keepalived", "haproxy",
                 "net-snmp-agent-libs", "conntrack-tools", "libnetfilter_cthelper",
                 "libnetfilter_cttimeout", "libnetfilter_queue", "socat", "python3-libs",
                 "python3-pip", "python3-setuptools", "libtirpc"):
        assert name in now, f"{name} missing from the installed closure"
    assert now["haproxy"] == ["1.5.18-9.el7.x86_64"]
    assert now["keepalived"] == ["1.3.5-19.el7.x86_64"]
    assert "docker" not in now  # extras' conflicting docker must not be picked
    # dnf imported both vendor keys into the root because it verified packages of both.
    assert len(now["gpg-pubkey"]) == 2


def test_i686_exists_but_is_never_chosen(world, host_root):
    www, result = world
    meta = primary(www, result["repos"]["base"])
    i686 = {p.findtext("common:name", namespaces=NS) for p in meta.findall("common:package", NS)
            if p.findtext("common:arch", namespaces=NS) == "i686"}
    assert {"glibc", "zlib", "libtirpc"} <= i686
    _, _, now = host_root
    chosen = [f"{name}.{vra}" for name, vras in now.items() for vra in vras
              if vra.endswith(".i686")]
    assert chosen == []


def test_updates_version_wins_over_os(world, host_root):
    www, result = world
    base = {p.findtext("common:name", namespaces=NS) for p in
            primary(www, result["repos"]["base"]).findall("common:package", NS)}
    assert {"python3", "python3-libs", "selinux-policy-targeted"} <= base
    _, after_core, now = host_root
    assert now["python3"] == ["3.6.8-21.el7_9.x86_64"]
    assert now["python3-libs"] == ["3.6.8-21.el7_9.x86_64"]
    assert after_core["selinux-policy-targeted"] == ["3.13.1-268.el7_9.2.noarch"]


def entries(pkg: ET.Element, kind: str) -> dict:
    return {e.get("name"): e.attrib
            for e in pkg.iterfind(f"common:format/rpm:{kind}/rpm:entry", NS)}


def test_metadata_carries_what_real_repos_have(world):
    """The dependency features the builder's resolver must handle, as createrepo_c wrote them."""
    www, result = world
    base = {(p.findtext("common:name", namespaces=NS), p.findtext("common:arch", namespaces=NS)): p
            for p in primary(www, result["repos"]["base"]).findall("common:package", NS)}
    docker = {p.findtext("common:name", namespaces=NS): p for p in
              primary(www, result["repos"]["docker-ce-stable"]).findall("common:package", NS)
              if p.find("common:version", NS).get("ver") == "20.10.24"}
    assert entries(base["haproxy", "x86_64"], "requires")["shadow-utils"].get("pre") == "1"
    assert "/bin/sh" in entries(docker["docker-ce-cli"], "requires")
    assert "/usr/bin/python3" in entries(base["python3-pip", "noarch"], "requires")
    bash_files = [f.text for f in base["bash", "x86_64"].iterfind("common:format/common:file", NS)]
    assert "/bin/sh" in bash_files
    assert "dailyjobs" in entries(base["cronie-anacron", "x86_64"], "provides")
    selinux = entries(docker["docker-ce"], "requires")["container-selinux"]
    assert (selinux["flags"], selinux["epoch"], selinux["ver"]) == ("GE", "2", "2.74")
    assert "docker-engine" in entries(docker["docker-ce"], "obsoletes")
    assert "docker" in entries(docker["docker-ce"], "conflicts")
    assert docker["docker-ce"].find("common:version", NS).get("epoch") == "3"


def test_rpm_signatures_verify_against_the_published_keys(world, tmp_path):
    rpm = require_tool("rpm")
    www, result = world
    dbpath = tmp_path / "rpmdb"
    subprocess.run([rpm, "--dbpath", str(dbpath), "--initdb"], check=True)
    for key in result["gpgkeys"].values():
        subprocess.run([rpm, "--dbpath", str(dbpath), "--import", str(www / key["path"])],
                       check=True)
    rpms = sorted(p for path in result["repos"].values()
                  for p in (www / path).glob("Packages/*.rpm"))
    assert len(rpms) > 100
    proc = subprocess.run([rpm, "--dbpath", str(dbpath), "-K", *map(str, rpms)],
                          capture_output=True, text=True)
    bad = [ln for ln in proc.stdout.splitlines() if not ln.endswith(": digests signatures OK")]
    assert proc.returncode == 0 and bad == [] and len(proc.stdout.splitlines()) == len(rpms)


def test_docker_rpms_do_not_verify_with_the_centos_key_alone(world, tmp_path):
    rpm = require_tool("rpm")
    www, result = world
    dbpath = tmp_path / "rpmdb"
    subprocess.run([rpm, "--dbpath", str(dbpath), "--initdb"], check=True)
    subprocess.run([rpm, "--dbpath", str(dbpath), "--import",
                    str(www / result["gpgkeys"]["centos"]["path"])], check=True)
    docker = next((www / result["repos"]["docker-ce-stable"]).glob("Packages/docker-ce-20*.rpm"))
    proc = subprocess.run([rpm, "--dbpath", str(dbpath), "-K", str(docker)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "SIGNATURES NOT OK" in proc.stdout


def test_dnf_refuses_packages_signed_by_another_key(world, tmp_path):
    www, result = world
    conf, repos_d = write_dnf_config(tmp_path, www, result, keys={"docker-ce-stable": "centos"})
    root = tmp_path / "root"
    root.mkdir()
    proc = dnf(root, conf, repos_d, "install", "docker-ce-cli", check=False)
    assert proc.returncode != 0
    assert "GPG check FAILED" in proc.stderr + proc.stdout
    assert "docker-ce-cli" not in installed(root)


def test_published_keys_and_metadata_look_like_centos(world):
    gpg = require_tool("gpg")
    www, result = world
    for key in result["gpgkeys"].values():
        out = subprocess.run(
            [gpg, "--batch", "--with-colons", "--show-keys", str(www / key["path"])],
            capture_output=True, text=True, check=True).stdout
        fprs = [ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")]
        assert fprs[:1] == [key["fingerprint"]] and len(key["fingerprint"]) == 40
    centos = (www / result["gpgkeys"]["centos"]["path"]).read_bytes()
    assert (www / "vault.centos.org/RPM-GPG-KEY-CentOS-7").read_bytes() == centos
    for rid, path in result["repos"].items():
        repomd = ET.parse(www / path / "repodata" / "repomd.xml").getroot()
        kinds = {d.get("type"): d for d in repomd.findall("repo:data", NS)}
        for kind in ("primary", "filelists", "other"):
            assert kinds[kind].find("repo:location", NS).get("href").endswith(".xml.gz")
            assert kinds[kind].find("repo:checksum", NS).get("type") == "sha256"
        hrefs = [d.find("repo:location", NS).get("href") for d in kinds.values()]
        assert not [h for h in hrefs if h.endswith((".zst", ".zck", ".xz"))]
        if rid == "base":
            assert kinds["group"].find("repo:location", NS).get("href").endswith("comps.xml")
        else:
            assert "group" not in kinds
    pkg = primary(www, result["repos"]["docker-ce-stable"]).find(
        "common:package[common:name='docker-ce']", NS)
    assert pkg.find("common:location", NS).get("href").startswith("Packages/")


def test_generate_is_cached(world):
    www, result = world
    repomd = www / result["repos"]["base"] / "repodata" / "repomd.xml"
    before = repomd.stat().st_mtime_ns
    start = time.monotonic()
    assert yum.generate(www, www.parent / "work") == result
    assert time.monotonic() - start < 5
    assert repomd.stat().st_mtime_ns == before


def test_package_data_rejects_unknown_keys(tmp_path):
    data = yumdata.DATA.read_text().replace("- {name: socat,", "- {name: socat, color: blue,")
    bad = tmp_path / "yum_packages.yaml"
    bad.write_text(data)
    with pytest.raises(yumdata.YumWorldError, match="color"):
        yumdata.load(bad)
