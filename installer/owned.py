"""What kubecrate changed on a host besides files: the systemd units it enabled, started,
disabled or stopped, and the firewalld rules it added. Files have their own ledger and kept
originals (installer/host.py); these changes are recorded in state.json under "owned", by the
step that made them, so that `reset` undoes exactly them and nothing else.

`--root` redirects files only: `systemctl` and `firewall-cmd` always act on the machine the
installer runs on. A keepalived or firewalld the operator runs (or a workstation's own, under
`--root`) is therefore never touched unless this record says kubecrate changed it.
"""

from typing import Any, Dict, List, Sequence

from installer.host import Host
from installer.runner import Runner
from installer.state import OWNED_KEY as OWNED
from installer.state import State

# What undoes each recorded unit change, in the order reset applies them.
UNDO_UNIT = (("started", "stop"), ("enabled", "disable"), ("masked", "unmask"),
             ("stopped", "start"), ("disabled", "enable"))


def _owned(state: State) -> Dict[str, Any]:
    return state.data.setdefault(OWNED, {"units": {}, "firewall": []})


def note_unit(host: Host, step: str, unit: str, change: str) -> None:
    """Record that `step` made `change` (see VERB_CHANGE's values) to
    `unit`. Only a change kubecrate made is recorded: a unit that was already so is not."""
    if host.dry_run:
        return
    state = State.load(host)
    record = _owned(state)["units"].setdefault(unit, {"step": step, "changes": []})
    if change not in record["changes"]:
        record["changes"].append(change)
    state.save(owned=True)


VERB_CHANGE = {"enable": "enabled", "start": "started", "disable": "disabled", "stop": "stopped",
               "mask": "masked"}  # e.g. host prep masking swap units


def systemctl(host: Host, runner: Runner, step: str, verb: str, unit: str) -> None:
    """`systemctl VERB UNIT`, recorded as a change `step` made (reset undoes it)."""
    runner.run(["systemctl", verb, unit])
    note_unit(host, step, unit, VERB_CHANGE[verb])


def restart_unit(host: Host, runner: Runner, step: str, unit: str) -> None:
    """daemon-reload, enable and restart `unit` (its file just written), recorded as `step`'s
    changes (reset stops and disables it)."""
    runner.run(["systemctl", "daemon-reload"])
    runner.run(["systemctl", "enable", unit], timeout=60)
    note_unit(host, step, unit, "enabled")
    runner.run(["systemctl", "restart", unit], timeout=60,
               hint="see `systemctl status {0}` and `journalctl -u {0}`".format(unit))
    note_unit(host, step, unit, "started")


def note_firewall(host: Host, step: str, rules: Sequence[str]) -> None:
    """Record firewalld rules kubecrate added (permanent), each as the `--add-…` argument(s)
    that added it, e.g. "--add-port=6443/tcp" or "--zone=trusted --add-interface=cni0"."""
    if host.dry_run or not rules:
        return
    state = State.load(host)
    known = _owned(state)["firewall"]
    for rule in rules:
        if not any(entry["rule"] == rule for entry in known):
            known.append({"step": step, "rule": rule})
    state.save(owned=True)


def units(host: Host) -> Dict[str, Dict[str, Any]]:
    return dict(State.load(host).data.get(OWNED, {}).get("units", {}))


def firewall_rules(host: Host) -> List[str]:
    return [e["rule"] for e in State.load(host).data.get(OWNED, {}).get("firewall", [])]


def undo_units(host: Host, runner: Runner, steps: Sequence[str]) -> List[str]:
    """Reverse every recorded unit change made by one of `steps` (stop what kubecrate
    started, disable what it enabled, re-enable what it disabled) and forget it."""
    state = State.load(host)
    recorded = _owned(state)["units"]
    done = []
    for unit in sorted(recorded):
        record = recorded[unit]
        if record.get("step") not in steps:
            continue
        for change, verb in UNDO_UNIT:
            if change in record.get("changes", []):
                runner.run(["systemctl", verb, unit])
                done.append("{} {} ({} {} it)".format(verb, unit, "kubecrate", change))
        if not host.dry_run:
            del recorded[unit]
    if done and not host.dry_run:
        state.save(owned=True)
    return done


def undo_firewall(host: Host, runner: Runner) -> List[str]:
    """Remove every recorded firewalld rule (permanent, then reload) and forget them."""
    state = State.load(host)
    rules = [e["rule"] for e in _owned(state)["firewall"]]
    if not rules:
        return []
    by_zone: Dict[str, List[str]] = {}  # one command per zone: --zone applies to all of it
    for rule in rules:
        parts = rule.split()
        zone = next((p for p in parts if p.startswith("--zone=")), "")
        by_zone.setdefault(zone, []).extend(
            p.replace("--add-", "--remove-", 1) for p in parts if p != zone)
    active = runner.query(["systemctl", "is-active", "firewalld"]).stdout.strip() == "active"
    for zone, removals in sorted(by_zone.items()):
        args = ([zone] if zone else []) + removals
        if active:
            runner.run(["firewall-cmd", "--permanent"] + args)
        else:  # firewall-offline-cmd edits the permanent configuration without the daemon
            runner.run(["firewall-offline-cmd"] + args)
    if active:
        runner.run(["firewall-cmd", "--reload"])
    if not host.dry_run:
        _owned(state)["firewall"] = []
        state.save(owned=True)
    return ["firewalld: remove " + ", ".join(rules)]
