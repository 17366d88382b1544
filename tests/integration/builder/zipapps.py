"""What the zipapp's integration tests share (test_zipapp.py, test_zipapp_preamble.py): the
build epoch and a subprocess runner; conftest.py builds the zipapp they judge."""

from __future__ import annotations

import subprocess

EPOCH = 1700000000


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
