"""A strict YAML subset reader, so the stand-ins need nothing beyond the standard library.

Supported: multi-document streams (`---`), block mappings and sequences (also a sequence at its
key's indentation), plain / single- / double-quoted scalars, `|` and `>` block scalars with
`-`/`+` chomping, flow collections (`[a, "b"]`, `{k: v}`, possibly over several lines), comments,
and JSON documents. Not supported (an error names the line): anchors, aliases, tags, multi-line
plain scalars, complex keys. Scalars resolve as YAML 1.2 core: null/~, true/false, ints, floats.
"""

import json
import re

_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")


class YAMLError(ValueError):
    pass


def load_all(text: str) -> list:
    """Every document in `text`, in order; empty documents are skipped."""
    docs, current = [], []
    for line in text.splitlines():
        if line.rstrip() in ("---", "...") or line.startswith("--- "):
            docs.append(current)
            current = [line[4:]] if line.startswith("--- ") else []
        else:
            current.append(line)
    docs.append(current)
    out = []
    for lines in docs:
        body = "\n".join(lines).strip()
        if not body or all(_strip_comment(raw).strip() == "" for raw in lines):
            continue
        if body[0] in "{[":
            try:
                out.append(json.loads(body, object_pairs_hook=_unique_pairs))
                continue
            except YAMLError:
                raise
            except ValueError:
                pass
        out.append(_Parser(lines).document())
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or line[i - 1] in " \t[{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class _Parser:
    def __init__(self, lines):
        self.lines = list(lines)
        self.i = 0

    def error(self, msg):
        raise YAMLError("line %d: %s" % (self.i + 1, msg))

    def document(self):
        value = self.node()
        self.skip()
        if self.i < len(self.lines):
            self.error("unexpected content %r" % self.lines[self.i].strip())
        return value

    def skip(self):
        while self.i < len(self.lines) and not _strip_comment(self.lines[self.i]).strip():
            self.i += 1

    def peek(self):
        self.skip()
        if self.i >= len(self.lines):
            return None, None
        line = self.lines[self.i]
        if "\t" in line[: _indent(line) + 1]:
            self.error("tabs are not allowed for indentation")
        return _indent(line), _strip_comment(line).strip()

    def node(self):
        ind, content = self.peek()
        if content is None:
            return None
        if content == "-" or content.startswith("- "):
            return self.sequence(ind)
        if content[0] in "&*!":
            self.error("anchors, aliases and tags are not supported")
        if self.split_key(content) is not None:
            return self.mapping(ind)
        self.i += 1
        return self.scalar(content, ind)

    def sequence(self, ind):
        items = []
        while True:
            cur, content = self.peek()
            if content is None or cur != ind or not (content == "-" or content.startswith("- ")):
                if cur is not None and cur > ind:
                    self.error("bad indentation of a sequence entry")
                return items
            raw = self.lines[self.i]
            rest = raw[ind + 1:].lstrip(" ")
            if not _strip_comment(rest).strip():
                self.i += 1
                items.append(self.child(ind, allow_same=False))
            else:
                col = len(raw) - len(rest)
                self.lines[self.i] = " " * col + rest
                items.append(self.node())

    def mapping(self, ind):
        result = {}
        while True:
            cur, content = self.peek()
            if content is None or cur < ind:
                return result
            if cur > ind:
                self.error("bad indentation of a mapping entry")
            if content == "-" or content.startswith("- "):
                return result
            split = self.split_key(content)
            if split is None:
                self.error("expected 'key: value', got %r" % content)
            key, rest = split
            if key in result:
                self.error("duplicate key %r" % key)
            self.i += 1
            if not rest:
                result[key] = self.child(ind, allow_same=True)
            elif rest[0] in "|>":
                result[key] = self.block_scalar(rest, ind)
            else:
                result[key] = self.scalar(rest, ind)

    def child(self, ind, allow_same):
        cur, content = self.peek()
        if content is None:
            return None
        if cur > ind:
            return self.node()
        if allow_same and cur == ind and (content == "-" or content.startswith("- ")):
            return self.sequence(ind)
        return None

    @staticmethod
    def split_key(content):
        if content[0] in "\"'":
            end = content.find(content[0], 1)
            if end < 0 or not content[end + 1:].startswith(":"):
                return None
            after = content[end + 2:]
            if after and after[0] != " ":
                return None
            return content[1:end], after.strip()
        if content[0] in "[{":
            return None
        m = re.match(r"([^:]*?):(?: (.*)|)\Z", content)
        if not m or not m.group(1).strip():
            return None
        return m.group(1).strip(), (m.group(2) or "").strip()

    def block_scalar(self, header, ind):
        m = re.match(r"([|>])([-+]?)\s*\Z", header)
        if not m:
            self.error("unsupported block scalar header %r" % header)
        style, chomp = m.groups()
        raw = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and _indent(line) <= ind:
                break
            raw.append(line)
            self.i += 1
        body_ind = min((_indent(x) for x in raw if x.strip()), default=ind + 1)
        lines = [x[body_ind:] if x.strip() else "" for x in raw]
        while lines and lines[-1] == "" and chomp != "+":
            lines.pop()
        if style == "|":
            text = "\n".join(lines)
        else:
            text = re.sub(r"(?<!\n)\n(?!\n)", " ", "\n".join(lines))
        return text + ("" if chomp == "-" or not lines else "\n")

    def scalar(self, text, ind):
        if text[0] in "[{":
            while _flow_depth(text) > 0 and self.i < len(self.lines):
                text += " " + _strip_comment(self.lines[self.i]).strip()
                self.i += 1
            value, pos = _Flow(text).parse(0)
            if text[pos:].strip():
                self.error("trailing content after flow collection")
            return value
        if text[0] in "&*!":
            self.error("anchors, aliases and tags are not supported")
        cur, _ = self.peek()
        if cur is not None and cur > ind and self.i < len(self.lines):
            self.error("multi-line plain scalars are not supported")
        return _resolve(text)


