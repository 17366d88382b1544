"""What a preflight check reports (installer/steps/preflight.py and the preflight_* modules):
one Finding a fact, at one of three levels. Any `fail` stops the install before the host
changes; `warn` is a change host prep makes, or a risk the operator should know of.
"""

from typing import NamedTuple

PASS, WARN, FAIL = "pass", "warn", "fail"


class Finding(NamedTuple):
    level: str  # pass | warn | fail
    check: str
    message: str
    fix: str = ""
