"""Validated YAML documents that remember where every key came from.

Recipes, mirror presets, cluster.yaml and the load-balancer settings are all read the same way:
`yaml.safe_load` for the data, `yaml.compose` for the line of every key, and a reader that checks
shapes as it walks and names the file, line and key of the first problem, with a did-you-mean for
unknown keys. Python 3.6 (hosts read cluster.yaml), so typing forms only.

Every problem in such a file is a DocumentError, a usage error (exit 2 in both CLIs), shaped
`<file>:<line>: <key path>: <what is wrong>` with a hint saying what to do; an unknown key, a
value of the wrong type and a key given twice read the same in every kind of file.

Hostile input is bounded before it is parsed (docs/security.md, "Secrets and hostile input"): a
file larger than MAX_BYTES, more than MAX_ALIASES aliases (a 272-byte "billion laughs" expands
to millions of nodes), or a document that expands to more than MAX_NODES nodes is refused with a
clear error, in milliseconds.
"""

import difflib
import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Type

import yaml

from installer.format.errors import UsageError

KeyPath = Tuple[Any, ...]
MAX_BYTES = 1 << 20  # our largest recipe is ~3 kB; a cluster.yaml for 1000 nodes ~100 kB
MAX_ALIASES = 64  # merge keys and shared lists in hand-written files need a few
MAX_NODES = 200000  # scalars, mappings and sequences after aliases are expanded
_PLAIN_KEY = re.compile(r"\A[A-Za-z_][A-Za-z0-9_-]*\Z")


class DocumentError(UsageError):
    """A problem at a place in a document: rendered `file:line: key: message`. Subclasses name
    the page that describes their schema in `guide`, for hints."""

    guide = None  # type: Optional[str]

    def __init__(self, message: str, hint: Optional[str] = None, *, file: Optional[str] = None,
                 line: Optional[int] = None, key: Optional[str] = None) -> None:
        where = (file or "") + (":{}".format(line) if file and line else "")
        prefix = (where + ": " if where else "") + (key + ": " if key else "")
        super().__init__(prefix + message, hint)
        self.file, self.line, self.key = file, line, key


class Document(NamedTuple):
    source: str
    data: Any
    lines: Dict[KeyPath, int]  # 1-based line of every mapping key and list item, by path


def key_text(path: KeyPath) -> str:
    """`roles.worker.images[2]`, `registries['registry.k8s.io'].url`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += "[{}]".format(part)
        elif _PLAIN_KEY.match(str(part)):
            text += ("." if text else "") + str(part)
        else:
            text += "[{!r}]".format(str(part))
    return text


def line_for(lines: Mapping[KeyPath, int], path: KeyPath) -> Optional[int]:
    """The line of `path`, or of its nearest ancestor that has one."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def did_you_mean(word: Any, choices: Iterable[Any]) -> Optional[str]:
    close = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.6)
    return "did you mean {!r}?".format(close[0]) if close else None


def suggestion(word: Any, choices: Iterable[Any]) -> str:
    """` (did you mean 'x'?)` to append to a message, or an empty string."""
    close = did_you_mean(word, choices)
    return " ({})".format(close) if close else ""


def unknown_key(key: Any, allowed: Iterable[Any]) -> Tuple[str, str]:
    """(message, hint) for a key the schema does not have, the same in every file."""
    return "unknown key", did_you_mean(key, allowed) or "allowed here: {}".format(
        ", ".join(sorted(map(str, allowed))))


def wrong_type(want: str, value: Any, guide: Optional[str] = None) -> Tuple[str, str]:
    """(message, hint) for a value of the wrong type: `want` is e.g. "a non-empty string"."""
    short = want.replace("non-empty ", "")
    return "must be {}, not {}".format(want, kind(value)), "write {} here{}".format(
        short, " ({} describes every key)".format(guide) if guide else "")


def kind(value: Any) -> str:
    """What the user wrote, in words: `nothing`, `int`, `list`..."""
    return "nothing" if value is None else type(value).__name__


def read(path: str, what: str, error_class: type = DocumentError,
         hint: Optional[str] = None) -> str:
    """The text of the YAML file at `path`; an unreadable file is `error_class` saying
    `cannot read <what>` and why."""
    try:
        with open(str(path), "r", encoding="utf-8") as handle:
            text = handle.read(MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise error_class("cannot read {}: {}".format(what, reason), hint,
                          file=str(path)) from exc
    _check_size(text, str(path), error_class)
    return text


def _check_size(text: str, source: str, error_class: type) -> None:
    if len(text) > MAX_BYTES:
        raise error_class("larger than {} MiB: refused (kubecrate's YAML files are a few "
                          "kB)".format(MAX_BYTES >> 20),
                          "is this the right file? split it or remove what is not needed",
                          file=source)


def _check_aliases(text: str, source: str, error_class: type) -> None:
    """Count aliases with the scanner (linear in the text) before anything expands them."""
    count = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, yaml.AliasToken):
            count += 1
            if count > MAX_ALIASES:
                raise error_class(
                    "more than {} YAML aliases (*name): refused, an alias bomb expands a few "
                    "hundred bytes into gigabytes".format(MAX_ALIASES),
                    "write the values out instead of referring to anchors", file=source,
                    line=token.start_mark.line + 1)


