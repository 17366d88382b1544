"""Every shell command the documentation shows is exercised by a test.

Commands listed in tests/docs/snippets.yaml are run by the tests named there (which must
exist); every other command is run here, verbatim but for placeholders, in the order its
document shows it, against the mirror world: one sandbox per document, holding a copy of the
checkout (the world's presets stand in for manifests/mirrors/upstream.yaml and china.yaml), a
HOME, a download cache and a "host" folder. Commands that run on a host (`./kubecrate-installer.pyz
...`, `minisign` and `chmod` of the copied files) run in the host folder, into which the four
build artifacts are "carried" first; everything else runs in the checkout, the builder's venv
command in the checkout's parent.

So a command added to the docs either runs here or gets a mapping to a test that runs it;
otherwise this suite fails.
"""

from __future__ import annotations

import datetime
import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docs.snippets import (
    MAPPING,
    PLACEHOLDER,
    REPO,
    Command,
    commands_in_text,
    doc_commands,
    doc_files,
    load_mapping,
)

COMMANDS = doc_commands()
MAPPED = load_mapping()
RUN_HERE = sorted({c.path for c in COMMANDS if c.key not in MAPPED})
BUNDLE = "k8s-1.23.17-el7"
ARTIFACTS = (f"{BUNDLE}.tar", f"{BUNDLE}.tar.minisig", "kubecrate-installer.pyz",
             "kubecrate-installer.pyz.minisig")
CHECKOUT = ("setup.cfg", "pyproject.toml", "README.md", "builder", "installer", "manifests")
# What a document that does not build its own bundle starts from (README.md's steps).
PREPARE = ("kubecrate keygen --out keys/", f"kubecrate build manifests/{BUNDLE}.yaml")


# ------------------------------------------------------------------------ the mapping file


def test_snippet_parser_reads_blocks_prompts_continuations_and_comments():
    text = "\n".join([
        "```sh", "# a comment", "kubecrate build x.yaml \\", "    --out b/   # trailing", "",
        "echo '# not a comment'", "```", "```console", "$ kubecrate keygen --out k/",
        "wrote k/kubecrate.key", "# ./kubecrate-installer.pyz status", "```",
        "```yaml", "a: b", "```", "````", "```sh", "not a block: inside a 4-tick fence",
        "```", "````",
    ])
    found = [(c.line, c.key) for c in commands_in_text(text)]
    assert found == [(3, "kubecrate build x.yaml --out b/"), (6, "echo '# not a comment'"),
                     (9, "kubecrate keygen --out k/"), (11, "./kubecrate-installer.pyz status")]


def test_every_mapped_command_is_still_shown():
    shown = {c.key for c in COMMANDS}
    stale = sorted(set(MAPPED) - shown)
    assert not stale, f"{MAPPING.name} maps commands no document shows any more: {stale}"


def test_every_mapped_test_exists():
    """Collect the mapped test files and find each node id (a parametrised test's id may be
    given without its parameters)."""
    ids = sorted({i for ids in MAPPED.values() for i in ids})
    files = sorted({i.split("::")[0] for i in ids})
    existing = [f for f in files if (REPO / f).is_file()]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *existing], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    collected = {line.strip() for line in done.stdout.splitlines() if "::" in line}
    assert done.returncode in (0, 5), done.stdout[-3000:] + done.stderr[-3000:]
    missing = [i for i in ids
               if i not in collected and not any(c.startswith(i + "[") for c in collected)]
    assert not missing, f"{MAPPING.name} names tests that do not exist: {missing}"


def test_cluster_yaml_examples_load(tmp_path):
    """The cluster.yaml the READMEs show is one the installer accepts."""
    from installer.format.cluster import load_cluster

    found = 0
    for path in doc_files():
        if path.parent.name == "docs":
            continue
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            if "nodes:" in block and "control_plane:" in block:
                target = tmp_path / "cluster.yaml"
                target.write_text(block)
                load_cluster(str(target))
                found += 1
    assert found >= 2, "README.md and README.zh-CN.md each show a cluster.yaml"


# ------------------------------------------------------------------------ running the commands


