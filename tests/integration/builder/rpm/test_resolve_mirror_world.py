"""The resolver on the mirror world's yum repos (real createrepo_c metadata over nginx), judged by
libsolv on the same repodata and installed set."""

import pytest
import requests

from builder.inputs.mirrors import load_preset
from builder.rpm.base import group_base
from builder.rpm.repodata import load_repos
from builder.rpm.resolve import NO_BASE, ResolveError, resolve
from builder.rpm.vercmp import overlaps

pytestmark = pytest.mark.integration
solv = pytest.importorskip("solv", reason="libsolv's bindings are Linux-only")
from tests.libsolv_oracle import Oracle  # noqa: E402
from tests.rpmrepos import load  # noqa: E402
from tests.tinyrpms import build_rpm, createrepo  # noqa: E402

REPOS = ["base", "updates", "extras", "docker-ce-stable"]
PRIMARY = ["docker-ce-20.10.24", "keepalived", "haproxy", "conntrack-tools", "socat", "python3"]
PINNED = [
    ["docker-ce-20.10.23", "containerd.io-1.6.31", "socat"],
    ["python3-3.6.8-18.el7", "conntrack-tools", "/usr/sbin/ipvsadm"],
]


@pytest.fixture(scope="module")
def repos(mirror_world):
    with requests.Session() as session:
        return load_repos(load_preset(mirror_world.preset), REPOS, session)


@pytest.fixture(scope="module")
def core(repos):
    return group_base(repos, "x86_64")


def alternatives(result, repos):
    """Requirements of the closure that more than one package name could satisfy."""
    allowed = {result.arch, "noarch"}
    base = {p.name for p in result.base.packages}
    found = []
    for package in result.packages:
        for dep in package.requires:
            if dep.name.startswith("rpmlib("):
                continue
            names = {p.name for repo in repos for p in repo.packages if p.arch in allowed
                     and (any(d.name == dep.name and overlaps(d.flags, d.evr, dep.flags, dep.evr)
                              for d in p.provides) or dep.name in p.files)}
            if len(names) > 1 and not names & base:
                found.append((package.nevra, str(dep), sorted(names)))
    return found


def assert_closed(result):
    """Every requirement of every shipped package is met by the base or the shipped set."""
    replaced = {old for _new, old in result.replaces}
    have = [p for p in result.base.packages if p.nevra not in replaced] + list(result.packages)
    for package in result.packages:
        for dep in package.requires:
            assert dep.name.startswith("rpmlib(") or any(
                p.name == dep.name and overlaps("EQ", p.evr, dep.flags, dep.evr)
                or dep.name in p.files
                or any(d.name == dep.name and overlaps(d.flags, d.evr, dep.flags, dep.evr)
                       for d in p.provides) for p in have), (package.nevra, str(dep))


def check_installable_shape(result, repos):
    core_group = repos[0].groups()["core"]
    base = {p.name for p in result.base.packages}
    for package in result.packages:
        assert package.arch in ("x86_64", "noarch"), package.nevra
        assert package.name not in core_group.optional, package.nevra
        assert package.name not in base or any(
            shipped == package.nevra for shipped, _old in result.replaces), package.nevra


def test_core_base_equals_libsolv_and_holds_no_optional_member(repos, core, tmp_path):
    group = repos[0].groups()["core"]
    assert group.optional and not {p.name for p in core.packages} & set(group.optional)
    assert not any(p.arch == "i686" for p in core.packages)
    assert {p.repo for p in core.packages} == {"base"}  # the install media: os only
    expected, problems = Oracle(tmp_path, repos[:1], None).solve(group.mandatory + group.default)
    assert problems == []
    assert sorted(p.nevra for p in core.packages) == expected


@pytest.mark.parametrize("wanted", [PRIMARY] + PINNED, ids=["primary", "pins-docker",
                                                            "pins-python"])
def test_closure_against_core_equals_libsolv(repos, core, wanted, tmp_path):
    result = resolve(wanted, repos, base=core)
    check_installable_shape(result, repos)
    expected, problems = Oracle(tmp_path, repos, core.packages).solve(wanted)
    assert problems == []
    if not alternatives(result, repos):
        assert [p.nevra for p in result.packages] == expected
    assert_closed(result)


