"""The resolver on small hand-written repos: arch, versions, pins, provides, file requirements,
obsoletes, conflicts, priorities, the assumed base, errors, determinism and `explain`."""

import pytest

from builder.rpm.base import group_base, parse_rpm_qa, rpm_qa_base
from builder.rpm.resolve import NO_BASE, ResolveError, explain, resolve
from tests.rpmrepos import pkg, repos


def names(result):
    return [p.nevra for p in result.packages]


@pytest.fixture
def world(tmp_path):
    return repos(tmp_path, {
        "base": [
            pkg("glibc", "2.17-317.el7", provides=["libc.so.6()(64bit)"],
                files=["/usr/sbin/ldconfig"]),
            pkg("glibc", "2.17-317.el7", arch="i686", provides=["libc.so.6"]),
            pkg("zlib", "1.2.7-18.el7", arch="i686", provides=["libz.so.1"]),
            pkg("bash", "4.2.46-34.el7", requires=["libc.so.6()(64bit)"], files=["/bin/sh"]),
            pkg("shadow-utils", "2:4.6-5.el7", files=["/usr/sbin/groupadd"]),
            pkg("ntpdate", "4.2.6-1.el7"),
            pkg("python3", "3.6.8-18.el7", requires=["python3-libs(x86-64) = 3.6.8-18.el7"],
                files=["/usr/bin/python3"]),
            pkg("python3-libs", "3.6.8-18.el7", requires=["libc.so.6()(64bit)"]),
            pkg("tool", "1.0-1.el7", requires=["/usr/share/tool/data.db", "/bin/sh"]),
            pkg("tool-data", "1.0-1.el7", arch="noarch", more_files=["/usr/share/tool/data.db"]),
            pkg("httpd", "2.4-1", provides=["webserver"], sourcerpm="httpd-2.4-1.src.rpm"),
            pkg("nginx", "1.20-1", provides=["webserver"]),
            pkg("site", "1-1", requires=["webserver"]),
            pkg("old-runc", "1.0-1", provides=["runc"]),
            pkg("oldapp", "1.0-1"),
            pkg("usesold", "1-1", requires=["oldapp"]),
        ],
        "updates": [
            pkg("python3", "3.6.8-21.el7_9", requires=["python3-libs(x86-64) = 3.6.8-21.el7_9"],
                files=["/usr/bin/python3"]),
            pkg("python3-libs", "3.6.8-21.el7_9", requires=["libc.so.6()(64bit)"]),
        ],
        "docker": [
            pkg("containerd.io", "1.6.33-3.1.el7", provides=["runc"], obsoletes=["old-runc"]),
            pkg("containerd.io", "1.6.31-3.1.el7", provides=["runc"], obsoletes=["old-runc"]),
            pkg("docker-ce", "3:20.10.24-3.el7",
                requires=["/usr/sbin/groupadd", "containerd.io >= 1.4.1", "runc",
                          "rpmlib(CompressedFileNames) <= 3.0.4-1"],
                conflicts=["docker"]),
            pkg("docker-ce", "3:20.10.23-3.el7", requires=["containerd.io = 1.6.31-3.1.el7"]),
            pkg("docker", "2:1.13.1-209", requires=["runc"]),
            pkg("pins-old", "1-1", requires=["containerd.io = 1.6.31-3.1.el7"]),
            pkg("newapp", "2.0-1", obsoletes=["oldapp < 2"], provides=["oldapp = 2.0-1"]),
            pkg("needs-i686", "1-1", requires=["libz.so.1"]),
            pkg("broken", "1-1", requires=["nothing-provides-this >= 2"]),
        ],
    }, comps={"base": {"core": {"mandatory": ["bash", "glibc"], "default": ["shadow-utils"],
                                "optional": ["ntpdate"]}}})


@pytest.fixture
def core(world):
    return group_base(world, "x86_64")


def test_core_base_holds_mandatory_default_and_closure_never_optional(core):
    assert sorted(p.nevra for p in core.packages) == [
        "bash-4.2.46-34.el7.x86_64", "glibc-2.17-317.el7.x86_64", "shadow-utils-2:4.6-5.el7.x86_64"]
    assert core.source == "@core from base"
    assert core.to_json()["packages"][0] == "bash-4.2.46-34.el7.x86_64"


def test_newest_version_from_any_repo_and_nothing_from_the_base(world, core):
    result = resolve(["python3"], world, base=core)
    assert names(result) == ["python3-3.6.8-21.el7_9.x86_64", "python3-libs-3.6.8-21.el7_9.x86_64"]
    assert result.package("python3").repo == "updates"


