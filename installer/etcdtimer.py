"""`etcd-backup --schedule`: a systemd timer that runs `etcd-backup --out-dir DIR --keep N`.

The .pyz that installs the timer is copied to PROGRAM first, so the timer does not depend on
where the operator happened to keep it. The service is Type=oneshot; the timer has
Persistent=true, so a run missed while the node was off happens at the next boot
(systemd.timer(5)). Both files are recorded like every file kubecrate writes, so
`reset --host` removes them; `--unschedule` removes them now.
"""

import os
import shutil
from typing import List

from installer.atomic import replace_file
from installer.format.errors import UsageError
from installer.host import Host
from installer.runner import Runner

UNIT = "kubecrate-etcd-backup"
SERVICE = "/etc/systemd/system/{}.service".format(UNIT)
TIMER = "/etc/systemd/system/{}.timer".format(UNIT)
PROGRAM = "/usr/local/lib/kubecrate/kubecrate-installer.pyz"

SERVICE_TEXT = """\
# Written by kubecrate `etcd-backup --schedule`; `etcd-backup --unschedule` removes it.
[Unit]
Description=kubecrate: etcd snapshot into {folder} (keeps {keep})
After=kubelet.service

[Service]
Type=oneshot
ExecStart={program} etcd-backup --out-dir {folder} --keep {keep}
"""

TIMER_TEXT = """\
# Written by kubecrate `etcd-backup --schedule`; `etcd-backup --unschedule` removes it.
[Unit]
Description=kubecrate: etcd snapshot {calendar}

[Timer]
OnCalendar={calendar}
Persistent=true
RandomizedDelaySec=300

[Install]
WantedBy=timers.target
"""


def schedule(root: str, program: str, folder: str, keep: int, calendar: str,
             dry_run: bool = False) -> List[str]:
    """Install and start the timer; returns the changes. `program` is the running .pyz."""
    if keep < 1:
        raise UsageError("--keep must be at least 1, not {}".format(keep))
    if not calendar.strip() or any(c in calendar for c in "\n;"):
        raise UsageError("--on-calendar {!r} is no systemd calendar expression".format(calendar),
                         hint="e.g. daily, hourly, '*-*-* 02:30:00' (systemd.time(7))")
    if not program.endswith(".pyz") or not os.path.isfile(program):
        raise UsageError("the timer runs kubecrate-installer.pyz, and this run is not one "
                         "({})".format(program),
                         hint="run `kubecrate-installer.pyz etcd-backup --schedule` on the node")
    host = Host(root, dry_run=dry_run)
    runner = Runner(root, dry_run=dry_run)
    changes = []
    if not dry_run:
        copy_program(host, program)
    changes.append("copied {} to {}".format(program, PROGRAM))
    for path, text in ((SERVICE, SERVICE_TEXT), (TIMER, TIMER_TEXT)):
        done = host.write(path, text.format(program=PROGRAM, folder=folder, keep=keep,
                                             calendar=calendar))
        if done:
            changes.append("{} {}".format(done.action, path))
    runner.run(["systemctl", "daemon-reload"])
    runner.run(["systemctl", "enable", "--now", UNIT + ".timer"], timeout=60,
               hint="see `systemctl status {}.timer`".format(UNIT))
    changes.append("enabled and started {}.timer ({}, keeps {} in {})".format(
        UNIT, calendar, keep, folder))
    return changes


def copy_program(host: Host, program: str) -> bool:
    """The running .pyz at PROGRAM (atomically), so units do not depend on where the operator
    keeps it; False when it already is the same file."""
    if os.path.abspath(program) == host.path(PROGRAM):
        return False
    os.makedirs(os.path.dirname(host.path(PROGRAM)), exist_ok=True)
    with open(program, "rb") as source:
        replace_file(host.path(PROGRAM), lambda out: shutil.copyfileobj(source, out), 0o755)
    return True


def unschedule(root: str, dry_run: bool = False) -> List[str]:
    host = Host(root, dry_run=dry_run)
    runner = Runner(root, dry_run=dry_run)
    changes = []
    if host.exists(TIMER):
        runner.run(["systemctl", "disable", "--now", UNIT + ".timer"], timeout=60)
        changes.append("stopped and disabled {}.timer".format(UNIT))
    from installer.steps.bundleserver import UNIT_FILE  # runs the same PROGRAM

    kept = (PROGRAM,) if host.exists(UNIT_FILE) else ()
    for path in (p for p in (TIMER, SERVICE, PROGRAM) if p not in kept):
        if host.remove(path):
            changes.append("remove " + path)
    if changes:
        runner.run(["systemctl", "daemon-reload"])
    return changes