class Sandbox:
    """A workstation checkout, its parent, a HOME, a cache and a host folder under `top`."""

    def __init__(self, top: Path, world) -> None:
        self.top = top
        self.home = top / "home"
        self.checkout = top / "kubecrate"
        self.host = top / "host"
        for folder in (self.home, self.checkout, self.host, top / "bin"):
            folder.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.lock")
        for name in CHECKOUT:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, self.checkout / name, ignore=ignore)
            else:
                shutil.copyfile(source, self.checkout / name)
        presets = self.checkout / "manifests" / "mirrors"
        shutil.copyfile(world.preset, presets / "upstream.yaml")
        shutil.copyfile(world.preset_aliyun, presets / "china.yaml")
        # `kubecrate` before the document installs its own venv: this checkout's.
        (top / "bin" / "kubecrate").symlink_to(Path(sys.executable).with_name("kubecrate"))
        from tests.integration.builder.test_build import seeded_cache

        cache = seeded_cache(top / "cache")
        path = os.pathsep.join([str(self.home / ".venvs" / "kubecrate" / "bin"), str(top / "bin"),
                                os.environ.get("PATH", "")])
        drop = ("KUBECRATE_ROOT", "KUBECRATE_CACHE", "SHIV_ROOT", "VIRTUAL_ENV", "PYTHONPATH")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(HOME=str(self.home), PATH=path, KUBECRATE_CACHE=str(cache),
                        SHIV_ROOT=str(top / "shiv"))

    def cwd_for(self, key: str) -> Path:
        if key.startswith("python3 -m venv"):
            return self.top
        words = key.split()
        if words[0] == "./kubecrate-installer.pyz" or (
                words[0] in ("minisign", "chmod") and "bundles/" not in key):
            return self.host
        return self.checkout

    def carry(self) -> None:
        """Copy the build's four files to the host folder, as a USB disk would."""
        for name in ARTIFACTS:
            source, target = self.checkout / "bundles" / name, self.host / name
            assert source.is_file(), f"nothing built yet: {source} is missing"
            if not target.exists() or not filecmp.cmp(source, target, shallow=False):
                shutil.copyfile(source, target)

    def placeholder(self, name: str) -> str:
        if name in ("public key", "old public key"):  # kubecrate.pub's second line, given out
            # of band (the old one of a key rotation: docs/security.md)
            return (self.checkout / "keys" / "kubecrate.pub").read_text().splitlines()[1]
        if name == "expiry date":  # a key rotation's --old-key-expires, some months ahead
            return (datetime.date.today() + datetime.timedelta(days=180)).isoformat()
        raise AssertionError(f"unknown placeholder <{name}>: teach tests/docs/test_docs.py")

    def run(self, command: Command) -> subprocess.CompletedProcess:
        text = PLACEHOLDER.sub(lambda m: self.placeholder(m.group(1)), command.text)
        cwd = self.cwd_for(command.key)
        if cwd == self.host:
            self.carry()
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=self.env,
                              capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, (
            f"{command.where}: `{command.text}` exited {done.returncode} in {cwd}\n"
            f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}")
        return done


@pytest.mark.integration
@pytest.mark.parametrize("doc", RUN_HERE)
def test_doc_commands_run(doc, mirror_world, tmp_path):
    commands = [c for c in COMMANDS if c.path == doc and c.key not in MAPPED]
    sandbox = Sandbox(tmp_path, mirror_world)
    if not any(c.key == PREPARE[0] for c in commands):  # a document making its own first key
        for text in PREPARE:
            sandbox.run(Command("(prepared as README.md)", 0, text))
    for command in commands:
        sandbox.run(command)


@pytest.mark.integration
def test_scripts_test_is_the_suite_entry_point():
    """README's second command: scripts/test sets up, checks and hands its arguments to pytest
    (here only collecting this file, so that the suite does not run itself)."""
    done = subprocess.run([str(REPO / "scripts" / "test"), "--collect-only", "-q",
                           "-p", "no:cacheprovider", "tests/docs/test_docs.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "==> vermin" in done.stderr and "==> ruff" in done.stderr
    assert "==> mypy" in done.stderr
    assert "tests/docs/test_docs.py::test_doc_commands_run[README.md]" in done.stdout


def test_mapping_file_is_valid_yaml_with_node_ids():
    data = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data, f"{MAPPING.name} maps at least one command"
    assert load_mapping() == MAPPED
