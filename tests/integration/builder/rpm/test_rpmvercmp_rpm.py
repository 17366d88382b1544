"""rpmvercmp against the real rpm on a few hundred random pairs (one `rpm --eval` call)."""

import random
import subprocess

import pytest
from lab.tools import require_tool

from builder.rpm.vercmp import evrcmp, parse_evr, rpmvercmp

pytestmark = pytest.mark.integration

# No '%' (macros), quotes or braces: every string is a Lua string literal inside %{lua: ...}.
ALPHABET = "0123456789" * 3 + "abcxyzAZ" + "._+~^"


def random_version(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 9)))


def random_evr(rng: random.Random) -> str:
    epoch = f"{rng.randint(0, 3)}:" if rng.random() < 0.5 else ""
    return f"{epoch}{random_version(rng)}-{random_version(rng)}"


def rpm_vercmp(pairs):
    """rpm.vercmp as rpm itself computes it, for every pair, in one process."""
    table = ",".join(f'{{"{a}","{b}"}}' for a, b in pairs)
    script = (f"%{{lua: for _, p in ipairs({{{table}}}) do "
              f"print(rpm.vercmp(p[1], p[2]) .. '\\n') end}}")
    done = subprocess.run([require_tool("rpm"), "--eval", script], capture_output=True,
                          text=True, timeout=120, check=True)
    results = [int(line) for line in done.stdout.split()]
    assert len(results) == len(pairs), done.stderr
    return results


def test_versions_match_rpm_on_random_pairs():
    rng = random.Random(20240917)
    pairs = [(random_version(rng), random_version(rng)) for _ in range(400)]
    # Near misses exercise the interesting branches more than independent strings do.
    for a, _ in list(pairs[:200]):
        pairs.append((a, a + rng.choice(["", ".1", "~", "^", "a", "_", "~rc1", "^git1", "0"])))
    expected = rpm_vercmp(pairs)
    wrong = [(a, b, rpmvercmp(a, b), e) for (a, b), e in zip(pairs, expected)
             if rpmvercmp(a, b) != e]
    assert wrong == []


def test_evrs_match_rpm_on_random_pairs():
    rng = random.Random(7)
    pairs = [(random_evr(rng), random_evr(rng)) for _ in range(200)]
    pairs += [(a, a.rsplit("-", 1)[0] + "-" + random_version(rng)) for a, _ in pairs[:100]]
    expected = rpm_vercmp(pairs)
    wrong = [(a, b, evrcmp(parse_evr(a), parse_evr(b)), e)
             for (a, b), e in zip(pairs, expected) if evrcmp(parse_evr(a), parse_evr(b)) != e]
    assert wrong == []
