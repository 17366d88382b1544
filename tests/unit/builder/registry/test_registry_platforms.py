"""Platform selection follows containerd's Normalize/Only rules."""

import pytest

from builder.errors import UsageError
from builder.registry.platforms import Platform, choose, parse_platform


@pytest.mark.parametrize("text,want", [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("linux/amd64/v1", Platform("linux", "amd64")),
    ("linux/arm64", Platform("linux", "arm64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/armhf", Platform("linux", "arm", "v7")),
    ("linux/arm/6", Platform("linux", "arm", "v6")),
    ("Linux/AMD64", Platform("linux", "amd64")),
])
def test_normalize(text, want):
    assert parse_platform(text) == want


@pytest.mark.parametrize("text", ["linux", "linux/", "a/b/c/d"])
def test_bad_platform(text):
    with pytest.raises(UsageError, match="os/architecture"):
        parse_platform(text)


def entry(os, arch, variant=None):
    plat = {"os": os, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return {"platform": plat}


def test_arm64_matches_the_v8_entry():
    entries = [entry("unknown", "unknown"), entry("linux", "amd64"), entry("linux", "arm64", "v8")]
    assert choose(parse_platform("linux/arm64"), entries) == 2
    assert choose(parse_platform("linux/arm64/v8"), entries) == 2


def test_arm_v7_prefers_v7_then_falls_back_to_v6():
    entries = [entry("linux", "arm", "v6"), entry("linux", "arm", "v7")]
    assert choose(parse_platform("linux/arm/v7"), entries) == 1
    assert choose(parse_platform("linux/arm/v7"), entries[:1]) == 0
    assert choose(parse_platform("linux/arm/v6"), entries[1:]) is None


def test_first_of_equals_wins_and_no_match_is_none():
    entries = [entry("linux", "amd64"), entry("linux", "amd64")]
    assert choose(parse_platform("linux/amd64"), entries) == 0
    assert choose(parse_platform("linux/s390x"), entries) is None
    assert choose(parse_platform("linux/amd64"), [entry("linux", "amd64", "v3")]) is None
    assert choose(parse_platform("linux/amd64"), [{"digest": "no platform"}]) is None