def test_full_closure_without_base_never_takes_i686(world):
    result = resolve(["python3"], world, base=NO_BASE)
    assert "glibc-2.17-317.el7.x86_64" in names(result)
    assert not any(p.arch == "i686" for p in result.packages)


def test_a_requirement_only_i686_provides_is_unmet(world):
    with pytest.raises(ResolveError) as err:
        resolve(["needs-i686"], world)
    assert "'libz.so.1' needed by needs-i686-1-1.x86_64 (docker)" in err.value.message
    assert "zlib-1.2.7-18.el7.i686, which is not for x86_64" in err.value.message
    with pytest.raises(ResolveError, match="no package 'zlib' for x86_64 \\(only for i686\\)"):
        resolve(["zlib"], world)


@pytest.mark.parametrize("request_text,expected", [
    ("docker-ce-20.10.23", "docker-ce-3:20.10.23-3.el7.x86_64"),
    ("docker-ce-20.10.23-3.el7", "docker-ce-3:20.10.23-3.el7.x86_64"),
    ("docker-ce-3:20.10.23", "docker-ce-3:20.10.23-3.el7.x86_64"),
    ("docker-ce", "docker-ce-3:20.10.24-3.el7.x86_64"),
])
def test_pins(world, core, request_text, expected):
    result = resolve([request_text], world, base=core)
    assert result.package("docker-ce").nevra == expected
    if expected.startswith("docker-ce-3:20.10.23"):  # its requirement pins containerd too
        assert result.package("containerd.io").nevra == "containerd.io-1.6.31-3.1.el7.x86_64"


def test_a_requirement_for_an_older_version_wins_over_newest(world, core):
    result = resolve(["docker-ce", "pins-old"], world, base=core)
    assert result.package("containerd.io").evr.version == "1.6.31"


def test_a_pin_that_contradicts_a_requirement_is_an_error(world, core):
    with pytest.raises(ResolveError, match="containerd.io"):
        resolve(["containerd.io-1.6.33", "pins-old"], world, base=core)


@pytest.mark.parametrize("request_text,expected", [
    ("/usr/bin/python3", "python3-3.6.8-21.el7_9.x86_64"),
    ("runc", "containerd.io-1.6.33-3.1.el7.x86_64"),  # old-runc is obsoleted by containerd.io
])
def test_provides_as_requests(world, core, request_text, expected):
    assert expected in names(resolve([request_text], world, base=core))


def test_alternatives_prefer_the_same_source_then_short_names_deterministically(world, core):
    first = resolve(["site"], world, base=core)
    assert names(first) == ["httpd-2.4-1.x86_64", "site-1-1.x86_64"]
    assert names(resolve(["site"], world, base=core)) == names(first)


def test_file_requirements_read_filelists_only_when_primary_cannot_answer(world, core):
    resolve(["docker-ce"], world, base=core)  # /usr/sbin/groupadd is a primary file
    assert all(repo._files is None for repo in world)
    result = resolve(["tool"], world, base=core)
    assert names(result) == ["tool-1.0-1.el7.x86_64", "tool-data-1.0-1.el7.noarch"]
    assert world[0]._files is not None
    assert explain(result, "tool-data")[-1].endswith("for '/usr/share/tool/data.db'")


def test_obsoletes_replace_a_base_package(world, tmp_path):
    base = rpm_qa_base("oldapp-1.0-1.x86_64\nglibc-2.17-317.el7.x86_64\n", world)
    result = resolve(["newapp"], world, base=base)
    assert result.replaces == (("newapp-2.0-1.x86_64", "oldapp-1.0-1.x86_64"),)


def test_an_obsoleted_provider_is_not_chosen(world, core):
    result = resolve(["usesold"], world, base=core)
    assert "newapp-2.0-1.x86_64" in names(result) and "oldapp-1.0-1.x86_64" not in names(result)


def test_conflicts_are_detected(world, core):
    with pytest.raises(ResolveError, match=r"docker-ce-3:20.10.24-3.el7.x86_64 conflicts with "
                                           r"docker-2:1.13.1-209.x86_64 \(docker\)"):
        resolve(["docker-ce", "docker"], world, base=core)


def test_priorities_lower_number_wins_by_name(tmp_path):
    world = repos(tmp_path, {"base": [pkg("python3", "3.6.8-18.el7")],
                             "updates": [pkg("python3", "3.6.8-21.el7_9")]},
                  priorities={"base": 1, "updates": 2})
    assert names(resolve(["python3"], world)) == ["python3-3.6.8-18.el7.x86_64"]


