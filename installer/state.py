"""<root>/var/lib/kubecrate/state.json (which steps completed, from which bundle, for which
node) and the lock that stops two installer runs on one host at once."""

import errno
import fcntl
import json
import os
import time
from typing import Any, Dict, Optional

from installer.format.errors import KubecrateError
from installer.host import Host

STATE_PATH = "/var/lib/kubecrate/state.json"
LOCK_PATH = "/var/lib/kubecrate/install.lock"
STATE_VERSION = 1
OWNED_KEY = "owned"  # units and firewall rules kubecrate changed (installer/owned.py)


class LockedError(KubecrateError):
    """Another installer run holds the host lock."""


class State:
    """The recorded progress of installs on this host; saved atomically after every step."""

    def __init__(self, host: Host, data: Optional[Dict[str, Any]] = None) -> None:
        self.host = host
        self.data = data or {"version": STATE_VERSION, "steps": {}}

    @classmethod
    def load(cls, host: Host) -> "State":
        text = host.read_text(STATE_PATH)
        if not text:
            return cls(host)
        try:
            data = json.loads(text)
        except ValueError:
            raise KubecrateError("{} is not valid JSON".format(host.path(STATE_PATH)),
                                 hint="move it away and re-run install; every step re-checks")
        data.setdefault("steps", {})
        return cls(host, data)

    @property
    def steps(self) -> Dict[str, Dict[str, Any]]:
        return self.data["steps"]

    def done(self, step: str, inputs: str) -> bool:
        """Whether `step` completed with these inputs (bundle digest, node, config)."""
        record = self.steps.get(step)
        return bool(record and record.get("inputs") == inputs)

    def record(self, step: str, inputs: str, changes: int) -> None:
        self.steps[step] = {"inputs": inputs, "changes": changes, "at": int(time.time())}
        self.save()

    def forget(self, *steps: str) -> None:
        for step in steps:
            self.steps.pop(step, None)
        self.save()

    def use_bundle(self, digest: str) -> None:
        """Record `digest` as the bundle in use; the one it replaces becomes
        "previous_bundle", the way back after an upgrade, which `cache prune` keeps
        (installer/cachecare.py). Not saved here: the caller's next record() saves it."""
        current = self.data.get("bundle")
        if current and current != digest:
            self.data["previous_bundle"] = current
        self.data["bundle"] = digest

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self, owned: bool = False) -> None:
        """Write state.json. Its "owned" section (installer/owned.py) is written only with
        `owned=True`; any other save keeps the section as it is on disk, so a State loaded
        before a step ran never drops what that step recorded."""
        if self.host.dry_run:
            return
        if not owned:
            text = self.host.read_text(STATE_PATH)
            disk = json.loads(text).get(OWNED_KEY) if text else None
            if disk is None:
                self.data.pop(OWNED_KEY, None)
            else:
                self.data[OWNED_KEY] = disk
        self.host.write(STATE_PATH, json.dumps(self.data, indent=1, sort_keys=True) + "\n",
                        0o644)


class HostLock:
    """fcntl.flock on <root>/var/lib/kubecrate/install.lock for the life of a `with` block.
    The kernel drops it when the process dies, so a killed run never leaves it stale."""

    def __init__(self, host: Host) -> None:
        self.path = host.path(LOCK_PATH)
        self.handle: Any = None

    def __enter__(self) -> "HostLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise LockedError("another kubecrate run (pid {}) is working on this host".format(
                    holder), hint="wait for it to finish; the lock is {}".format(self.path))
            raise
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write("{}\n".format(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()
