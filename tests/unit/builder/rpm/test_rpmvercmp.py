"""rpm's version ordering: rpm's own test vectors (tests/rpmvercmp.at), EVRs, range overlap."""

import pytest

from builder.rpm.vercmp import EVR, evr_key, evrcmp, overlaps, parse_evr, rpmvercmp

# (a, b, expected rpmvercmp(a, b)), the cases of rpm's tests/rpmvercmp.at
RPM_VECTORS = [
    ("1.0", "1.0", 0), ("1.0", "2.0", -1), ("2.0", "1.0", 1),
    ("2.0.1", "2.0.1", 0), ("2.0", "2.0.1", -1), ("2.0.1", "2.0", 1),
    ("2.0.1a", "2.0.1a", 0), ("2.0.1a", "2.0.1", 1), ("2.0.1", "2.0.1a", -1),
    ("5.5p1", "5.5p1", 0), ("5.5p1", "5.5p2", -1), ("5.5p2", "5.5p1", 1),
    ("5.5p10", "5.5p10", 0), ("5.5p1", "5.5p10", -1), ("5.5p10", "5.5p1", 1),
    ("10xyz", "10.1xyz", -1), ("10.1xyz", "10xyz", 1),
    ("xyz10", "xyz10", 0), ("xyz10", "xyz10.1", -1), ("xyz10.1", "xyz10", 1),
    ("xyz.4", "xyz.4", 0), ("xyz.4", "8", -1), ("8", "xyz.4", 1),
    ("xyz.4", "2", -1), ("2", "xyz.4", 1),
    ("5.5p2", "5.6p1", -1), ("5.6p1", "5.5p2", 1),
    ("5.6p1", "6.5p1", -1), ("6.5p1", "5.6p1", 1),
    ("6.0.rc1", "6.0", 1), ("6.0", "6.0.rc1", -1),
    ("10b2", "10a1", 1), ("10a2", "10b2", -1),
    ("1.0aa", "1.0aa", 0), ("1.0a", "1.0aa", -1), ("1.0aa", "1.0a", 1),
    ("10.0001", "10.0001", 0), ("10.0001", "10.1", 0), ("10.1", "10.0001", 0),
    ("10.0001", "10.0039", -1), ("10.0039", "10.0001", 1),
    ("4.999.9", "5.0", -1), ("5.0", "4.999.9", 1),
    ("20101121", "20101121", 0), ("20101121", "20101122", -1), ("20101122", "20101121", 1),
    ("2_0", "2_0", 0), ("2.0", "2_0", 0), ("2_0", "2.0", 0),
    ("a", "a", 0), ("a+", "a+", 0), ("a+", "a_", 0), ("a_", "a+", 0),
    ("+a", "+a", 0), ("+a", "_a", 0), ("_a", "+a", 0),
    ("+_", "+_", 0), ("_+", "+_", 0), ("_+", "_+", 0), ("+", "_", 0), ("_", "+", 0),
    ("1.0~rc1", "1.0~rc1", 0), ("1.0~rc1", "1.0", -1), ("1.0", "1.0~rc1", 1),
    ("1.0~rc1", "1.0~rc2", -1), ("1.0~rc2", "1.0~rc1", 1),
    ("1.0~rc1~git123", "1.0~rc1~git123", 0), ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0~rc1", "1.0~rc1~git123", 1),
    ("1.0^", "1.0^", 0), ("1.0^", "1.0", 1), ("1.0", "1.0^", -1),
    ("1.0^git1", "1.0^git1", 0), ("1.0^git1", "1.0", 1), ("1.0", "1.0^git1", -1),
    ("1.0^git1", "1.0^git2", -1), ("1.0^git2", "1.0^git1", 1),
    ("1.0^git1", "1.01", -1), ("1.01", "1.0^git1", 1),
    ("1.0^20160101", "1.0^20160101", 0), ("1.0^20160101", "1.0.1", -1),
    ("1.0.1", "1.0^20160101", 1),
    ("1.0^20160101^git1", "1.0^20160101^git1", 0),
    ("1.0^20160102", "1.0^20160101^git1", 1), ("1.0^20160101^git1", "1.0^20160102", -1),
    ("1.0~rc1^git1", "1.0~rc1^git1", 0), ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0~rc1", "1.0~rc1^git1", -1),
    ("1.0^git1~pre", "1.0^git1~pre", 0), ("1.0^git1", "1.0^git1~pre", 1),
    ("1.0^git1~pre", "1.0^git1", -1),
    # RhBug:178798: letters after a number against a separator and letters
    ("1b.fc17", "1b.fc17", 0), ("1b.fc17", "1.fc17", -1), ("1.fc17", "1b.fc17", 1),
    ("1g.fc17", "1g.fc17", 0), ("1g.fc17", "1.fc17", 1), ("1.fc17", "1g.fc17", -1),
]


