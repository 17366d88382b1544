"""Preflight names the host's enabled yum repos that point outside the bundle (a warning) and
leaves their files alone (installer/steps/preflight_repos.py)."""

from types import SimpleNamespace

from installer.host import Host
from installer.steps.preflight_repos import check_outside_repos

BASE = """\
[base]
name=CentOS-$releasever - Base
mirrorlist=http://mirrorlist.centos.org/?release=$releasever&arch=$basearch&repo=os
gpgcheck=1

[updates]
name=CentOS-$releasever - Updates
baseurl=http://mirror.centos.org/centos/$releasever/updates/$basearch/
enabled=0

[media]
name=install DVD
baseurl=file:///media/CentOS/
"""
KUBECRATE = "[kubecrate]\nname=bundle\nbaseurl=file:///var/lib/kubecrate/bundles/x/repo\n"


def test_an_enabled_outside_repo_is_named_with_its_file_and_left_alone(tmp_path):
    repos = tmp_path / "etc/yum.repos.d"
    repos.mkdir(parents=True)
    (repos / "CentOS-Base.repo").write_text(BASE)
    (repos / "kubecrate.repo").write_text(KUBECRATE)
    found = check_outside_repos(SimpleNamespace(host=Host(str(tmp_path))))
    assert [(f.level, f.check) for f in found] == [("warn", "yum-repos")]
    assert "yum repo base in /etc/yum.repos.d/CentOS-Base.repo is enabled and points outside " \
           "the bundle (http://mirrorlist.centos.org/" in found[0].message
    assert "yum-config-manager --disable base" in found[0].fix
    assert (repos / "CentOS-Base.repo").read_text() == BASE


def test_only_local_repos_pass(tmp_path):
    repos = tmp_path / "etc/yum.repos.d"
    repos.mkdir(parents=True)
    (repos / "kubecrate.repo").write_text(KUBECRATE)
    (repos / "dvd.repo").write_text("[media]\nbaseurl=file:///media/CentOS/\n")
    found = check_outside_repos(SimpleNamespace(host=Host(str(tmp_path))))
    assert [(f.level, f.message) for f in found] == [
        ("pass", "no enabled yum repo points outside the bundle")]
