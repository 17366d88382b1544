"""EL8 modular filtering: the resolver sees what dnf on a fresh host would see, non-modular
packages plus the default streams' artifacts (dnf.modularity(7), "Package filtering")."""

import pytest

from builder.rpm.modules import ModuleError, module_view, parse_modules
from builder.rpm.resolve import resolve
from tests.rpmrepos import modules_yaml, pkg, repos

RHEL8 = "1.module_el8.5.0+911+f19012f9"
DECOY = "1.module_el8.5.0+950+0123abcd"
STREAMS = [
    {"name": "container-tools", "stream": "rhel8",
     "artifacts": [f"container-selinux-2:2.167.0-{RHEL8}.noarch", f"runc-0:1.0.2-{RHEL8}.x86_64",
                   f"container-selinux-2:2.167.0-{RHEL8}.src"]},
    {"name": "container-tools", "stream": "4.0",
     "artifacts": [f"container-selinux-2:2.229.0-{DECOY}.noarch",
                   f"runc-1:1.1.4-{DECOY}.x86_64"]},
    {"name": "nodefault", "stream": "1",
     "artifacts": [f"lonely-0:1.0-{RHEL8}.x86_64"]},
]
APPSTREAM = [
    pkg("container-selinux", f"2:2.167.0-{RHEL8}", arch="noarch",
        requires=["selinux-policy >= 3.14"]),
    pkg("runc", f"1.0.2-{RHEL8}"),
    pkg("container-selinux", f"2:2.229.0-{DECOY}", arch="noarch",
        requires=["selinux-policy >= 3.14.3-80"]),
    pkg("runc", f"1:1.1.4-{DECOY}"),
    pkg("lonely", f"1.0-{RHEL8}"),
    pkg("haproxy", "1.8.27-2.el8"),  # non-modular, untouched
]
BASEOS = [
    pkg("selinux-policy", "3.14.3-80.el8", arch="noarch"),
    pkg("runc", "1:1.2.0-1.el8"),  # non-modular and newer: dnf filters it out
    pkg("podman-runc-shim", "1-1.el8", provides=["runc"]),
]


@pytest.fixture
def world(tmp_path):
    return repos(tmp_path, {"baseos": BASEOS, "appstream": APPSTREAM},
                 modules={"appstream": modules_yaml(STREAMS, {"container-tools": "rhel8"})})


def test_only_the_default_stream_and_non_modular_packages_are_resolved(world):
    view = module_view(world)
    assert view.active == ("container-tools:rhel8",)
    result = resolve(["container-selinux", "runc", "haproxy"], view.repos)
    assert [p.nevra for p in result.packages] == [
        f"container-selinux-2:2.167.0-{RHEL8}.noarch", "haproxy-1.8.27-2.el8.x86_64",
        f"runc-1.0.2-{RHEL8}.x86_64", "selinux-policy-3.14.3-80.el8.noarch"]
    # what a solver without the filter takes: the decoy's newer EVRs
    unfiltered = resolve(["container-selinux", "runc"], world)
    assert {p.release for p in unfiltered.packages if p.name != "selinux-policy"} != {RHEL8}


def test_hidden_packages_say_why(world):
    hidden = module_view(world).hidden
    assert any("not the default stream container-tools:rhel8" in why
               for _, _, why in hidden["container-selinux"])
    assert ("runc-1:1.2.0-1.el8.x86_64", "baseos",
            "is non-modular, filtered out by an active stream's package of the same name"
            ) in hidden["runc"]
    assert "podman-runc-shim" in hidden  # provides runc: filtered too


