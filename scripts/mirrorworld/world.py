"""The mirror world's orchestrator: `up`, `down`, `status`, `env`.

`up` generates the yum repos, the release tree and the registries' storage into the cache
folder (each stage reused while its inputs are unchanged), serves `www/` with a private nginx,
starts the registries, and writes `state.json` and the world's mirror presets into the run
folder. `down` stops every process `up` started and removes the run folder.

Folders: cache `${KUBECRATE_MW_CACHE:-<repo>/.cache/mirror-world}` holds `www/` (what nginx
serves) and `work/` (generation inputs and caches); run `${KUBECRATE_MW_RUN:-<cache>/run}`
holds the state, configs, pids and logs of one running world.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import urlsplit

from mirrorworld import nginx, presets

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATE_VERSION = 1
RUN_MARKER = ".mirror-world-run"
LOCK_TIMEOUT = 900.0  # a cold generation by another `up` may take minutes
# Which generator files feed which stage (everything else in this folder feeds all stages).
STAGE_FILES = {
    "yum": ("yum", "rpm", "comps", "gpg"),
    "yum_el8": ("yum", "rpm", "comps", "gpg"),
    "releases": ("releases", "standin", "stand_in", "kube", "apiserver", "tarball"),
    "registry": ("registry", "images"),  # registry.generate keeps its own stamp
}
NOT_INPUTS = {"world.py", "__init__.py", "nginx.py", "presets.py", "variants.py"}

Say = Callable[[str], None]


class WorldError(RuntimeError):
    """The world could not be brought up or down; the message says what and where."""


@dataclass(frozen=True)
class Paths:
    cache: Path
    run: Path

    @classmethod
    def from_env(cls, env: Optional[Dict[str, str]] = None) -> Paths:
        env = os.environ if env is None else env
        cache = Path(env.get("KUBECRATE_MW_CACHE") or REPO / ".cache" / "mirror-world")
        run = Path(env.get("KUBECRATE_MW_RUN") or cache / "run")
        return cls(cache.resolve(), run.resolve())

    @property
    def www(self) -> Path:
        return self.cache / "www"

    @property
    def work(self) -> Path:
        return self.cache / "work"

    @property
    def state(self) -> Path:
        return self.run / "state.json"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def processes(state: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every process a world runs: name, pid, port (when it listens on one)."""
    found = [{"name": "nginx", "pid": state["nginx"]["pid"], "port": state["nginx"]["port"]}]
    for name, entry in sorted(state.get("registry", {}).get("instances", {}).items()):
        found.append({"name": f"registry {name}", "pid": entry.get("pid"), "port": _port(entry)})
        if entry.get("token_pid"):
            found.append(
                {
                    "name": f"token server ({name})",
                    "pid": entry["token_pid"],
                    "port": _port({"url": entry.get("token_url", "")}),
                }
            )
    return found


def _port(entry: Dict[str, Any]) -> Optional[int]:
    try:
        return urlsplit(entry.get("url", "")).port
    except ValueError:
        return None


# --------------------------------------------------------------------------- generation


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Serialise generation between concurrent `up`s sharing one cache."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WorldError(f"{cache}/.lock held for {LOCK_TIMEOUT:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def inputs_hash(stage: str, folder: Path = HERE) -> str:
    """Digest of the generator files a stage depends on (its own and the shared ones)."""
    own = STAGE_FILES.get(stage, ())
    others = tuple(p for s, prefixes in STAGE_FILES.items() if s != stage for p in prefixes)
    digest = hashlib.sha256(f"{stage}:{STATE_VERSION}".encode())
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or "__pycache__" in rel or rel in NOT_INPUTS:
            continue
        if rel.startswith(others) and not rel.startswith(own):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _stage(
    name: str,
    paths: Paths,
    produce: Callable[[], Dict[str, Any]],
    present: Callable[[Dict[str, Any]], bool],
) -> tuple:
    """Run one generation stage unless its stamp says the inputs are unchanged and the outputs
    are still there. Returns (result, seconds, reused)."""
    stamp = paths.work / f"{name}.stamp.json"
    wanted = inputs_hash(name)
    began = time.monotonic()
    try:
        cached = json.loads(stamp.read_text())
        if cached.get("inputs") == wanted and present(cached["result"]):
            return cached["result"], time.monotonic() - began, True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    stamp.unlink(missing_ok=True)
    result = produce()
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"inputs": wanted, "result": result}, indent=1, sort_keys=True))
    os.replace(tmp, stamp)
    return result, time.monotonic() - began, False


