"""The shell commands the documentation shows, and the mapping of those that other tests run.

A command is taken from every fenced block tagged `sh`, `bash` or `console` in README.md,
README.zh-CN.md and docs/*.md:
- in `sh`/`bash` blocks, every line that is not blank or a comment, with `\\` continuations
  joined and a trailing ` # comment` dropped;
- in `console` blocks, only lines starting with a `$ ` or `# ` prompt (the rest is output).

Its key is that text with runs of whitespace collapsed to one space. tests/docs/snippets.yaml
maps keys to the node ids of the tests that run those commands; every other command is run by
tests/docs/test_docs.py itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MAPPING = Path(__file__).with_name("snippets.yaml")
SHELL_TAGS = {"sh", "bash", "console"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w.+-]*)")
PROMPT = re.compile(r"^[$#] ")
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9 ._-]*)>")


@dataclass(frozen=True)
class Command:
    path: str  # relative to the repository, e.g. README.md
    line: int  # where the command starts
    text: str  # as shown (continuations joined)

    @property
    def key(self) -> str:
        return " ".join(self.text.split())

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(repo: Path = REPO) -> list[Path]:
    """The documents whose commands must be exercised."""
    files = [repo / "README.md", repo / "README.zh-CN.md"]
    files += sorted((repo / "docs").glob("*.md"))
    return [f for f in files if f.exists()]


def _strip_comment(line: str) -> str:
    """`line` without a trailing ` # comment` that lies outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and index > 0 and line[index - 1] in " \t":
            return line[:index].rstrip()
    return line.rstrip()


def commands_in_text(text: str, path: str = "<text>") -> list[Command]:
    """Every command shown in the shell-tagged fenced blocks of a Markdown text."""
    found: list[Command] = []
    fence = None  # (marker, tag) while inside a block
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence = (match.group(2), match.group(3).lower())
            continue
        if match and match.group(2).startswith(fence[0]) and not match.group(3):
            if pending:
                raise ValueError(f"{path}:{start}: a command ends with '\\' at the block's end")
            fence = None
            continue
        if fence[1] not in SHELL_TAGS:
            continue
        stripped = line.strip()
        if not pending:
            if fence[1] == "console":
                if not PROMPT.match(stripped):
                    continue
                stripped = stripped[2:].strip()
            elif not stripped or stripped.startswith("#"):
                continue
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(_strip_comment(stripped))
        found.append(Command(path, start, " ".join(p for p in pending if p)))
        pending = []
    return found


def doc_commands(repo: Path = REPO) -> list[Command]:
    """Every command shown in the documentation, in file and line order."""
    found = []
    for path in doc_files(repo):
        found += commands_in_text(path.read_text(encoding="utf-8"), str(path.relative_to(repo)))
    return found


def load_mapping(path: Path = MAPPING) -> dict[str, list[str]]:
    """snippets.yaml: command key -> node ids (one id or a list)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of command -> test node id(s)")
    mapping = {}
    for command, ids in data.items():
        ids = [ids] if isinstance(ids, str) else ids
        if not isinstance(command, str) or not ids or \
                not all(isinstance(i, str) and "::" in i for i in ids):
            raise ValueError(f"{path}: {command!r}: give one test node id or a list of them "
                             "(tests/...py::test_name)")
        mapping[" ".join(command.split())] = list(ids)
    return mapping
