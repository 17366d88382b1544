#!/usr/bin/env python3
"""kubecrate-standin: systemctl for namespace hosts (self-contained; put it on PATH as `systemctl`).

Unit state lives under <root>/run/kubecrate-standin/units/<unit>.json, <root> being
$KUBECRATE_ROOT (default /). Units named in $KUBECRATE_SYSTEMCTL_RUN (comma list, default
"kubelet") really run: `start` launches <root>/usr/bin/<unit>, <root>/usr/local/bin/<unit> or
<unit> from PATH (else the unit's own ExecStart= program under the root, else the stand-in on
PATH named as ExecStart's program, such as `ctr` for kubecrate-registry) as a detached daemon
(pid in <root>/run/kubecrate-standin/<unit>.pid, output in
<root>/var/log/kubecrate-standin/<unit>.log); every other unit only records its state, so the
installer can enable docker, chronyd, keepalived, ... without touching the real machine.

A timer (NAME.timer) only records its state, after the checks systemd makes when it starts
one (timer_problem); it never fires.

As on CentOS, a unit needs a unit file: `start`, `restart` and `enable` of a unit with no
<unit>.service under the root's /etc/systemd/system, /run/systemd/system or
/usr/lib/systemd/system fail with "Unit <unit>.service not found." (exit 5, systemd's
EXIT_NOTINSTALLED: src/systemctl/systemctl.c of systemd 219, the `start` verb's
"Failed to start %s: Unit not found."). A unit that really runs gets the command line systemd
would build (systemd.service(5) "Command lines", systemd.exec(5) Environment=/EnvironmentFile=):
the unit file and its drop-ins <unit>.service.d/*.conf (sorted by name, later ones win, an empty
`ExecStart=` resets it), Environment= assignments, then EnvironmentFile= files (a leading `-`
means optional; their values override Environment=), `$VAR` split on whitespace into words and
`${VAR}` kept as one word. Its ExecStartPre= commands run first, each to its end (start_pre);
one that fails stops the start unless it has the `-` prefix (systemd.service(5)).
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

USAGE = "usage: systemctl [--now] [-q] start|stop|restart|enable|disable|is-active|is-enabled|" \
        "status|daemon-reload|reset-failed|mask|unmask UNIT..."


def root():
    return os.path.abspath(os.environ.get("KUBECRATE_ROOT") or "/")


def under_root(path):
    return os.path.join(root(), path.lstrip("/"))


def run_units():
    return {u.strip() for u in os.environ.get("KUBECRATE_SYSTEMCTL_RUN", "kubelet").split(",")}


UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system")
EXIT_NOTINSTALLED = 5


def unit_file(unit):
    """The unit's file under the root, by systemd's search order, or None. `unit` is a
    service's name without .service, or NAME.timer."""
    filename = unit if unit.endswith(".timer") else unit + ".service"
    for folder in UNIT_DIRS:
        path = under_root("%s/%s" % (folder, filename))
        if os.path.isfile(path):
            return path
    return None


TIMER_VALUES = ("OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec",
                "OnUnitInactiveSec", "OnCalendar")


def timer_problem(unit):
    """Why systemd refuses to start timer `unit` (src/core/timer.c): timer_verify() fails a
    timer with none of TIMER_VALUES ("Timer unit lacks value setting. Refusing."), and
    timer_start() one whose unit to trigger (Unit=, else NAME.service) has no unit file
    ("Refusing to start, unit to trigger not loaded."). None when it starts."""
    section, keys = None, {}
    with open(unit_file(unit)) as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[Timer]" and "=" in line:
                key, value = line.split("=", 1)
                keys[key.strip()] = value.strip()
    if not any(keys.get(k) for k in TIMER_VALUES):
        return "Timer unit lacks value setting. Refusing."
    target = unit_name(keys.get("Unit") or unit[:-len(".timer")] + ".service")
    if not unit_file(target):
        return "Refusing to start, unit to trigger not loaded."
    return None


def _unit_lines(unit):
    """(key, value) of the [Service] section of the unit file, then of its drop-ins."""
    files = [unit_file(unit)]
    drop_ins = {}
    for folder in reversed(UNIT_DIRS):  # /etc overrides /run overrides /usr/lib, by name
        path = under_root("%s/%s.service.d" % (folder, unit))
        for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
            if name.endswith(".conf"):
                drop_ins[name] = os.path.join(path, name)
    files += [drop_ins[name] for name in sorted(drop_ins)]
    pairs = []
    for path in files:
        section = None
        with open(path) as f:
            for raw in f:
                line = raw.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("["):
                    section = line
                elif section == "[Service]" and "=" in line:
                    key, value = line.split("=", 1)
                    pairs.append((key.strip(), value.strip()))
    return pairs


