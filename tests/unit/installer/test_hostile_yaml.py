"""Hostile YAML (docs/security.md): an alias bomb or an oversized file is refused with a clear
error, fast, wherever kubecrate reads YAML (cluster.yaml, recipes, mirror presets, join.yaml)."""

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from installer.format import yamldoc
from installer.format.errors import ExitCode

REPO = Path(__file__).resolve().parents[3]
# "Billion laughs" in 272 bytes: 8 levels of 9 (63 aliases), 9**8 scalars when expanded.
BOMB = "\n".join(["a: &a [x,x,x,x,x,x,x,x,x]"] + [
    "{}: &{} [{}]".format(c, c, ",".join(["*" + p] * 9)) for p, c in zip("abcdefg", "bcdefgh")
]) + "\n"
# What each loader does with the text, run in a child (at most 1 GiB of memory, 30 s) so that
# the old, exploding behaviour fails the test instead of eating the machine's memory.
LOADERS = {
    "cluster.yaml": "from installer.format.cluster import load_cluster as load",
    "recipe": "from builder.inputs.recipefile import load_recipe as load",
    "mirror preset": "from builder.inputs.mirrors import load_preset as load",
    "join.yaml": "from installer.joinfile import load",
}
CHILD = """
import sys
{importer}
from installer.format.errors import KubecrateError
try:
    load(sys.argv[1])
except KubecrateError as err:
    print(err.diagnostics())
    sys.exit(int(err.exit_code))
"""


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_the_bomb_is_the_272_byte_one_of_the_report():
    assert len(BOMB.encode()) <= 272 and BOMB.count("*") == 63


@pytest.mark.parametrize("what", sorted(LOADERS))
def test_an_alias_bomb_is_refused_fast_naming_the_file(tmp_path, what):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHILD.format(importer=LOADERS[what]),
                           str(path)], cwd=str(REPO), capture_output=True, text=True,
                          timeout=30,
                          preexec_fn=_limit_memory)
    assert time.monotonic() - started < 5, "parsing the bomb took too long"
    said = done.stdout.replace(str(path), "<file>")
    assert said.startswith("error: <file>") and "refused" in said and "alias" in said, \
        done.stdout + done.stderr
    assert done.returncode in (ExitCode.ERROR, ExitCode.USAGE), done.stderr


def test_too_many_aliases_are_refused_with_the_line():
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (yamldoc.MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(yamldoc.DocumentError) as err:
        yamldoc.parse(text, "x.yaml")
    assert err.value.message.startswith("x.yaml:2: more than {} YAML aliases".format(
        yamldoc.MAX_ALIASES))
    assert "write the values out" in err.value.hint


def test_a_few_aliases_and_merge_keys_still_work():
    text = "base: &base {a: 1}\none: {<<: *base, b: 2}\ntwo: *base\n"
    assert yamldoc.parse(text, "x.yaml").data["one"] == {"a": 1, "b": 2}


def test_an_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("# padding\n" * (yamldoc.MAX_BYTES // 10 + 1))
    started = time.monotonic()
    with pytest.raises(yamldoc.DocumentError) as err:
        yamldoc.read(str(path), "cluster.yaml")
    assert time.monotonic() - started < 1
    assert err.value.message == "{}: larger than 1 MiB: refused (kubecrate's YAML files are " \
        "a few kB)".format(path)
