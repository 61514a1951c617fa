"""A targeted parser of the Prometheus text exposition format.

It reads only the samples whose names a profile asks for. Every other line is dismissed after one
slice and one set lookup on its first few characters, which is what makes it many times faster
than a full parser on pages of thousands of lines (see `docs/performance.md`).

It is strict where it matters: a malformed line of a wanted sample, the same series twice, or a
page that ends inside a wanted line fails the whole page with the line number and the reason,
because a silently misread token counter skews every joules-per-token figure (a truncated
`612` read as `6` is a counter reset, and a reset counts the whole new value as an increment).
Junk in families we do not read is not our business and is skipped.

Both the classic text format (0.0.4) and OpenMetrics text are accepted: comments, `# TYPE`,
`# UNIT`, blank lines, NaN, +Inf/-Inf, sample timestamps, exemplars, escaped label values, a
trailing comma in a label set, and `# EOF` (nothing after it is read).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

Labels = tuple[tuple[str, str], ...]


class ParseError(Exception):
    """A wanted line could not be read; the message names the line and the reason."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    """Sorted by label name, so equal series compare equal."""
    value: float


@dataclass(frozen=True, slots=True)
class _Wanted:
    names: frozenset[str]
    head_len: int
    heads: frozenset[str]
    """The first `head_len` characters of every wanted name: a line whose start is not among them
    cannot be a wanted sample."""


@lru_cache(maxsize=64)
def _wanted(names: frozenset[str]) -> _Wanted:
    head_len = min(len(n) for n in names)
    return _Wanted(names, head_len, frozenset(n[:head_len] for n in names))


_NAME = re.compile(r"[^{ \t]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,|(?=\}))')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def parse_samples(text: str, names: Iterable[str]) -> list[Sample]:
    """Return every sample of `text` whose name is in `names`, in page order.

    Raises `ParseError` for a malformed wanted line, a duplicated series, or a page cut off
    inside a wanted line.
    """
    wanted_names = frozenset(names)
    if not wanted_names:
        return []
    wanted = _wanted(wanted_names)
    lines = _until_eof(text).split("\n")
    last = len(lines) - 1
    k, heads = wanted.head_len, wanted.heads
    out: list[Sample] = []
    seen: set[tuple[str, Labels]] = set()
    for i in [i for i, line in enumerate(lines) if line[:k] in heads]:
        line = lines[i]
        name = _name(line)
        if name not in wanted.names:
            continue
        line_no = i + 1
        if i == last:  # a complete page ends with a line feed, so its last piece is empty
            raise ParseError(line_no, f"the page ends inside this line of {name} (truncated?)")
        labels, value = _parse_rest(line, len(name), name, line_no)
        key = (name, labels)
        if key in seen:
            raise ParseError(line_no, f"duplicate series {_render(name, labels)}")
        seen.add(key)
        out.append(Sample(name, labels, value))
    return out


def sample_names(text: str) -> list[str]:
    """The distinct sample names on a page, in page order: for error messages, never the hot path."""
    found: dict[str, None] = {}
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            name = _name(line)
            if name:
                found.setdefault(name)
    return list(found)


def _until_eof(text: str) -> str:
    """The page up to an OpenMetrics `# EOF` line; the whole page where there is none."""
    start = 0
    while (pos := text.find("# EOF", start)) != -1:
        end = pos + len("# EOF")
        if (pos == 0 or text[pos - 1] == "\n") and (end == len(text) or text[end] in "\r\n"):
            return text[:pos]
        start = end
    return text


def _name(line: str) -> str:
    m = _NAME.match(line)
    return m.group() if m else ""


def _parse_rest(line: str, pos: int, name: str, line_no: int) -> tuple[Labels, float]:
    labels: Labels = ()
    brace = pos
    while brace < len(line) and line[brace] in " \t":  # blanks may separate the name from `{`
        brace += 1
    if brace < len(line) and line[brace] == "{":
        labels, pos = _parse_labels(line, brace + 1, line_no)
    rest = line[pos:]
    exemplar = rest.find(" # ")
    if exemplar != -1:  # OpenMetrics exemplar: `value [timestamp] # {labels} value [timestamp]`
        rest = rest[:exemplar]
    fields = rest.split()
    if not fields:
        raise ParseError(line_no, f"no value for {name}")
    if not rest[0].isspace():
        raise ParseError(line_no, f"no space between {name} and its value: {rest.strip()!r}")
    if len(fields) > 2:
        raise ParseError(line_no, f"unexpected text after the value of {name}: {rest.strip()!r}")
    value = _parse_value(fields[0], line_no, name)
    if len(fields) == 2:
        _parse_value(fields[1], line_no, name)  # the timestamp: validated, not used
    return labels, value


def _parse_labels(line: str, pos: int, line_no: int) -> tuple[Labels, int]:
    """Labels from `pos` (just after `{`) to the closing `}`; returns them and the position after it."""
    labels: list[tuple[str, str]] = []
    end = len(line)
    while True:
        while pos < end and line[pos] in " \t":
            pos += 1
        if pos < end and line[pos] == "}":
            break
        m = _LABEL.match(line, pos)
        if m is None:
            if pos >= end:
                raise ParseError(line_no, "unterminated label set")
            raise ParseError(line_no, f"malformed labels at column {pos + 1}: {line[pos : pos + 40]!r}")
        value = m.group(2)
        if "\\" in value:
            value = _ESCAPE.sub(lambda e: _ESCAPES.get(e.group(1), "\\" + e.group(1)), value)
        labels.append((m.group(1), value))
        pos = m.end()
    if len({k for k, _ in labels}) != len(labels):
        raise ParseError(line_no, f"repeated label name in {line[: pos + 1]!r}")
    labels.sort()
    return tuple(labels), pos + 1


def _parse_value(token: str, line_no: int, name: str) -> float:
    if "_" in token:  # Python's float() accepts digit separators; the exposition format does not
        raise ParseError(line_no, f"value {token!r} of {name} is not a number")
    try:
        return float(token)
    except ValueError:
        raise ParseError(line_no, f"value {token!r} of {name} is not a number") from None


def _render(name: str, labels: Labels) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