def _env_file(path, env):
    """KEY=VALUE lines of an EnvironmentFile (quotes removed, # and ; comments skipped)."""
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key.strip()] = value


def _exec_lines(unit):
    """The unit's environment (Environment=, then EnvironmentFile=), its ExecStartPre= lines
    (an empty one resets the list) and its ExecStart= (None without one)."""
    env, files, pre, command = {}, [], [], None
    for key, value in _unit_lines(unit):
        if key == "Environment":
            for word in shlex.split(value):
                if "=" in word:
                    name, val = word.split("=", 1)
                    env[name] = val
        elif key == "EnvironmentFile":
            files.append(value)
        elif key == "ExecStartPre":
            pre = pre + [value] if value else []
        elif key == "ExecStart":
            command = value or None
    for value in files:
        optional = value.startswith("-")
        path = under_root(value.lstrip("-"))
        if os.path.isfile(path):
            _env_file(path, env)
        elif not optional:
            raise SystemExit("Failed to load environment files: %s: No such file or directory"
                             % value)
    return env, pre, command


EXEC_PREFIXES = "@-:+!"  # systemd.service(5) "Command lines", Table 1: in any order


def _argv(command, env):
    """A command line's argv, its prefixes dropped, $VAR and ${VAR} expanded."""
    argv = []
    for word in shlex.split(command.lstrip(EXEC_PREFIXES)):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:  # $VAR: split into words; an empty value gives none
            argv.extend(env.get(whole.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                               lambda m: env.get(m.group(1), ""), word))
    return argv


def exec_start(unit):
    """The argv systemd would run for the unit's ExecStart= (None without an ExecStart)."""
    env, _pre, command = _exec_lines(unit)
    return None if command is None else _argv(command, env)


def exec_start_pre(unit):
    """(failure ignored, argv) of each ExecStartPre=, in order: a `-` among the prefixes means
    its failure is recorded but has no further effect (systemd.service(5))."""
    env, pre, _command = _exec_lines(unit)
    return [("-" in value[:len(value) - len(value.lstrip(EXEC_PREFIXES))], _argv(value, env))
            for value in pre]


def unit_name(arg):
    return arg[:-8] if arg.endswith(".service") else arg


def state_file(unit):
    return under_root("/run/kubecrate-standin/units/%s.json" % unit)


def load(unit):
    try:
        with open(state_file(unit)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"enabled": False, "active": False, "masked": False}


def save(unit, state):
    path = state_file(unit)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(state, f, sort_keys=True)
    os.replace(path + ".tmp", path)


