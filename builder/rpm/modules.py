"""EL8/EL9 modularity: the packages dnf on the host would see, as a filter in front of the solver.

    view = module_view(repos)               # repos: loaded repodata.Repo objects
    view.check_requests(["container-selinux"])  # ModuleError for a package dnf hides
    resolve(requests, view.repos, ...)      # the same repos, minus what dnf filters out

AppStream publishes every stream of a module side by side; dnf offers only the *active* ones
(dnf.modularity(7), "Package filtering"): a stream is active when `modulemd-defaults` makes it
the default, or an active stream requires it. The rules applied here are the ones that man page
states:
- a *modular* package is one listed under `artifacts: rpms:` of a modulemd document; it is
  visible only when its stream is active (non-default streams' packages are invisible);
- a *non-modular* package whose name or provide matches the name of a binary artifact of an
  active stream is filtered out, across all repos (so the module's older build wins over a
  newer non-modular one);
- repos without `modules` metadata take part only through that second rule.
- every version and context of an active stream stays visible (dnf lists them all), but a
  default stream is active only when a build of its newest version runs on the target's
  platform stream (`el8` for every EL8 minor: os-release PLATFORM_ID); otherwise dnf reports
  "Modular dependency problem: ... nothing provides module(platform:el9)" and offers nothing
  of the stream (what dnf 4.14 does, checked in
  tests/integration/builder/rpm/test_modular_bundle_repo.py).
What is not modelled: `dnf module enable` by a user (the host is a fresh install, so nothing is
enabled), demodularized RPM lists and modulemd-obsoletes.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import yaml

from builder.errors import BuildError
from builder.rpm.metadata import Package

__all__ = ["ModuleError", "ModuleStream", "ModuleView", "module_view", "parse_modules"]

# name-epoch:version-release.arch, as modulemd lists artifacts (the epoch is always written)
_ARTIFACT = re.compile(r"^(?P<name>.+)-(?P<epoch>\d+):(?P<version>[^-]+)-(?P<release>[^-]+)"
                       r"\.(?P<arch>[^.]+)$")
_KNOWN = {"modulemd", "modulemd-defaults", "modulemd-obsoletes", "modulemd-translations"}
_MAX_DEPTH = 20  # module dependency chains are a few links long; a loop must not spin


class ModuleError(BuildError):
    """modules metadata is malformed, or a requested package is only in a stream dnf hides."""


class ModuleStream(NamedTuple):
    """One modulemd v2 document: one build (version, context) of one stream."""

    name: str
    stream: str
    version: int
    context: str
    repo: str
    artifacts: Tuple[Tuple[str, int, str, str, str], ...]  # (name, epoch, version, rel, arch)
    requires: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()  # module -> streams ([] = any)
    source: str = ""  # "appstream: repodata/…-modules.yaml.xz", the file that declared it

    @property
    def nsvc(self) -> str:
        return f"{self.name}:{self.stream}:{self.version}:{self.context}"

    def runs_on(self, platform: Optional[str]) -> bool:
        """Whether this build's `requires: platform` admits `platform` (None: any)."""
        wanted = dict(self.requires).get("platform", ())
        if platform is None or not wanted:
            return True
        if f"-{platform}" in wanted:
            return False
        return platform in wanted or all(w.startswith("-") for w in wanted)


def parse_modules(data: bytes, where: str) -> Tuple[List[ModuleStream], Dict[str, str]]:
    """modulemd v2 documents and modulemd-defaults v1 of one `modules.yaml`: the streams, and
    the default stream by module name. Unknown document kinds and versions are errors."""
    try:
        documents = [d for d in yaml.safe_load_all(data) if d is not None]
    except yaml.YAMLError as err:
        raise ModuleError(f"{where}: not valid YAML ({err})") from None
    repo = where.split(":", 1)[0]
    streams: List[ModuleStream] = []
    defaults: Dict[str, str] = {}
    for index, doc in enumerate(documents):
        at = f"{where}: document {index + 1}"
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise ModuleError(f"{at}: not a mapping with `document` and `data`")
        kind, body = doc.get("document"), doc["data"]
        if kind not in _KNOWN:
            raise ModuleError(f"{at}: unknown document kind {kind!r}",
                              hint="expected one of " + ", ".join(sorted(_KNOWN)))
        if kind == "modulemd":
            if doc.get("version") != 2:
                raise ModuleError(f"{at}: modulemd version {doc.get('version')!r}; "
                                  "repositories publish version 2")
            streams.append(_stream(body, repo, at)._replace(source=where))
        elif kind == "modulemd-defaults":
            module, stream = body.get("module"), body.get("stream")
            if not module:
                raise ModuleError(f"{at}: modulemd-defaults without `module`")
            if stream is not None:
                defaults[str(module)] = str(stream)
    return streams, defaults


