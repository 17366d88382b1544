"""Whether this host's recorded install completed, for `status`.

Each step is recorded in state.json when it completes (installer/steps/__init__.py run_steps),
and install writes one more record, INSTALL_KEY, at its start (`completed` empty) and at its
end (the steps it ran). A host counts as installed when its last install completed and every
step it ran is still recorded for the current inputs (reset forgets them; an upgrade moves
them to the new bundle). Steps this installer has and that install did not run (a host set up
by an older installer, before the registry or bundle-server step existed) do not make it
"partly" installed: status names them, and a re-run of install adds them.

An older installer wrote no INSTALL_KEY: its install completed when every step it knew ran,
that is every step of the role but ADDED_STEPS, which came later.
"""

import time
from typing import List, Sequence, Tuple

from installer.state import State

INSTALL_KEY = "install"
# Steps added after the first releases, which a host an older installer set up never ran.
ADDED_STEPS = ("time", "registry", "bundle-server")


def started(state: State) -> None:
    """An install begins: until completed() it does not count."""
    state.data[INSTALL_KEY] = {"completed": None, "steps": []}
    state.save()


def completed(state: State, steps: Sequence[str]) -> None:
    """The install ran every one of `steps` (after preflight) to the end."""
    state.data[INSTALL_KEY] = {"completed": int(time.time()), "steps": list(steps)}
    state.save()


def judge(state: State, expected: Sequence[str], inputs: str) -> Tuple[bool, List[str]]:
    """(installed, the steps of `expected` not recorded for `inputs`) for an installed host:
    `expected` are the role's steps as this installer runs them."""
    pending = [step for step in expected if not state.done(step, inputs)]
    record = state.data.get(INSTALL_KEY)
    if isinstance(record, dict):
        ran = ["preflight"] + list(record.get("steps") or [])
        installed = bool(record.get("completed")) and all(state.done(s, inputs) for s in ran)
    else:  # an older installer's record
        installed = not [step for step in pending if step not in ADDED_STEPS]
    return installed, pending if installed else []
