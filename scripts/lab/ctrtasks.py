"""The containers and tasks of the lab's recording `ctr` (scripts/lab/hostruntime.py), kept as
containerd 1.6 keeps them apart: a container is metadata (its ID taken until it is deleted), a
task is the process running in it. Real containerd cannot run a task in this sandbox (runc's
mount of sysfs is refused), so the stand-in models what the kubecrate-registry unit meets:

- `ctr run [--rm] IMAGE ID CMD...` creates the container, refusing an ID that exists
  (metadata/containers.go, containerStore.Create: `container "ID": already exists`), starts the
  task's process in a session of its own (containerd's shim holds it, not ctr), forwards
  ctr's signals to it (cmd/ctr/commands/signals.go, ForwardAllSignals), and once it exits
  deletes the task and, with --rm, the container (cmd/ctr/commands/run/run.go). A ctr that
  dies first (SIGKILL; or a containerd restart, which breaks its wait) leaves both behind,
  the task still running.
- `ctr containers rm ID...` (cmd/ctr/commands/containers/containers.go, deleteContainer)
  deletes a stopped task with its container, and refuses a running one: `cannot delete a
  non stopped container: {running 0 ...}`.
- `ctr tasks kill [-s SIGNAL] ID` (tasks/kill.go; SIGTERM by default) signals the task;
  `ctr tasks rm [-f] ID...` (tasks/delete.go) deletes a stopped task, refuses a running one
  without -f (task.go, task.Delete: `task must be stopped before deletion: running: failed
  precondition`), and with -f kills it with SIGKILL and waits for it first
  (task_opts.go, WithProcessKill).

The store is <root>/var/lib/containerd/kubecrate-standin-containers.json:
"NAMESPACE/ID" -> {"image": REF, "task": {"pid": PID, "start": START} or null}, START the
process's start time (/proc/PID/stat), so that a reused pid is no task.
"""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from lab.hostcmd import read_json, rooted, write_json

CONTAINERS = "/var/lib/containerd/kubecrate-standin-containers.json"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
KILL_WAIT = 10.0  # tasks rm -f: the killed process is gone within this


@contextlib.contextmanager
def _containers():
    """This root's containers, locked; written back on the way out."""
    path = rooted(CONTAINERS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = read_json(path, {})
        yield found
        write_json(path, found)


def _start_time(pid):
    """The process's start time (field 22 of /proc/PID/stat) while it runs, else None (gone or
    a zombie: a task that has exited)."""
    try:
        with open("/proc/{}/stat".format(pid)) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def running(task):
    return bool(task) and _start_time(task["pid"]) == task["start"]


def _status(task):
    """containerd.Status as ctr prints it (%v of the struct)."""
    return "{{{} 0 0001-01-01 00:00:00 +0000 UTC}}".format(
        "running" if running(task) else "stopped")


def _log(level, message, error=None):
    """A logrus line as ctr writes it to a file or pipe (the text formatter)."""
    print('time="{}" level={} msg={}{}'.format(
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), level, json.dumps(message),
        " error=" + json.dumps(error) if error else ""), file=sys.stderr)


def _fail(message):
    print("ctr: " + message, file=sys.stderr)
    return 1


def _not_found(namespace, cid):
    return 'container "{}" in namespace "{}": not found'.format(cid, namespace)


def run(namespace, cid, image, argv, env=None, rm=False, timeout=None):
    """`ctr run`: the task `argv` in container `cid`; its exit code."""
    key = namespace + "/" + cid
    with _containers() as found:
        if key in found:
            return _fail('container "{}": already exists'.format(cid))
        found[key] = {"image": image, "task": None}
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    task = {"pid": proc.pid, "start": _start_time(proc.pid)}
    with _containers() as found:
        if key in found:
            found[key]["task"] = task

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)
    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    with _containers() as found:
        entry = found.get(key)
        if entry is not None and entry["task"] in (None, task):
            if rm:
                del found[key]
            else:
                entry["task"] = None
    return 128 - code if code < 0 else code