def test_unknown_and_unresolvable_are_errors_that_name_them(world, core):
    with pytest.raises(ResolveError) as err:
        resolve(["docker-cee", "keepalivd"], world, base=core)
    assert "no package 'docker-cee' (did you mean 'docker-ce'?)" in err.value.message
    assert "keepalivd" in err.value.message
    assert "searched base, updates, docker" in err.value.message
    with pytest.raises(ResolveError) as err:
        resolve(["broken"], world, base=core)
    assert err.value.message == (
        "nothing provides 'nothing-provides-this >= 2' needed by broken-1-1.x86_64 (docker); "
        "searched repos: base, updates, docker")


def test_requests_already_in_the_base_ship_nothing(world, core):
    result = resolve(["bash", "/bin/sh"], world, base=core)
    assert result.packages == ()
    assert result.in_base == {"bash": "bash-4.2.46-34.el7.x86_64",
                              "/bin/sh": "bash-4.2.46-34.el7.x86_64"}
    assert explain(result, "bash") == [
        "bash-4.2.46-34.el7.x86_64 is not shipped: it is in the assumed base (@core from base)"]


def test_explain_gives_the_chain_from_the_request(world, core):
    result = resolve(["docker-ce-20.10.24"], world, base=core)
    assert explain(result, "containerd.io") == [
        "docker-ce-3:20.10.24-3.el7.x86_64 (docker): requested as 'docker-ce-20.10.24'",
        "  containerd.io-1.6.33-3.1.el7.x86_64 (docker): needed by "
        "docker-ce-3:20.10.24-3.el7.x86_64 for 'containerd.io >= 1.4.1'"]
    with pytest.raises(ResolveError, match="neither in the closure nor in the assumed base"):
        explain(result, "nginx")


def test_base_packages_broken_by_an_upgrade_are_upgraded_too(tmp_path):
    world = repos(tmp_path, {
        "base": [pkg("policy", "1-1"), pkg("policy-targeted", "1-1", requires=["policy = 1-1"])],
        "updates": [pkg("policy", "2-1"), pkg("policy-targeted", "2-1", requires=["policy = 2-1"])],
        "extras": [pkg("container-selinux", "2-1", arch="noarch", requires=["policy >= 2"])],
    }, comps={"base": {"core": {"mandatory": ["policy-targeted"]}}})
    result = resolve(["container-selinux"], world, base=group_base(world, "x86_64"))
    assert names(result) == ["container-selinux-2-1.noarch", "policy-2-1.x86_64",
                             "policy-targeted-2-1.x86_64"]
    assert "upgrades base package policy-targeted-1-1.x86_64" in explain(
        result, "policy-targeted")[-1]


def test_output_is_deterministic(world, core):
    runs = {tuple(names(resolve(["site", "docker-ce", "python3", "tool"], world, base=core)))
            for _ in range(3)}
    assert len(runs) == 1


def test_rpm_qa_formats():
    text = ("# a host\nbash-4.2.46-34.el7.x86_64\ngpg-pubkey-f4a80eb5-53a7ff4b\n"
            "shadow-utils-2:4.6-5.el7.x86_64\nglibc (none):2.17-317.el7.x86_64\n")
    assert parse_rpm_qa(text) == [("bash", 0, "4.2.46", "34.el7", "x86_64"),
                                  ("shadow-utils", 2, "4.6", "5.el7", "x86_64"),
                                  ("glibc", 0, "2.17", "317.el7", "x86_64")]
    with pytest.raises(ResolveError, match="hosts.txt:1: not a package NEVRA"):
        parse_rpm_qa("bash\n", "hosts.txt")


def test_rpm_qa_base_from_a_host(world):
    base = rpm_qa_base("glibc-2.17-317.el7.x86_64\nbash-4.2.46-35.el7.x86_64\n", world, "h.txt")
    assert base.missing == ("bash-4.2.46-35.el7.x86_64",)  # taken from 34's metadata
    result = resolve(["tool"], world, base=base)
    assert names(result) == ["tool-1.0-1.el7.x86_64", "tool-data-1.0-1.el7.noarch"]


def test_the_provides_index_is_built_once_per_metadata(world, monkeypatch):
    import builder.rpm.pkgindex as pkgindex

    built = []
    real = pkgindex.Index

    def counting(*args):
        built.append(args)
        return real(*args)

    monkeypatch.setattr(pkgindex, "Index", counting)
    monkeypatch.setattr(pkgindex, "_INDEXES", [])
    first = resolve(["docker-ce"], world, base=NO_BASE)
    assert names(resolve(["docker-ce"], world, base=NO_BASE)) == names(first)
    assert len(built) == 1
    world[1].packages = ()  # other metadata (updates emptied): a new index, a new answer
    assert resolve(["python3"], world, base=NO_BASE).package("python3").repo == "base"
    assert len(built) == 2
