"""Kubernetes label selectors (`app=vllm,tier in (gpu,a100),!canary`) parsed into lightkube's form.

The selector is sent to the API server, which does the matching; parsing it here checks the config
at load time (an error names the term) and hands lightkube the typed requirements it encodes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from exporter.config import LABEL_KEY, LABEL_VALUE

if TYPE_CHECKING:
    from lightkube.core.client import LabelSelector

_SET = re.compile(r"(\S+)\s+(in|notin)\s*\((.*)\)")
_EQUALITY = re.compile(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)")


def _terms(selector: str) -> list[str]:
    """The comma-separated requirements, commas inside parentheses left alone."""
    terms, depth, current = [], 0, ""
    for ch in selector:
        if ch == "," and depth == 0:
            terms.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        current += ch
    terms.append(current.strip())
    return terms


def _key(key: str, term: str) -> str:
    if not LABEL_KEY.fullmatch(key) or len(key.partition("/")[0]) > 253:
        raise ValueError(f"{term!r}: {key!r} is not a label key (an optional DNS prefix and /, then a name "
                         "of up to 63 letters, digits, - _ and ., starting and ending alphanumeric)")
    return key


def _value(value: str, term: str) -> str:
    if not LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{term!r}: {value!r} is not a label value (up to 63 letters, digits, - _ and ., "
                         "starting and ending alphanumeric)")
    return value


def parse_label_selector(selector: str) -> LabelSelector:
    """The requirements of a label selector, one per key; ValueError naming the first term that is not
    one, or a second requirement on a key."""
    out: LabelSelector = {}
    if not selector.strip():
        return out
    # Imported here: checking a config without a selector does not load the client library.
    from lightkube import operators

    for term in _terms(selector):
        before = len(out)
        if m := _SET.fullmatch(term):
            values = [_value(v.strip(), term) for v in m.group(3).split(",")]
            found = operators.in_(values) if m.group(2) == "in" else operators.not_in(values)
            out[_key(m.group(1), term)] = found
        elif m := _EQUALITY.fullmatch(term):
            value = _value(m.group(3), term)
            equality = operators.not_equal(value) if m.group(2) == "!=" else operators.equal(value)
            out[_key(m.group(1), term)] = equality
        elif term.startswith("!"):
            out[_key(term[1:].strip(), term)] = operators.not_exists()
        elif term:
            out[_key(term, term)] = operators.exists()
        else:
            raise ValueError(f"{selector!r} has an empty requirement (two commas, or one at an end)")
        if len(out) == before:
            raise ValueError(f"{term!r}: a second requirement on the same key; give one per key")
    return out
