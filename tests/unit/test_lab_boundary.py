"""Who imports the test lab (scripts/lab/, docs/testing.md "Where the lab lives").

- nothing under scripts/ imports tests/: the demo and the benchmarks run on the lab and the
  mirror world, which live in scripts/ next to them;
- the lab and the mirror world import neither the scripts that use them (demo, benchmarks) nor
  pytest: a failure there is an exception a script can show and a test reports as a failure;
- tests/ takes from scripts/ only the lab and the mirror world, never a script's own code;
- a helper module inside one kind of test (tests/unit/, integration/, e2e/, docs/) serves that
  kind only: one that another kind imports is lab code and lives in scripts/lab/ (as the etcd
  lab, scripts/lab/etcdlab.py, which the integration and e2e tests share);
- builder/ and installer/ import none of them, and the kubecrate distribution (setup.cfg
  [options.packages.find]) ships builder/ and installer/ only.

Imports are read with `ast` (test_boundary.imports), those inside functions too; each failure
names file:line and the import.
"""

import configparser
import functools
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
import setuptools

from tests.unit.test_boundary import imports

TOP = Path(__file__).resolve().parents[2]
SCRIPTS = TOP / "scripts"
SHARED = ("lab", "mirrorworld")  # scripts/ packages that tests/ may import
SCRIPT_CODE = ("benchmarks", "demo")  # scripts/ code of its own


def _top(name: str) -> str:
    return name.split(".")[0]


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _imports(source: str, module: str, is_package: bool) -> Tuple[Tuple[int, str], ...]:
    """imports(), parsed once per file for all the checks here."""
    return tuple(imports(source, module, is_package))


def violations(source: str, where: str, module: str, refused: tuple, why: str) -> List[str]:
    """Imports, by `module` (its text `source`), of a top-level package in `refused`."""
    is_package = where.endswith("__init__.py")
    return ["{}:{}: imports {} ({})".format(where, line, name, why)
            for line, name in _imports(source, module, is_package) if _top(name) in refused]


def _check(folder: Path, root: Path, refused: tuple, why: str) -> List[str]:
    problems = []
    for path in sorted(folder.rglob("*.py")):
        problems += violations(path.read_text(encoding="utf-8"), str(path.relative_to(TOP)),
                               _module(path, root), refused, why)
    return problems


# ------------------------------------------------------------------------------------ the repo


def test_scripts_never_import_tests():
    problems = _check(SCRIPTS, SCRIPTS, ("tests",), "scripts/ runs without tests/: the shared "
                      "lab is scripts/lab/")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", SHARED)
def test_the_lab_and_the_mirror_world_import_no_script_and_no_pytest(package):
    problems = _check(SCRIPTS / package, SCRIPTS, ("tests", "pytest") + SCRIPT_CODE,
                      "scripts/{}/ is shared by tests/ and scripts/".format(package))
    assert not problems, "\n".join(problems)


def _kind(path: Path) -> str:
    """unit, integration, e2e or docs for a file under tests/<kind>/; "" at the top of tests/."""
    parts = path.relative_to(TOP / "tests").parts
    return parts[0] if len(parts) > 1 else ""


def _module_file(name: str) -> Optional[Path]:
    """The file of the longest prefix of dotted `name` that is a module of the repository."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        path = TOP.joinpath(*parts[:end])
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def foreign_helpers(source: str, where: Path) -> List[str]:
    """Imports, by the test file `where` (its text `source`), of a helper module (neither a
    test_*.py module nor a conftest.py) that lives in another kind's folder of tests/."""
    module = _module(where, TOP)
    problems = []
    for line, name in _imports(source, module, where.name == "__init__.py"):
        if _top(name) != "tests":
            continue
        target = _module_file(name)
        if (target is None or target.name.startswith("test_")
                or target.name in ("conftest.py", "__init__.py") or not _kind(target)
                or _kind(target) == _kind(where)):
            continue
        problems.append("{}:{}: imports {} from tests/{}/, a helper another kind of test "
                        "shares: lab code, which lives in scripts/lab/".format(
                            where.relative_to(TOP), line, name, _kind(target)))
    return problems


def test_a_helper_of_one_kind_of_test_is_not_shared_with_another():
    problems = []
    for path in sorted((TOP / "tests").rglob("*.py")):
        problems += foreign_helpers(path.read_text(encoding="utf-8"), path)
    assert not problems, "\n".join(problems)


def test_tests_take_only_the_lab_and_the_mirror_world_from_scripts():
    problems = _check(TOP / "tests", TOP, SCRIPT_CODE + ("scripts",),
                      "tests/ may import only {} of scripts/".format(", ".join(SHARED)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", ["builder", "installer"])
def test_the_product_imports_no_lab(package):
    problems = _check(TOP / package, TOP, SHARED + SCRIPT_CODE + ("tests", "scripts"),
                      "{}/ ships without the lab".format(package))
    assert not problems, "\n".join(problems)


def test_the_distribution_ships_builder_and_installer_only():
    config = configparser.ConfigParser()
    config.read(TOP / "setup.cfg", encoding="utf-8")
    find = config["options.packages.find"]
    include = find["include"].split()
    exclude = find.get("exclude", "").split()
    packages = setuptools.find_namespace_packages(str(TOP), include=include, exclude=exclude)
    assert packages and {_top(p) for p in packages} == {"builder", "installer"}, packages


# ------------------------------------------------------------------- the checks can fail


@pytest.mark.parametrize("source, bad", [
    ("from lab import halab\nfrom mirrorworld import yum\n", 0),
    ("from tests.e2e import halab\n", 1),
    ("def f():\n    import tests.conftest\n", 1),
    ("from tests import lbsamples, py36\n", 2),
])
def test_the_scripts_check_names_each_import_of_tests(source, bad):
    problems = violations(source, "scripts/demo.py", "demo", ("tests",), "why")
    assert len(problems) == bad, problems
    assert all(p.startswith("scripts/demo.py:") for p in problems)


def test_the_lab_check_refuses_pytest_and_the_benchmarks():
    source = "import os\nimport pytest\nfrom benchmarks.timing import Result\n"
    assert violations(source, "scripts/lab/x.py", "lab.x", ("tests", "pytest") + SCRIPT_CODE,
                      "why") == ["scripts/lab/x.py:2: imports pytest (why)",
                                 "scripts/lab/x.py:3: imports benchmarks.timing.Result (why)"]


@pytest.mark.parametrize("source, where, bad", [
    # the etcd lab back in tests/integration/, imported by an e2e test: refused
    ("from tests.integration.readyhost import ReadyHost\n", "tests/e2e/test_x.py", 1),
    ("def f():\n    from tests.integration import readyhost\n", "tests/e2e/test_x.py", 1),
    ("from tests.integration.readyhost import ReadyHost\n", "tests/integration/test_x.py", 0),
    ("from tests.unit.installer.test_ha_steps import make_ctx\n", "tests/e2e/test_x.py", 0),
    ("from tests.rpmrepos import pkg\nfrom lab.etcdlab import EtcdLab\n",
     "tests/e2e/test_x.py", 0),
])
def test_the_helper_check_names_each_import_of_another_kinds_helper(source, where, bad):
    problems = foreign_helpers(source, TOP / where)
    assert len(problems) == bad, problems
    assert all(p.startswith(where + ":") for p in problems)