def test_a_package_of_a_module_without_default_stream_is_a_clear_error(world):
    view = module_view(world)
    with pytest.raises(ModuleError) as err:
        view.check_requests(["haproxy", "lonely"])
    assert "lonely" in err.value.message and "appstream" in err.value.message
    assert "module nodefault (stream 1), which has no default stream" in err.value.message
    # the file that says so: appstream's modules metadata as repomd.xml names it
    href = world[1].repomd.files["modules"].href
    assert f"(per appstream: {href})" in err.value.message and "modules.yaml" in href
    view.check_requests(["runc", "runc-1.0.2", f"container-selinux-2:2.167.0-{RHEL8}"])
    with pytest.raises(ModuleError, match=r"runc-1\.1\.4: runc-1:1\.1\.4-.* \(appstream\) is in "
                       r"stream container-tools:4\.0, not the default stream"):
        view.check_requests(["runc-1.1.4"])


def test_a_repo_without_modules_is_untouched(tmp_path):
    plain = repos(tmp_path, {"base": BASEOS})
    view = module_view(plain)
    assert view.repos[0] is plain[0] and view.active == () and view.hidden == {}


def test_module_dependencies_activate_the_stream_they_require(tmp_path):
    streams = STREAMS + [{"name": "app", "stream": "2", "requires": {"nodefault": ["1"]},
                          "artifacts": [f"app-0:2.0-{RHEL8}.x86_64"]}]
    world = repos(tmp_path, {"appstream": APPSTREAM + [pkg("app", f"2.0-{RHEL8}")]},
                  modules={"appstream": modules_yaml(streams, {"app": "2",
                                                               "container-tools": "rhel8"})})
    view = module_view(world)
    assert view.active == ("app:2", "container-tools:rhel8", "nodefault:1")
    view.check_requests(["lonely"])


@pytest.mark.parametrize("el9_version, visible", [
    (0, ["1.0.0", "1.0.2", "1.0.3"]),  # an older build for el9: every build stays listed
    (3, ["1.2.0"]),  # the newest is for el9: no stream is active, the non-modular one shows
])
def test_builds_and_platforms_as_dnf_treats_them(tmp_path, el9_version, visible):
    """Checked against real dnf in tests/integration/builder/rpm/test_modular_bundle_repo.py."""
    streams = [
        {"name": "ct", "stream": "rhel8", "version": 1, "artifacts": ["runc-0:1.0.0-1.m1.x86_64"]},
        {"name": "ct", "stream": "rhel8", "version": 2, "artifacts": ["runc-0:1.0.2-1.m2.x86_64"]},
        {"name": "ct", "stream": "rhel8", "version": el9_version, "context": "9999",
         "platform": "el9", "artifacts": ["runc-0:1.0.3-1.m3.x86_64"]},
    ]
    world = repos(tmp_path, {"appstream": [pkg("runc", v) for v in
                                           ("1.0.0-1.m1", "1.0.2-1.m2", "1.0.3-1.m3",
                                            "1.2.0-1.el8")]},
                  modules={"appstream": modules_yaml(streams, {"ct": "rhel8"})})
    view = module_view(world, "el8")
    assert sorted(p.version for p in view.repos[0].packages) == visible
    if el9_version == 3:
        assert "newest build ct:rhel8:3:9999 does not run on platform el8" in \
            view.hidden["runc"][0][2]
    assert len(module_view(world).repos[0].packages) == 3  # no platform given: all builds


@pytest.mark.parametrize("text, message", [
    (b"document: modulemd\nversion: 3\ndata: {name: a, stream: b}\n", "version 3"),
    (b"document: surprise\nversion: 1\ndata: {}\n", "unknown document kind 'surprise'"),
    (b"document: modulemd\nversion: 2\ndata: {name: a, stream: b, version: 1, context: c,"
     b" artifacts: {rpms: [not-a-nevra]}}\n", "artifact 'not-a-nevra'"),
    (b"{[", "not valid YAML"),
])
def test_malformed_modules_yaml_names_the_file(text, message):
    with pytest.raises(ModuleError, match=message) as err:
        parse_modules(text, "appstream: modules.yaml")
    assert err.value.message.startswith("appstream: modules.yaml")
