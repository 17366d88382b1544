"""Host identity (docs/el8-el9.md): the EL platform from PLATFORM_ID (VERSION_ID on CentOS 7), the
distribution from ID, and which bundles serve which hosts, for the os-release files of
CentOS 7, CentOS 8.5, Rocky 9.4, Alma 9 and RHEL 9."""

from types import SimpleNamespace

import pytest
from lab import osreleases

from installer.host import Host, Probes
from installer.osrelease import read_os_release, refusal
from installer.steps import preflight

ROCKY_HOSTS = ("rocky", "almalinux", "rhel", "centos")


@pytest.mark.parametrize("text, ident, platform", [
    (osreleases.CENTOS7, "centos", "el7"), (osreleases.CENTOS8, "centos", "el8"),
    (osreleases.ROCKY94, "rocky", "el9"), (osreleases.ALMA9, "almalinux", "el9"),
    (osreleases.RHEL9, "rhel", "el9"),
    ('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n', "debian", ""),
    ('NAME="Fedora Linux"\nID=fedora\nVERSION_ID=39\nPLATFORM_ID="platform:f39"\n',
     "fedora", "f39"),
], ids=["centos7", "centos8", "rocky9", "alma9", "rhel9", "debian", "fedora"])
def test_platform_and_distribution(text, ident, platform):
    host = read_os_release(text)
    assert (host.id, host.platform) == (ident, platform)


# (host, bundle target os, release, target.hosts) -> served?
SERVED = [
    (osreleases.ROCKY94, "rocky", "9.4", ROCKY_HOSTS, True),
    (osreleases.ALMA9, "rocky", "9.4", ROCKY_HOSTS, True),
    (osreleases.RHEL9, "rocky", "9.4", ROCKY_HOSTS, True),
    (osreleases.ALMA9, "rocky", "9.4", (), False),  # the recipe does not allow it
    (osreleases.RHEL9, "rocky", "9.4", ("rocky", "almalinux"), False),
    (osreleases.CENTOS8, "rocky", "9.4", ROCKY_HOSTS, False),  # another platform
    (osreleases.CENTOS7, "rocky", "9.4", ROCKY_HOSTS, False),
    (osreleases.CENTOS8, "centos", "8.5", (), True),
    (osreleases.CENTOS7, "centos", "7.9", (), True),
    (osreleases.CENTOS7, "centos", "8.5", (), False),
    (osreleases.ROCKY94, "centos", "8.5", (), False),
]


@pytest.mark.parametrize("text, target_os, release, hosts, served", SERVED)
def test_which_bundle_serves_which_host(text, target_os, release, hosts, served):
    assert (refusal(read_os_release(text), "b", target_os, release, hosts) is None) == served


def _ctx(tmp_path, text, target_os="rocky", release="9.4", hosts=()):
    (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc/os-release").write_text(text)
    info = SimpleNamespace(name="k8s-1.30-el9-containerd", os=target_os, release=release,
                           hosts=hosts)
    return SimpleNamespace(host=Host(str(tmp_path), probes=Probes(str(tmp_path))), info=info)


def test_preflight_refuses_another_platform_naming_both(tmp_path):
    finding = preflight.check_os(_ctx(tmp_path, osreleases.CENTOS8, hosts=ROCKY_HOSTS))
    assert finding.level == "fail"
    assert finding.message == ("bundle k8s-1.30-el9-containerd is for platform:el9 (rocky 9.4) "
                               "but this host is platform:el8 (CentOS Linux 8)")
    assert finding.fix == "use a bundle built for platform:el8"


def test_preflight_refuses_a_distribution_the_recipe_does_not_list(tmp_path):
    finding = preflight.check_os(_ctx(tmp_path, osreleases.RHEL9, hosts=("rocky", "almalinux")))
    assert finding.level == "fail"
    assert "serves rocky, almalinux hosts of platform:el9 (target.hosts) but this host is " \
           "Red Hat Enterprise Linux 9.4 (ID rhel)" in finding.message
    assert "list rhel in the recipe's target.hosts" in finding.fix


def test_preflight_passes_alma_for_a_rocky_bundle_that_lists_it(tmp_path):
    finding = preflight.check_os(_ctx(tmp_path, osreleases.ALMA9, hosts=ROCKY_HOSTS))
    assert finding.level == "pass"
    assert "AlmaLinux 9.4 (platform:el9) is served" in finding.message


def test_a_host_without_os_release_is_refused(tmp_path):
    ctx = _ctx(tmp_path, "")
    (tmp_path / "etc/os-release").unlink()
    assert preflight.check_os(ctx).level == "fail"
