"""The builder/installer boundary (installer/format/__init__.py, docs/architecture.md).

- builder/ imports nothing of installer/ but the package installer/format/;
- installer/format/ imports nothing of installer/ outside itself, so what the builder gets
  is that package and nothing behind it;
- installer/ imports nothing of builder/, and nothing that the hosts' Python 3.6 lacks: only
  its own modules, the dependencies the zipapp bundles (builder/data/installer-requirements.txt)
  and the standard library of CPython 3.6, asked of the real interpreter (scripts/lab/py36.py)
  started with -I -S, so that no site-packages can answer for it.

Imports are read with `ast`, every one of them, including those inside functions. Each
failure names file:line and the import.
"""

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest
from lab.py36 import python36

TOP = Path(__file__).resolve().parents[2]
BOUNDARY = "installer.format"
REQUIREMENTS = TOP / "builder" / "data" / "installer-requirements.txt"
# builder/data/ is the zipapp's own start-up code, run inside the .pyz, not the builder's.
NOT_THE_BUILDER = (TOP / "builder" / "data",)
# A distribution whose import name is not its normalised name.
IMPORT_NAMES = {"pyyaml": "yaml"}


def _module_of(path: Path) -> Tuple[str, bool]:
    """(dotted module name, whether it is a package's __init__) of a file under TOP."""
    parts = list(path.relative_to(TOP).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports(source: str, module: str, is_package: bool = False) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) for everything `source` (the text of `module`) imports: a module,
    or for `from M import n` the name M.n (a submodule or an attribute of M)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base + "." + alias.name


def _imported_modules(source: str) -> Iterator[Tuple[int, str]]:
    """(line, module) for the absolute imports' modules: M of `from M import n`, `import M`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.lineno, node.module


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def builder_violations(source: str, where: str, module: str) -> List[str]:
    """Imports of installer/ other than installer.format, as `where:line: ...`."""
    return ["{}:{}: imports {} (the builder may import only {})".format(
        where, line, name, BOUNDARY)
        for line, name in imports(source, module)
        if _in(name, "installer") and not _in(name, BOUNDARY)]


def boundary_violations(source: str, where: str, module: str, is_package: bool) -> List[str]:
    """Imports, by a module of installer/format/, of installer/ outside that package."""
    return ["{}:{}: imports {} (installer/format/ may import only itself)".format(
        where, line, name)
        for line, name in imports(source, module, is_package)
        if _in(name, "installer") and not _in(name, BOUNDARY)]


def installer_violations(source: str, where: str, module: str, is_package: bool,
                         allowed: Set[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Imports of builder/, and imports of top-level names outside `allowed` (installer and
    the bundled dependencies) as (where:line, module) for the stdlib check."""
    problems, other = [], []
    for line, name in imports(source, module, is_package):
        if _in(name, "builder"):
            problems.append("{}:{}: imports {} (installer/ runs without the builder)".format(
                where, line, name))
    for line, name in _imported_modules(source):
        if name.split(".")[0] not in allowed and not _in(name, "builder"):
            other.append(("{}:{}".format(where, line), name))
    return problems, other


def bundled_imports() -> Set[str]:
    """The import names of the distributions the zipapp bundles."""
    names = set()
    for raw in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        assert match, "{}: cannot read {!r}".format(REQUIREMENTS, raw)
        dist = re.sub(r"[-_.]+", "-", match.group(0)).lower()
        names.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return names


def missing_on_py36(modules: Set[str]) -> Set[str]:
    """The modules CPython 3.6, with no site-packages (-I -S), cannot find."""
    script = ("import importlib.util, json, sys\n"
              "missing = []\n"
              "for name in json.loads(sys.stdin.read()):\n"
              "    try:\n"
              "        found = importlib.util.find_spec(name) is not None\n"
              "    except ImportError:\n"
              "        found = False\n"
              "    if not found:\n"
              "        missing.append(name)\n"
              "print(json.dumps(missing))\n")
    done = subprocess.run([str(python36()), "-I", "-S", "-c", script],
                          input=json.dumps(sorted(modules)).encode("ascii"),
                          capture_output=True, timeout=60,
                          cwd="/", check=True)
    return set(json.loads(done.stdout.decode("ascii")))


def _files(folder: str) -> List[Path]:
    return sorted((TOP / folder).rglob("*.py"))


# ------------------------------------------------------------------------------------ the repo