def pid_file(unit):
    return under_root("/run/kubecrate-standin/%s.pid" % unit)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def running_pid(unit):
    try:
        with open(pid_file(unit)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def binary(unit):
    for folder in ("/usr/bin", "/usr/local/bin"):
        path = under_root(folder + "/" + unit)
        if root() != "/" and os.access(path, os.X_OK):
            return path
    return shutil.which(unit)


def own_program(command):
    """ExecStart's program under the root when it is no daemon of the lab (say the installer's
    bundle server, a .pyz): run as systemd runs it, argv as written (systemd.service(5):
    an absolute path), with no --kubecrate-root= added."""
    if not command or not command[0].startswith("/"):
        return None
    path = under_root(command[0])
    return path if root() != "/" and os.access(path, os.X_OK) else None


def stood_in(command):
    """ExecStart's program when the lab stands in for it on PATH (say /usr/bin/ctr, which
    kubecrate-registry runs): that stand-in, argv as written; it finds the root in
    $KUBECRATE_ROOT."""
    if not command or not command[0].startswith("/"):
        return None
    found = shutil.which(os.path.basename(command[0]))
    # never the host's own program (the real ctr would talk to the machine's containerd)
    real = os.path.realpath(command[0])
    return found if found and os.path.realpath(found) != real else None


def start(unit):
    if unit not in run_units() or running_pid(unit):
        return
    command = exec_start(unit)
    exe = binary(unit)
    tail = ["--kubecrate-root=" + root()]
    # the lab's stand-in before the root's file of that path: a root with containerd.io holds
    # the mirror world's placeholder /usr/bin/ctr, which would exit at once
    if not exe and stood_in(command):
        exe, tail = stood_in(command), []
    elif not exe and own_program(command):
        exe, tail = own_program(command), []
    if not exe:
        raise SystemExit("Failed to start %s.service: Unit %s.service not found." % (unit, unit))
    command = command or [exe]
    log = under_root("/var/log/kubecrate-standin/%s.log" % unit)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    env = dict(os.environ, KUBECRATE_ROOT=root())
    for optional, argv in exec_start_pre(unit):
        if start_pre(argv, log, env) != 0 and not optional:
            raise SystemExit("Job for %s.service failed because the control process exited "
                             "with error code." % unit)
    with open(log, "ab") as out:
        proc = subprocess.Popen([exe] + command[1:] + tail,
                                stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=env, start_new_session=True)
    os.makedirs(os.path.dirname(pid_file(unit)), exist_ok=True)
    with open(pid_file(unit), "w") as f:
        f.write("%d\n" % proc.pid)


PRE_TIMEOUT = 90  # systemd's DefaultTimeoutStartSec, which ExecStartPre= runs within


def start_pre(argv, log, env):
    """Run one ExecStartPre= command to its end, as systemd does before ExecStart=: the lab's
    stand-in of its program (say /usr/bin/ctr) or its program under the root, output in the
    unit's log; its exit code (203, systemd's EXIT_EXEC, when neither is there: the stand-in
    never runs the machine's own program)."""
    exe = stood_in(argv) or own_program(argv)
    with open(log, "ab") as out:
        if not exe:
            out.write(("ExecStartPre=%s: no lab stand-in or program under the root\n"
                       % " ".join(argv)).encode())
            return 203
        try:
            return subprocess.run([exe] + argv[1:], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=out, env=env, timeout=PRE_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            out.write(("ExecStartPre=%s: timed out\n" % " ".join(argv)).encode())
            return 1


def stop(unit):
    pid = running_pid(unit)
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)
        if not alive(pid):
            return


def is_active(unit, state):
    if unit in run_units():
        return running_pid(unit) is not None
    return state["active"]


def main(argv):
    flags = {a for a in argv if a.startswith("-")}
    args = [a for a in argv if not a.startswith("-")]
    quiet = bool(flags & {"-q", "--quiet"})
    if not args:
        print(USAGE, file=sys.stderr)
        return 1
    verb, units = args[0], [unit_name(u) for u in args[1:]]
    if verb in ("daemon-reload", "reset-failed"):
        return 0
    if not units:
        print("Too few arguments.", file=sys.stderr)
        return 1
    code = 0
    for unit in units:
        state = load(unit)
        if verb in ("start", "restart", "enable", "reload") and not unit_file(unit):
            if verb == "enable":
                print("Failed to execute operation: No such file or directory", file=sys.stderr)
                return 1
            shown = unit if unit.endswith(".timer") else unit + ".service"
            print("Failed to %s %s: Unit %s not found." % (verb, shown, shown),
                  file=sys.stderr)
            return EXIT_NOTINSTALLED
        if unit.endswith(".timer") and (verb in ("start", "restart") or
                                        (verb == "enable" and "--now" in flags)):
            problem = timer_problem(unit)
            if problem:  # the job fails; systemctl says so and exits 1
                print("Job for %s failed. (%s)" % (unit, problem), file=sys.stderr)
                return 1
        if verb in ("start", "restart") or (verb == "enable" and "--now" in flags):
            if state["masked"]:
                print("Failed to start %s.service: Unit %s.service is masked." % (unit, unit),
                      file=sys.stderr)
                return 1
            if verb == "restart":
                stop(unit)
            start(unit)
            state["active"] = True
        if verb in ("stop",) or (verb == "disable" and "--now" in flags):
            stop(unit)
            state["active"] = False
        if verb in ("enable", "disable"):
            state["enabled"] = verb == "enable"
        if verb in ("mask", "unmask"):
            state["masked"] = verb == "mask"
        if verb == "is-active":
            active = is_active(unit, state)
            if not quiet:
                print("active" if active else "inactive")
            code = code or (0 if active else 3)
        elif verb == "is-enabled":
            word = "masked" if state["masked"] else ("enabled" if state["enabled"] else "disabled")
            if not quiet:
                print(word)
            code = code or (0 if state["enabled"] else 1)
        elif verb == "status":
            active = is_active(unit, state)
            print("* %s.service (kubecrate stand-in)\n   Loaded: loaded (%s)\n   Active: %s"
                  % (unit, "enabled" if state["enabled"] else "disabled",
                     "active (running)" if active else "inactive (dead)"))
            code = code or (0 if active else 3)
        elif verb not in ("start", "stop", "restart", "enable", "disable", "mask", "unmask"):
            print("Unknown command verb %s." % verb, file=sys.stderr)
            return 1
        save(unit, state)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
