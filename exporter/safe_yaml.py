"""Reading a YAML file that may be hostile: bounded in bytes, depth, expansion and time.

Both the config file and the web config file are read through `load_yaml_file`. It refuses, with
one line that says why and before parsing anything:

- a path that is not a regular file (a FIFO would hang the read, `/dev/zero` never ends);
- a file larger than `MAX_FILE_BYTES`, or one that is not UTF-8 text (binary garbage);

and while parsing:

- nesting deeper than `MAX_DEPTH` (the parser would exhaust Python's stack);
- a document whose aliases expand to more than `MAX_EXPANDED` values and characters (an alias
  bomb: a few lines that stand for gigabytes once expanded), or an alias to a node it is inside;
- a key written twice in one mapping (YAML keeps the last silently; an operator meant one of them).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 50
MAX_EXPANDED = 1_000_000


class YamlInputError(Exception):
    """The file cannot be read as a bounded YAML document; the message says why, on one line."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with a depth limit, an expansion budget and no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._weights: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlInputError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        if alias:
            if id(node) not in self._weights:
                line = node.start_mark.line + 1
                raise YamlInputError(f"line {line}: an alias refers to a node it is inside")
            return node
        self._weights[id(node)] = self._weigh(node)
        return node

    def _weigh(self, node: Node) -> int:
        """Values and characters the node stands for once every alias in it is expanded."""
        if isinstance(node, ScalarNode):
            weight = 1 + len(node.value)
        elif isinstance(node, SequenceNode):
            weight = 1 + sum(self._weights[id(child)] for child in node.value)
        elif isinstance(node, MappingNode):
            weight = 1 + sum(self._weights[id(k)] + self._weights[id(v)] for k, v in node.value)
        else:
            weight = 1
        if weight > MAX_EXPANDED:
            raise YamlInputError(
                f"line {node.start_mark.line + 1}: the document expands to more than {MAX_EXPANDED:,} "
                "values and characters (aliases that repeat aliases?)"
            )
        return weight

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise YamlInputError(
                    f"line {key_node.start_mark.line + 1}: key {str(key)[:80]!r} is written twice in one "
                    "mapping; keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml_file(path: Path) -> Any:
    """The document in `path`, or `YamlInputError` saying in one line why it cannot be used."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise YamlInputError(f"cannot read the file: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise YamlInputError(f"not a regular file ({_kind(info.st_mode)}); give the path of a YAML file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise YamlInputError(f"cannot read the file: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise YamlInputError(f"larger than {MAX_FILE_BYTES // 1024} KiB; a config is a few KiB of YAML")
    if b"\0" in raw:
        raise YamlInputError("a binary file (it holds NUL bytes), not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlInputError(f"not UTF-8 text (byte {e.start} is not valid UTF-8)") from None
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError) as e:  # ValueError: e.g. an integer of 200,000 digits
        raise YamlInputError(f"not valid YAML: {_one_line(e)}") from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]