def test_the_builder_imports_only_installer_format():
    problems = []
    for path in _files("builder"):
        if any(path.is_relative_to(skip) for skip in NOT_THE_BUILDER):
            continue
        module, _ = _module_of(path)
        problems += builder_violations(path.read_text(encoding="utf-8"),
                                       str(path.relative_to(TOP)), module)
    assert not problems, "\n".join(problems)


def test_installer_format_imports_nothing_else_of_the_installer():
    problems = []
    for path in _files("installer/format"):
        module, is_package = _module_of(path)
        problems += boundary_violations(path.read_text(encoding="utf-8"),
                                        str(path.relative_to(TOP)), module, is_package)
    assert not problems, "\n".join(problems)


def test_the_installer_imports_no_builder_and_only_the_stdlib_and_the_bundled_deps():
    allowed = bundled_imports() | {"installer"}
    problems, other = [], []
    for path in _files("installer"):
        module, is_package = _module_of(path)
        found, rest = installer_violations(path.read_text(encoding="utf-8"),
                                           str(path.relative_to(TOP)), module, is_package,
                                           allowed)
        problems += found
        other += rest
    missing = missing_on_py36({name for _, name in other})
    problems += ["{}: imports {}, which is neither in CPython 3.6's standard library nor "
                 "bundled ({})".format(where, name, REQUIREMENTS.relative_to(TOP))
                 for where, name in other if name in missing]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------- the checks can fail


@pytest.mark.parametrize("source, bad", [
    ("from installer.format import minisig\nfrom installer.format.bundle import verify\n", 0),
    ("import installer.format.errors\nfrom installer import format\n", 0),
    ("from installer import __version__\n", 1),  # installer/__init__.py, not the package
    ("from installer.steps import preflight_lb\n", 1),
    ("def lint():\n    from installer.cluster import load_cluster\n", 1),
    ("import installer.runner\nimport installer\n", 2),
    ("from installer import format, runlog\n", 1),
])
def test_builder_check_names_each_import_outside_the_boundary(source, bad):
    problems = builder_violations(source, "builder/x.py", "builder.x")
    assert len(problems) == bad, problems
    assert all(p.startswith("builder/x.py:") for p in problems)


def test_builder_check_names_file_and_line():
    source = "import os\n\nfrom installer.bundlecache import cache_root\n"
    assert builder_violations(source, "builder/bundle/y.py", "builder.bundle.y") == [
        "builder/bundle/y.py:3: imports installer.bundlecache.cache_root (the builder may "
        "import only installer.format)"]


@pytest.mark.parametrize("source, module, is_package, bad", [
    ("from installer.format.errors import UsageError\nfrom . import tarstream\n",
     "installer.format.bundle", False, 0),
    ("from installer.bundlecache import VerifiedReader\n", "installer.format.imagearchive",
     False, 1),
    ("from .. import runlog\n", "installer.format.clikit", False, 1),
    ("from ..steps import unpack\n", "installer.format", True, 1),
])
def test_boundary_check_keeps_the_package_closed(source, module, is_package, bad):
    assert len(boundary_violations(source, "f.py", module, is_package)) == bad


def test_installer_check_refuses_builder_and_sends_the_rest_to_the_stdlib_check():
    source = ("import os\nimport yaml\nfrom builder.cache import Cache\nimport requests\n"
              "from importlib.resources import files\nfrom . import runner\n")
    problems, other = installer_violations(source, "installer/z.py", "installer.z", False,
                                           bundled_imports() | {"installer"})
    assert problems == ["installer/z.py:3: imports builder.cache.Cache (installer/ runs "
                        "without the builder)"]
    assert [name for _, name in other] == ["os", "requests", "importlib.resources"]


def test_the_stdlib_is_python_36s():
    """3.7+ modules and site-packages are missing on the hosts' Python; 3.6 modules are not."""
    assert missing_on_py36({"os", "importlib.util", "fcntl", "typing", "dataclasses",
                            "contextvars", "importlib.resources", "tomllib", "requests",
                            "yaml", "pytest"}) == {
        "dataclasses", "contextvars", "importlib.resources", "tomllib", "requests", "yaml",
        "pytest"}


def test_bundled_names_are_import_names():
    assert {"click", "jinja2", "markupsafe", "yaml", "tqdm", "ecdsa", "six"} <= \
        bundled_imports()