def containers_rm(namespace, ids):
    """`ctr containers rm ID...`: the first error is ctr's, each one logged."""
    failed = None
    for cid in ids:
        with _containers() as found:
            entry = found.get(namespace + "/" + cid)
            if entry is None:
                problem = _not_found(namespace, cid)
            elif running(entry["task"]):
                problem = "cannot delete a non stopped container: " + _status(entry["task"])
            else:  # a stopped task is deleted with it
                del found[namespace + "/" + cid]
                continue
        _log("error", 'failed to delete container "{}"'.format(cid), problem)
        failed = failed or problem
    return _fail(failed) if failed else 0


def _task(namespace, cid):
    """(entry's task, None) or (None, ctr's error)."""
    with _containers() as found:
        entry = found.get(namespace + "/" + cid)
    if entry is None:
        return None, _not_found(namespace, cid)
    if not entry["task"]:
        return None, "no running task found: task {} not found: not found".format(cid)
    return entry["task"], None


def _signal_number(name):
    """moby/sys/signal ParseSignal: a number, NAME or SIGNAME."""
    if name.isdigit():
        return int(name)
    name = name.upper()
    number = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
    if not isinstance(number, int):
        raise ValueError("Invalid signal: " + name)
    return int(number)


def tasks_kill(namespace, args):
    """`ctr tasks kill [-s SIGNAL] [-a] ID`."""
    name, rest = "SIGTERM", []
    while args:
        arg = args.pop(0)
        if arg in ("-s", "--signal"):
            name = args.pop(0) if args else ""
        elif arg.startswith("--signal="):
            name = arg.split("=", 1)[1]
        elif arg not in ("-a", "--all"):
            rest.append(arg)
    if not rest:
        return _fail("container id must be provided")
    try:
        number = _signal_number(name)
    except ValueError as err:
        return _fail(str(err))
    task, problem = _task(namespace, rest[0])
    if problem:
        return _fail(problem)
    if not running(task):  # the shim's stopped state: runc process/init_state.go Kill
        return _fail("process already finished: not found")
    os.kill(task["pid"], number)
    return 0


def tasks_rm(namespace, args):
    """`ctr tasks rm [-f] ID...`: the first error is ctr's, each one logged."""
    force = any(a in ("-f", "--force") for a in args)
    failed = None
    for cid in [a for a in args if not a.startswith("-")]:
        task, problem = _task(namespace, cid)
        if problem:
            _log("error", "failed to load task from " + cid, problem)
        elif running(task) and not force:
            problem = "task must be stopped before deletion: running: failed precondition"
            _log("error", "unable to delete " + cid, problem)
        else:
            killed = running(task)
            if killed:  # WithProcessKill: SIGKILL, then wait for it to be gone
                os.kill(task["pid"], signal.SIGKILL)
                deadline = time.monotonic() + KILL_WAIT
                while running(task) and time.monotonic() < deadline:
                    time.sleep(0.05)
            with _containers() as found:
                entry = found.get(namespace + "/" + cid)
                if entry is not None and entry["task"] == task:
                    entry["task"] = None
            if killed:
                _log("warning", "task {} exit with non-zero exit code 137".format(cid))
        failed = failed or problem
    return _fail(failed) if failed else 0


def command(namespace, words):
    """`ctr containers|tasks ...` (words after the global options), or None for another
    command."""
    group, verb, rest = (words + ["", ""])[0], (words + ["", ""])[1], words[2:]
    removal = ("rm", "delete", "del", "remove")
    if group in ("containers", "container", "c") and verb in removal:
        ids = [a for a in rest if not a.startswith("-")]
        return containers_rm(namespace, ids) if ids else _fail(
            "must specify at least one container to delete: invalid argument")
    if group in ("tasks", "task", "t") and verb == "kill":
        return tasks_kill(namespace, list(rest))
    if group in ("tasks", "task", "t") and verb in removal:
        return tasks_rm(namespace, rest)
    return None


def split_globals(args):
    """ctr's global options before the command: (namespace, the words after them)."""
    namespace, rest = os.environ.get("CONTAINERD_NAMESPACE") or "default", list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        name, _, value = flag.partition("=")
        if not value and name in ("-n", "--namespace", "-a", "--address", "--timeout",
                                  "--connect-timeout"):
            value = rest.pop(0) if rest else ""
        if name in ("-n", "--namespace"):
            namespace = value
    return namespace, rest