@pytest.mark.parametrize("a,b,expected", RPM_VECTORS)
def test_rpm_test_vectors(a, b, expected):
    assert rpmvercmp(a, b) == expected


@pytest.mark.parametrize("a,b,expected", [
    ("1.0", "1.fc4", 1),  # a number is newer than letters
    ("3.0.0_fc", "3.0.0.fc", 0),
    ("1.01", "1.1", 0),
    ("12345678901234567890", "12345678901234567889", 1),  # no integer overflow
    ("0.4.3", "0.4.3.0", -1),  # the side with segments left is newer
    ("el7_9.2", "el7", 1),
    ("268.el7_9.2", "266.el7", 1),
    ("1.6.33", "1.6.4", 1),
])
def test_more_orderings(a, b, expected):
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


@pytest.mark.parametrize("text,evr", [
    ("3:20.10.24-3.el7", EVR(3, "20.10.24", "3.el7")),
    ("20.10.24-3.el7", EVR(0, "20.10.24", "3.el7")),
    ("1.2", EVR(0, "1.2", None)),
    ("2:1.2", EVR(2, "1.2", None)),
    ("0.9-0.34.20140113.el7.centos", EVR(0, "0.9", "0.34.20140113.el7.centos")),
])
def test_parse_evr(text, evr):
    assert parse_evr(text) == evr
    assert parse_evr(str(evr)) == evr


def test_epoch_wins_over_version():
    assert evrcmp(parse_evr("1:1.0-1"), parse_evr("0:9.9-9")) == 1
    assert evrcmp(parse_evr("2.0-1"), parse_evr("1:1.0-1")) == -1


def test_missing_release_is_not_compared():
    assert evrcmp(parse_evr("3.13.1"), parse_evr("3.13.1-266.el7")) == 0
    assert evrcmp(parse_evr("3.13.1-268.el7_9.2"), parse_evr("3.13.1-266.el7")) == 1


def test_sort_key_orders_like_rpm():
    evrs = [parse_evr(t) for t in ("1.6.4-1", "1:0.1-1", "1.6.33-3.1.el7", "1.6.33~rc1-1",
                                   "1.6.33-3.el7")]
    assert [str(e) for e in sorted(evrs, key=evr_key)] == [
        "1.6.4-1", "1.6.33~rc1-1", "1.6.33-3.el7", "1.6.33-3.1.el7", "1:0.1-1"]


@pytest.mark.parametrize("provide,require,expected", [
    (("EQ", "3:20.10.24-3.el7"), ("GE", "1.4.1"), True),  # epoch 3 > 0
    (("EQ", "1.6.33-3.1.el7"), ("GE", "1.4.1"), True),
    (("EQ", "1.6.33-3.1.el7"), ("LT", "1.4.1"), False),
    (("EQ", "3.13.1-266.el7"), ("EQ", "3.13.1-268.el7_9.2"), False),
    (("EQ", "3.13.1-266.el7"), ("EQ", "3.13.1"), True),  # no release: any release
    (("EQ", "3.13.1-266.el7"), ("GE", "3.13.1-216.el7"), True),
    (("EQ", "2:2.119.2-1"), ("GE", "2:2.74"), True),
    (("EQ", "2:2.119.2-1"), ("LE", "2:1.12.4-28"), False),
    ((None, None), ("GE", "9:99"), True),  # an unversioned provide satisfies everything
    (("EQ", "1.0-1"), (None, None), True),
    (("LT", "2.4"), ("EQ", "2.3-1"), True),  # an obsoletes range against a package
    (("LT", "2.4"), ("EQ", "2.4-1"), False),
    (("LE", "4.1.9"), ("EQ", "4.1.9-3"), True),
    (("GT", "1.0"), ("LT", "2.0"), True),
    (("GT", "2.0"), ("LT", "1.0"), False),
    (("GE", "1.0"), ("LE", "1.0"), True),
    (("GT", "1.0"), ("LE", "1.0"), False),
])
def test_overlaps(provide, require, expected):
    pflags, pevr = provide
    rflags, revr = require
    got = overlaps(pflags, parse_evr(pevr) if pevr else None, rflags,
                   parse_evr(revr) if revr else None)
    assert got is expected
    back = overlaps(rflags, parse_evr(revr) if revr else None, pflags,
                    parse_evr(pevr) if pevr else None)
    assert back is expected  # range intersection is symmetric


def test_the_sort_key_shortcut_orders_like_the_walk():
    """Strings without `~` or `^` are compared by a cached segment key; it must agree with
    rpm's segment walk on everything, separators, leading zeros and letters included."""
    import random

    from builder.rpm import vercmp

    rng = random.Random(16)
    alphabet = "0012389abzAZ._+-"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(600)]
    for a in texts:
        for b in rng.sample(texts, 20) + [a + ".0", a + "a", "0" + a]:
            assert rpmvercmp(a, b) == vercmp._walk(a, b), (a, b)
