"""What the host command stand-ins (scripts/lab/hoststandins.py and the modules it dispatches
to) share: the test host's folders, the real tools behind them, the call log and their state
files.

The installer's runner exports $KUBECRATE_ROOT (the host's root); the test exports
$KUBECRATE_PROBE_ROOT (the fake kernel: the /proc and /sys files the installer's probes read),
$KUBECRATE_STANDIN_STATE (unit and firewall state) and $KUBECRATE_STANDIN_LOG (one JSON line of
argv a call). The stand-ins run on the host's python3 (CPython 3.6 on the e2e hosts).
"""

import json
import os
import shutil
import sys

ROOT = os.path.abspath(os.environ.get("KUBECRATE_ROOT") or "/")
PROBE = os.environ.get("KUBECRATE_PROBE_ROOT", "")
STATE = os.environ.get("KUBECRATE_STANDIN_STATE", "")


def real(name):
    """The real tool, never a stand-in (they share PATH's first folder)."""
    mine = os.path.dirname(os.path.abspath(sys.argv[0]))
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if os.path.abspath(p) != mine)
    return shutil.which(name, path=path) or "/usr/bin/" + name


def record(argv):
    log = os.environ.get("KUBECRATE_STANDIN_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps(argv) + "\n")


def rooted(path):
    if ROOT == "/" or path.startswith(ROOT + "/"):
        return path
    return os.path.join(ROOT, path.lstrip("/"))


def probe_write(path, text):
    target = os.path.join(PROBE, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as out:
        out.write(text)


def read_json(path, default):
    """The JSON document at `path`, or `default` when there is none (or it is not JSON)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    """Replace the JSON document at `path` whole, so a concurrent reader never sees half."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