def _flow_depth(text):
    depth, quote = 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def _unique_pairs(pairs):
    """A JSON object whose keys are all different (YAML forbids duplicate keys too)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise YAMLError("duplicate key %r" % key)
        out[key] = value
    return out


def _resolve(text):
    if text[0] == '"':
        if not text.endswith('"') or len(text) < 2:
            raise YAMLError("unterminated double-quoted scalar %r" % text)
        return json.loads(text)
    if text[0] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise YAMLError("unterminated single-quoted scalar %r" % text)
        return text[1:-1].replace("''", "'")
    if text in ("null", "Null", "NULL", "~"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text) and any(c.isdigit() for c in text):
        return float(text)
    return text


class _Flow:
    def __init__(self, text):
        self.text = text

    def ws(self, pos):
        while pos < len(self.text) and self.text[pos] in " \t\n":
            pos += 1
        return pos

    def parse(self, pos):
        pos = self.ws(pos)
        ch = self.text[pos] if pos < len(self.text) else ""
        if ch in "[{":
            close = "]" if ch == "[" else "}"
            items = [] if ch == "[" else {}
            pos = self.ws(pos + 1)
            while pos < len(self.text) and self.text[pos] != close:
                value, pos = self.parse(pos)
                pos = self.ws(pos)
                if ch == "{":
                    if pos >= len(self.text) or self.text[pos] != ":":
                        raise YAMLError("expected ':' in flow mapping %r" % self.text)
                    item, pos = self.parse(pos + 1)
                    items[value] = item
                else:
                    items.append(value)
                pos = self.ws(pos)
                if pos < len(self.text) and self.text[pos] == ",":
                    pos = self.ws(pos + 1)
            if pos >= len(self.text):
                raise YAMLError("unterminated flow collection %r" % self.text)
            return items, pos + 1
        if ch in "\"'":
            end = pos + 1
            while end < len(self.text):
                if self.text[end] == "\\" and ch == '"':
                    end += 2
                    continue
                if self.text[end] == ch:
                    if ch == "'" and self.text[end + 1:end + 2] == "'":
                        end += 2
                        continue
                    break
                end += 1
            return _resolve(self.text[pos:end + 1]), end + 1
        m = re.compile(r"[^,\[\]{}]*?(?=\s*(?:[,\[\]{}]|:\s|:$|$))").match(self.text, pos)
        token = m.group(0).strip()
        return (_resolve(token) if token else None), m.end()