def parse(text: str, source: str, error_class: type = DocumentError) -> Document:
    """Parse YAML text; syntax errors and duplicated keys (YAML silently keeps the last one)
    raise `error_class` naming the file and line. Files over MAX_BYTES, with more than
    MAX_ALIASES aliases or expanding to more than MAX_NODES nodes are refused first."""
    _check_size(text, source, error_class)
    try:
        _check_aliases(text, source, error_class)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise error_class("not valid YAML: {}".format(getattr(exc, "problem", None) or exc),
                          file=source, line=mark.line + 1 if mark else None) from exc
    lines = {}  # type: Dict[KeyPath, int]
    stack: List[Tuple[KeyPath, Any]] = [((), node)]
    visited = 0
    while stack:
        path, current = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise error_class("expands to more than {} YAML nodes: refused (aliases "
                              "repeat whole subtrees)".format(MAX_NODES),
                              "write the values out instead of referring to anchors",
                              file=source)
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                sub = path + (key_node.value,)
                if sub in lines and key_node.value != "<<":
                    raise error_class("key given twice (YAML keeps only the last one)",
                                      "keep one of them: the first is at line {}".format(
                                          lines[sub]),
                                      file=source, line=key_node.start_mark.line + 1,
                                      key=key_text(sub))
                lines[sub] = key_node.start_mark.line + 1
                stack.append((sub, value_node))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines[path + (index,)] = item.start_mark.line + 1
                stack.append((path + (index,), item))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # compose accepted it; constructing can still fail
        mark = getattr(exc, "problem_mark", None)
        raise error_class("not valid YAML: {}".format(getattr(exc, "problem", None) or exc),
                          file=source, line=mark.line + 1 if mark else None) from exc
    return Document(source, data, lines)


class Reader:
    """Walks a Document's data, checking shapes; subclasses add the schema's own methods and
    set `error_class` to their error type (a DocumentError)."""

    error_class: Type[DocumentError] = DocumentError

    def __init__(self, document: Document) -> None:
        self.document = document
        self.source = document.source

    @property
    def lines(self) -> Dict[KeyPath, int]:
        return self.document.lines

    def error(self, path: KeyPath, message: str, hint: Optional[str] = None) -> Exception:
        return self.error_class(message, hint, file=self.source,
                                line=line_for(self.lines, path), key=key_text(path) or None)

    def wrong_type(self, path: KeyPath, want: str, value: Any) -> Exception:
        """The error for a value that is not `want` ("a mapping", "a non-empty string")."""
        return self.error(path, *wrong_type(want, value, self.error_class.guide))

    def mapping(self, value: Any, path: KeyPath, required: Sequence[str] = (),
                optional: Sequence[str] = ()) -> Dict[str, Any]:
        """A mapping with a fixed set of keys: unknown ones are errors with a suggestion."""
        if not isinstance(value, dict):
            raise self.wrong_type(path, "a mapping", value)
        allowed = set(required) | set(optional)
        for key in value:
            if key not in allowed:
                raise self.error(path + (key,), *unknown_key(key, allowed))
        for key in required:
            if value.get(key) is None:
                raise self.error(path + (key,), "required key is missing")
        return value

    def table(self, value: Any, path: KeyPath) -> Dict[Any, Any]:
        """A non-empty mapping whose keys the user chooses (repo ids, hosts, node names)."""
        if not isinstance(value, dict) or not value:
            if value == {}:
                raise self.error(path, "must be a non-empty mapping, not an empty one")
            raise self.wrong_type(path, "a non-empty mapping", value)
        return value

    def string(self, value: Any, path: KeyPath, pattern: Any = None, what: str = "") -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise self.error(path, "must be a string, not {}".format(kind(value)),
                             'quote it: "{}" (YAML reads {} as a number)'.format(value, value))
        if not isinstance(value, str) or not value.strip():
            raise self.wrong_type(path, "a non-empty string", value)
        text = value.strip()
        if pattern is not None and not pattern.match(text):
            raise self.error(path, "{!r} is not {}".format(text, what or "valid here"))
        return text

    def boolean(self, value: Any, path: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.wrong_type(path, "true or false", value)
        return value

    def integer(self, value: Any, path: KeyPath, low: Optional[int] = None,
                high: Optional[int] = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.wrong_type(path, "a whole number", value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.error(path, "{} is out of range {}..{}".format(value, low, high))
        return value

    def choice(self, value: Any, path: KeyPath, choices: Sequence[str]) -> str:
        text = self.string(value, path)
        if text not in choices:
            raise self.error(path, "{!r} is not one of {}".format(text, ", ".join(choices)),
                             did_you_mean(text, choices))
        return text

    def items(self, value: Any, path: KeyPath, allow_empty: bool = False) -> list:
        if value is None and allow_empty:
            return []
        if value == [] and not allow_empty:
            raise self.error(path, "must be a non-empty list, not an empty one")
        if not isinstance(value, list):
            raise self.wrong_type(path, "a list" if allow_empty else "a non-empty list", value)
        return value

    def unique(self, values: Sequence[Any], path: KeyPath, key: Any = lambda v: v) -> None:
        seen = set()
        for index, value in enumerate(values):
            if key(value) in seen:
                raise self.error(path + (index,), "{!r} is listed twice".format(key(value)))
            seen.add(key(value))
