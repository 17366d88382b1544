"""Dist tags read from primary.xml releases (builder/rpm/elrelease.py)."""

import pytest

from builder.rpm.elrelease import dist_major


@pytest.mark.parametrize("release, major", [
    ("2.el8", 8), ("4.el8_5", 8), ("1.module_el8.5.0+911+f19012f9", 8), ("3.1.el7", 7),
    ("209.git7d71120.el7.centos", 7), ("1.el9_0", 9), ("150500.1.1", None), ("1.fc38", None),
    ("1.elrepo", None), ("2.el10", 10)])
def test_dist_major(release, major):
    assert dist_major(release) == major