def _stream(body: Mapping[str, Any], repo: str, at: str) -> ModuleStream:
    missing = [k for k in ("name", "stream", "version", "context") if body.get(k) is None]
    if missing:
        raise ModuleError(f"{at}: modulemd lacks {', '.join(missing)}")
    artifacts = []
    for text in ((body.get("artifacts") or {}).get("rpms") or ()):
        match = _ARTIFACT.match(str(text))
        if not match:
            raise ModuleError(f"{at} ({body['name']}:{body['stream']}): artifact {text!r} is "
                              "not name-epoch:version-release.arch")
        if match["arch"] in ("src", "nosrc"):
            continue  # a modular source package filters nothing (dnf.modularity(7))
        artifacts.append((match["name"], int(match["epoch"]), match["version"],
                          match["release"], match["arch"]))
    requires: Dict[str, Set[str]] = {}
    for dep in body.get("dependencies") or ():
        for module, streams in ((dep or {}).get("requires") or {}).items():
            requires.setdefault(str(module), set()).update(str(s) for s in streams or ())
    return ModuleStream(str(body["name"]), str(body["stream"]), int(body["version"]),
                        str(body["context"]), repo, tuple(artifacts),
                        tuple(sorted((m, tuple(sorted(s))) for m, s in requires.items())))


def _key(p: Package) -> Tuple[str, int, str, str, str]:
    return (p.name, p.epoch, p.version, p.release, p.arch)


class _Filtered:
    """A repo as dnf on the host sees it: the same object, with hidden packages left out."""

    def __init__(self, repo: Any, packages: Tuple[Package, ...]):
        self._repo = repo
        self.packages = packages

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def __repr__(self) -> str:
        return f"<visible {self._repo!r}: {len(self.packages)} packages>"


class ModuleView(NamedTuple):
    """The repos with modular filtering applied, and why each hidden package is hidden."""

    repos: Tuple[Any, ...]
    active: Tuple[str, ...]  # "name:stream", sorted
    streams: Tuple[ModuleStream, ...]
    defaults: Mapping[str, str]
    hidden: Mapping[str, Tuple[Tuple[str, str, str], ...]]  # name -> (nevra, repo, why)

    def check_requests(self, requests: Iterable[str]) -> None:
        """Raise ModuleError naming the module and repo of every request (a name or a
        `name-version[-release]` pin) that only packages dnf would hide can satisfy."""
        visible = {p.name: p for r in self.repos for p in r.packages}
        forms = {f for r in self.repos for p in r.packages for f in _pin_forms(p.nevra, p.name)}
        problems = []
        for text in requests:
            if text in visible or text in forms:
                continue
            matches = [entry for name, entries in self.hidden.items() for entry in entries
                       if text == name or text in _pin_forms(entry[0], name)]
            if matches:
                problems.append(f"{text}: " + "; ".join(
                    f"{nevra} ({repo}) {why}" for nevra, repo, why in matches))
        if problems:
            raise ModuleError(
                "requested package(s) that dnf on the target would not offer: "
                + " | ".join(problems),
                hint="dnf shows only non-modular packages and the default streams' packages "
                     "(modulemd-defaults); pick a package the default stream carries")


def _pin_forms(nevra: str, name: str) -> Set[str]:
    """The request texts that pin this package: name-version, name-version-release, each
    with and without the epoch."""
    evr = nevra[len(name) + 1:].rsplit(".", 1)[0]
    plain = evr.split(":", 1)[-1]
    version = plain.rsplit("-", 1)[0]
    epoch = evr.split(":", 1)[0] + ":" if ":" in evr else ""
    return {f"{name}-{v}" for v in (plain, version, epoch + plain, epoch + version)}