def test_primary_closure_is_what_a_minimal_host_lacks(repos, core):
    result = resolve(PRIMARY, repos, base=core)
    shipped = {p.name: p for p in result.packages}
    assert shipped["docker-ce"].evr.version == "20.10.24"
    assert shipped["containerd.io"].evr.version == "1.6.33"  # newest, unpinned
    assert shipped["python3"].repo == "updates" and shipped["python3-libs"].repo == "updates"
    assert {"container-selinux", "fuse-overlayfs", "fuse3-libs", "slirp4netns",
            "policycoreutils-python", "libcgroup", "libnetfilter_cthelper", "net-snmp-libs",
            "psmisc"} <= set(shipped)
    assert not {"glibc", "bash", "systemd", "selinux-policy", "iptables"} & set(shipped)
    assert "docker-scan-plugin" not in shipped  # only 20.10.23's CLI needed it
    assert result.base.to_json()["kind"] == "group"


def test_full_closure_without_base_equals_libsolv(repos, tmp_path):
    result = resolve(PRIMARY, repos, base=NO_BASE)
    assert not any(p.arch == "i686" for p in result.packages)
    expected, problems = Oracle(tmp_path, repos, []).solve(PRIMARY)
    assert problems == []
    if not alternatives(result, repos):
        assert [p.nevra for p in result.packages] == expected
    assert_closed(result)


def test_unknown_package_fails_naming_it_and_the_repos(repos, core):
    with pytest.raises(ResolveError) as err:
        resolve(["docker-ce-19.03.15", "kubelet"], repos, base=core)
    assert "no version of docker-ce matches 'docker-ce-19.03.15'" in err.value.message
    assert "no package 'kubelet'" in err.value.message
    assert "searched base, updates, extras, docker-ce-stable" in err.value.message


POLICY_UPGRADES = (  # (updates build shipped, @core's build it replaces)
    ("selinux-policy-3.13.1-268.el7_9.2.noarch", "selinux-policy-3.13.1-266.el7.noarch"),
    ("selinux-policy-targeted-3.13.1-268.el7_9.2.noarch",
     "selinux-policy-targeted-3.13.1-266.el7.noarch"))


def resolve_policy_upgrade(repos, core, tmp_path, name, requirement):
    """Resolve a local repo's real RPM `name`, which needs `requirement`, over the mirror with
    @core as the base: it must ship `name` and both policy upgrades, as libsolv does."""
    local = tmp_path / "local"
    build_rpm(local, name, "1.0-1", requires=[requirement])
    world = repos + [load(createrepo(local))]
    assert {old for _new, old in POLICY_UPGRADES} <= {p.nevra for p in core.packages}
    result = resolve([name], world, base=core)
    assert [p.nevra for p in result.packages] == [f"{name}-1.0-1.noarch"] + [
        new for new, _old in POLICY_UPGRADES]
    assert result.replaces == POLICY_UPGRADES
    expected, problems = Oracle(tmp_path / "oracle", world, core.packages).solve([name])
    assert problems == []
    assert [p.nevra for p in result.packages] == expected
    assert_closed(result)
    return result


def test_a_requirement_on_a_newer_base_package_upgrades_it_and_what_pins_it(repos, core, tmp_path):
    """A local repo's real RPM needs selinux-policy >= the updates build, newer than @core's:
    selinux-policy is upgraded from updates, and selinux-policy-targeted (in the base, pinned to
    the old policy by `=`) must follow, as yum and libsolv do."""
    result = resolve_policy_upgrade(repos, core, tmp_path, "needs-new-policy",
                                    "selinux-policy >= 3.13.1-268.el7_9.2")
    assert "upgrades base package selinux-policy-targeted-3.13.1-266.el7.noarch" in (
        result.reasons["selinux-policy-targeted-3.13.1-268.el7_9.2.noarch"].note)


def test_a_versioned_provide_only_a_newer_base_package_has_upgrades_it_and_what_it_pins(
        repos, core, tmp_path):
    """The other way round: a local RPM needs `selinux-policy-base >= ` the updates build, a
    virtual provide of selinux-policy-targeted. @core's targeted is too old, so the updates one
    is shipped; it requires `selinux-policy = ` its own version, which @core's selinux-policy
    no longer meets, so that is upgraded too. Equal to libsolv."""
    result = resolve_policy_upgrade(repos, core, tmp_path, "needs-new-policy-base",
                                    "selinux-policy-base >= 3.13.1-268.el7_9.2")
    reason = result.reasons["selinux-policy-3.13.1-268.el7_9.2.noarch"]
    assert reason.parent == "selinux-policy-targeted-3.13.1-268.el7_9.2.noarch"