def _yum_present(www: Path) -> Callable[[Dict[str, Any]], bool]:
    def check(result: Dict[str, Any]) -> bool:
        return bool(result.get("repos")) and all(
            (www / rel / "repodata" / "repomd.xml").is_file() for rel in result["repos"].values()
        )

    return check


def _releases_present(www: Path) -> Callable[[Dict[str, Any]], bool]:
    def check(result: Dict[str, Any]) -> bool:
        trees = result.get("kubernetes") or {}
        return bool(trees) and all((www / rel).is_dir() for rel in trees.values())

    return check


# --------------------------------------------------------------------------- commands


def read_state(paths: Paths) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None


def is_running(state: Optional[Dict[str, Any]]) -> bool:
    if not state or "nginx" not in state:
        return False
    return all(nginx.alive(p["pid"]) for p in processes(state))


def _stages() -> Dict[str, Any]:
    """The generator modules (yum.py, releases.py, registry.py next to this file)."""
    found = {}
    for name in ("yum", "releases", "registry"):
        try:
            found[name] = importlib.import_module(f"mirrorworld.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mirrorworld.{name}":
                raise
            raise WorldError(f"scripts/mirrorworld/{name}.py is missing") from exc
    return found


def up(paths: Paths, say: Say = _stderr, stages: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Bring the world up (a no-op when it already runs) and return its state."""
    state = read_state(paths)
    if is_running(state):
        say(f"mirror world already up: {paths.state} (nginx {state['nginx']['url']})")
        return state
    if state or paths.run.exists():
        say(f"cleaning up a stopped or partial world in {paths.run}")
        down(paths, say=lambda _m: None, stages=stages)
    stages = stages or _stages()
    began = time.monotonic()
    timings: Dict[str, Any] = {}

    def timed(name: str, seconds: float, reused: Optional[bool]) -> None:
        how = "" if reused is None else (" (cached)" if reused else " (generated)")
        timings[name] = {"seconds": round(seconds, 2), "reused": reused}
        say(f"  {name:<20} {seconds:7.2f} s{how}")

    www, work = paths.www, paths.work
    www.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    say(f"mirror world: cache {paths.cache}")
    with _locked(paths.cache):
        yum, secs, reused = _stage(
            "yum", paths, lambda: stages["yum"].generate(www, work), _yum_present(www)
        )
        timed("yum repos", secs, reused)
        yum_el8 = None
        if hasattr(stages["yum"], "EL8"):  # the EL8/EL9 slice (yum_el8.yaml), same generator
            yum_el8, secs, reused = _stage(
                "yum_el8", paths, lambda: stages["yum"].generate(www, work, stages["yum"].EL8),
                _yum_present(www))
            timed("yum repos el8/9", secs, reused)
        rel, secs, reused = _stage(
            "releases",
            paths,
            lambda: stages["releases"].generate(www, work),
            _releases_present(www),
        )
        timed("release files", secs, reused)
        t0 = time.monotonic()
        marker = work / "registry" / "generated.json"
        before = marker.stat().st_mtime_ns if marker.exists() else None
        stages["registry"].generate(work)
        after = marker.stat().st_mtime_ns if marker.exists() else None
        timed("registry storage", time.monotonic() - t0, before is not None and before == after)

    paths.run.mkdir(parents=True, exist_ok=True)
    (paths.run / RUN_MARKER).write_text("scripts/mirror-world run folder; `down` removes it\n")
    state = {
        "version": STATE_VERSION,
        "cache": str(paths.cache),
        "www": str(www),
        "work": str(work),
        "run": str(paths.run),
        "yum": yum,
        **({"yum_el8": yum_el8} if yum_el8 else {}),
        "releases": rel,
    }
    try:
        t0 = time.monotonic()
        state["nginx"] = nginx.start_nginx(www, paths.run)
        _write_state(paths, state)  # from here on, `down` can find what runs
        timed("nginx", time.monotonic() - t0, None)
        t0 = time.monotonic()
        state["registry"] = stages["registry"].start(work, paths.run)
        _write_state(paths, state)
        timed("registries", time.monotonic() - t0, None)
        state["docker_config"] = presets.docker_config(state, paths.run)
        state["presets"] = presets.write(state, paths.www, paths.run)
        state["base_url"] = state["nginx"]["url"]
        state["started"] = time.time()
        state["timings"] = timings
        _write_state(paths, state)
    except BaseException:
        say("start failed; stopping what was started")
        down(paths, say=lambda _m: None, stages=stages)
        raise
    timed("total", time.monotonic() - began, None)
    say(f"mirror world up: {state['base_url']}  state {paths.state}")
    return state


def _write_state(paths: Paths, state: Dict[str, Any]) -> None:
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, paths.state)


def down(paths: Paths, say: Say = _stderr, stages: Optional[Dict[str, Any]] = None) -> bool:
    """Stop every process of the world in `paths.run` and remove the run folder. Returns
    whether anything was running."""
    state = read_state(paths)
    if state is None and not paths.run.exists():
        say("mirror world is not up")
        return False
    was_running = (
        bool(state) and any(nginx.alive(p["pid"]) for p in processes(state))
        if state and "nginx" in state
        else False
    )
    errors = []
    if state and state.get("registry"):
        try:
            registry = (stages or {}).get("registry") or importlib.import_module(
                "mirrorworld.registry"
            )
            registry.stop(state["registry"])
        except Exception as exc:  # still stop nginx and report afterwards
            errors.append(f"registries: {exc}")
    if state and state.get("nginx"):
        nginx.stop_nginx(state["nginx"])
    survivors = (
        [p for p in processes(state) if nginx.alive(p["pid"])] if state and "nginx" in state else []
    )
    if survivors:
        errors.append(
            "still running: " + ", ".join(f"{p['name']} (pid {p['pid']})" for p in survivors)
        )
    if errors:
        raise WorldError("mirror world did not stop cleanly: " + "; ".join(errors))
    if (paths.run / RUN_MARKER).exists() or paths.state.exists():
        shutil.rmtree(paths.run, ignore_errors=True)
    say("mirror world stopped" if was_running else f"removed stale run folder {paths.run}")
    return was_running


def status(paths: Paths) -> Dict[str, Any]:
    state = read_state(paths)
    if not state or "nginx" not in state:
        return {"up": False, "state": str(paths.state), "processes": []}
    procs = [
        {**p, "alive": nginx.alive(p["pid"]), "listening": nginx.port_open(p["port"])}
        for p in processes(state)
    ]
    return {
        "up": all(p["alive"] for p in procs),
        "state": str(paths.state),
        "base_url": state["nginx"]["url"],
        "presets": state.get("presets", {}),
        "processes": procs,
    }


def env_lines(paths: Paths) -> str:
    state = read_state(paths)
    if not is_running(state):
        raise WorldError("mirror world is not up: run scripts/mirror-world up")
    values = {
        "KUBECRATE_MW_STATE": str(paths.state),
        "KUBECRATE_MW_PRESET": state["presets"]["default"],
        "KUBECRATE_MW_URL": state["nginx"]["url"],
    }
    if "aliyun" in state["presets"]:
        values["KUBECRATE_MW_PRESET_ALIYUN"] = state["presets"]["aliyun"]
    if "el8" in state["presets"]:
        values["KUBECRATE_MW_PRESET_EL8"] = state["presets"]["el8"]
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mirror-world",
        description="A local, offline stand-in for every upstream source kubecrate fetches "
        "from, on 127.0.0.1. Cache: $KUBECRATE_MW_CACHE (default .cache/mirror-world);"
        " run folder: $KUBECRATE_MW_RUN (default <cache>/run).",
        epilog='eval "$(scripts/mirror-world env)" exports KUBECRATE_MW_STATE and '
        "KUBECRATE_MW_PRESET.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="generate (cached) and start everything; a no-op when up")
    sub.add_parser("down", help="stop every process the world started, remove the run folder")
    sub.add_parser("env", help="print export lines for the running world")
    st = sub.add_parser("status", help="show what runs")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))  # builder.inputs.mirrors validates the presets up writes
    paths = Paths.from_env()
    try:
        if args.command == "up":
            up(paths)
        elif args.command == "down":
            down(paths)
        elif args.command == "env":
            sys.stdout.write(env_lines(paths))
        else:
            report = status(paths)
            if args.json:
                print(json.dumps(report, indent=1, sort_keys=True))
            elif not report["processes"]:
                print(f"mirror world is not up ({report['state']})")
            else:
                print(
                    f"mirror world {'up' if report['up'] else 'PARTLY DOWN'}: "
                    f"{report['base_url']}  state {report['state']}"
                )
                for p in report["processes"]:
                    print(
                        f"  {p['name']:<28} pid {p['pid']:<8} port {p['port'] or '-':<6} "
                        f"{'running' if p['alive'] else 'gone'}"
                    )
            return 0 if report["up"] else 1
    except RuntimeError as exc:  # WorldError, NginxError, the generators' errors
        _stderr(f"mirror-world: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