def module_view(repos: Sequence[Any], platform: Optional[str] = None) -> ModuleView:
    """Apply dnf's modular filtering to `repos` (objects with `id`, `packages`, and `has()` /
    `metadata()` for the `modules` entry) for a host whose platform stream is `platform`
    ("el8"; None admits every build). Repos without modules metadata pass unchanged unless a
    non-modular package shadows an active stream's package."""
    streams: List[ModuleStream] = []
    defaults: Dict[str, str] = {}
    for repo in repos:
        if getattr(repo, "has", None) and repo.has("modules"):
            entry = getattr(getattr(repo, "repomd", None), "files", {}).get("modules")
            found, found_defaults = parse_modules(
                repo.metadata("modules"), f"{repo.id}: {entry.href if entry else 'modules.yaml'}")
            streams += found
            for name, stream in found_defaults.items():
                defaults.setdefault(name, stream)  # the first repo's default wins
    if not streams:
        return ModuleView(tuple(repos), (), (), defaults, {})
    broken = _broken_defaults(streams, defaults, platform)
    active = _active(streams, {m: s for m, s in defaults.items() if m not in broken})

    def live(s: ModuleStream) -> bool:
        return (s.name, s.stream) in active

    owner: Dict[Tuple[str, int, str, str, str], ModuleStream] = {}
    for s in streams:
        for artifact in s.artifacts:
            if live(s) or artifact not in owner:
                owner[artifact] = s
    shadowing = {a[0] for s in streams if live(s) for a in s.artifacts}
    hidden: Dict[str, List[Tuple[str, str, str]]] = {}
    views = []
    for repo in repos:
        keep = []
        for p in repo.packages:
            module = owner.get(_key(p))
            if module is not None and not live(module):
                default = defaults.get(module.name)
                why = (f"is in the default stream {module.name}:{module.stream}, whose newest "
                       f"build {broken[module.name]} does not run on platform {platform}: dnf "
                       "reports a modular dependency problem and offers nothing of the stream"
                       if module.name in broken and module.stream == default else
                       f"is in stream {module.name}:{module.stream}, not the default stream "
                       f"{module.name}:{default}" if default else
                       f"is in module {module.name} (stream {module.stream}), which has no "
                       "default stream")
                why += f" (per {module.source})"
                hidden.setdefault(p.name, []).append((p.nevra, repo.id, why))
            elif module is None and ({p.name} | {d.name for d in p.provides}) & shadowing:
                hidden.setdefault(p.name, []).append(
                    (p.nevra, repo.id, "is non-modular, filtered out by an active stream's "
                     "package of the same name"))
            else:
                keep.append(p)
        views.append(repo if len(keep) == len(repo.packages) else _Filtered(repo, tuple(keep)))
    return ModuleView(tuple(views), tuple(sorted(f"{n}:{s}" for n, s in active)),
                      tuple(streams), defaults, {k: tuple(v) for k, v in hidden.items()})


def _broken_defaults(streams: Sequence[ModuleStream], defaults: Mapping[str, str],
                     platform: Optional[str]) -> Dict[str, str]:
    """Module name -> the newest build of its default stream, when no build of that newest
    version runs on `platform` (dnf's module solver then fails on its best candidate)."""
    broken: Dict[str, str] = {}
    for module, stream in defaults.items():
        builds = [s for s in streams if (s.name, s.stream) == (module, stream)]
        if not builds or platform is None:
            continue
        newest = max(b.version for b in builds)
        tops = [b for b in builds if b.version == newest]
        if not any(b.runs_on(platform) for b in tops):
            broken[module] = tops[0].nsvc
    return broken


def _active(streams: Sequence[ModuleStream], defaults: Mapping[str, str]) -> Set[Tuple[str, str]]:
    """Default streams, then the streams they require (module dependencies), transitively."""
    known = {(s.name, s.stream) for s in streams}
    active = {(m, s) for m, s in defaults.items() if (m, s) in known}
    for _ in range(_MAX_DEPTH):
        added: Set[Tuple[str, str]] = set()
        for s in streams:
            if (s.name, s.stream) not in active:
                continue
            for module, wanted in s.requires:
                if module == "platform" or any(m == module for m, _ in active | added):
                    continue
                choices = [w for w in wanted if not w.startswith("-")] or \
                    sorted(st for m, st in known if m == module)
                choice = defaults.get(module) if defaults.get(module) in choices else \
                    next((c for c in choices if (module, c) in known), None)
                if choice is not None:
                    added.add((module, choice))
        if not added:
            break
        active |= added
    return active
