"""EL8 conflicts (docs/el8-el9.md): podman, buildah and runc against containerd.io, named by
preflight and removed by host prep only when the bundle's remove_packages says so, exactly
those."""

from installer.steps import conflicts, hostprep, preflight, preflight_hostpolicy
from tests.unit.installer.test_hostprep_items import ctx_for

EL8 = dict(major_release="8", release="8.5", packages_for=lambda role: (
    "docker-ce-20.10.24-3.el8", "containerd.io-1.6.32-3.1.el8", "iproute-tc"))
RPM_Q = ("rpm", "-q", "podman", "buildah", "runc")
HAVE = (0, "podman-3.3.1-9.module_el8.5.0+988+b1f0b741.x86_64\npackage buildah is not "
           "installed\nrunc-1.0.2-1.module_el8.5.0+911+f19012f9.x86_64\n")


def _ctx(tmp_path, removals=(), answers=None):
    table = {RPM_Q: HAVE, ("rpm", "-q", "podman", "buildah", "runc"): HAVE}
    table.update(answers or {})
    return ctx_for(tmp_path, answers=table, remove_packages=tuple(removals), **EL8)


def test_preflight_names_them_when_the_bundle_does_not_remove_them(tmp_path):
    (finding,) = preflight_hostpolicy.check_conflicts(_ctx(tmp_path))
    assert finding.level == "fail"
    assert finding.message == ("podman, runc installed: containerd.io obsoletes and conflicts "
                               "with runc, which podman require; the bundle does not remove "
                               "podman, runc")
    assert finding.fix.startswith("yum remove podman runc")
    actions = hostprep.HostPrepStep().actions(_ctx(tmp_path / "b"))
    assert not [a for a in actions if a.what.startswith("remove ")]


def test_removal_is_a_change_when_listed_and_nothing_else_needs_them(tmp_path):
    ctx = _ctx(tmp_path, ("podman", "buildah", "runc"),
               {("rpm", "-q", "podman", "buildah", "runc"): HAVE,
                ("rpm", "-e", "--test"): (0, "")})
    (finding,) = preflight_hostpolicy.check_conflicts(ctx)
    assert finding.level == "warn" and "`rpm -e podman runc`" in finding.message
    (action,) = conflicts.actions(ctx)
    assert action.what.startswith("remove podman runc")
    action.do()
    assert ctx.runner.calls[-1] == ["rpm", "-e", "podman", "runc"]


def test_a_removal_that_would_take_other_packages_fails(tmp_path):
    ctx = _ctx(tmp_path, ("podman", "runc"), {
        ("rpm", "-q", "podman", "runc"): (0, "podman-3.3.1-9.x86_64\nrunc-1.0.2-1.x86_64\n"),
        ("rpm", "-e", "--test"): (1, "")})
    ctx.runner.query = _with_stderr(ctx.runner.query, "error: Failed dependencies:\n"
                                    "\trunc is needed by (installed) toolbox-0.0.99.3-1.x86_64")
    (finding,) = preflight_hostpolicy.check_conflicts(ctx)
    assert finding.level == "fail" and "would break other packages" in finding.message
    assert "runc is needed by (installed) toolbox" in finding.message


def _with_stderr(query, stderr):
    def answer(argv, timeout=0):
        result = query(argv, timeout)
        return result._replace(stderr=stderr) if argv[:3] == ["rpm", "-e", "--test"] else result
    return answer


def test_el7_and_bundles_without_containerd_io_are_not_judged(tmp_path):
    assert preflight_hostpolicy.check_conflicts(ctx_for(tmp_path, answers={RPM_Q: HAVE})) == []
    ctx = ctx_for(tmp_path / "x", answers={RPM_Q: HAVE}, major_release="8",
                  packages_for=lambda role: ("socat",))
    assert preflight_hostpolicy.check_conflicts(ctx) == []


def test_erased_by_reads_dnf_removals_and_obsoletes():
    listing = """Dependencies resolved.
================================================================================
 Package            Arch    Version                          Repository    Size
================================================================================
Installing:
 containerd.io      x86_64  1.6.32-3.1.el8                   kubecrate     33 M
     replacing  runc.x86_64 1.0.2-1.module_el8.5.0+911+f19012f9
Removing dependent packages:
 podman             x86_64  3.3.1-9.module_el8.5.0+988+b1f0b741 @System    48 M
 a-very-long-package-name-that-wraps
                    x86_64  1.0-1.el8                        @System       1 M

Transaction Summary
================================================================================
Install  1 Package
"""
    assert preflight.erased_by(listing) == ["runc", "podman",
                                            "a-very-long-package-name-that-wraps"]
