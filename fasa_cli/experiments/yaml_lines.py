"""A YAML loader that remembers line numbers, so spec errors can point at `file:line`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from fasa_cli.errors import FasaError


class LineDict(dict):
    """A mapping from YAML; `key_lines[key]` is the 1-based line of each key."""

    line: int = 0
    key_lines: dict


class LineList(list):
    """A sequence from YAML; `item_lines[i]` is the 1-based line of each item."""

    line: int = 0
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            # Plain yaml keeps the last duplicate silently; in a spec that hides a mistake.
            raise _DuplicateKey(line, f"duplicate key '{key}' (first on line {result.key_lines[key]})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


class _DuplicateKey(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_with_lines(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FasaError(f"cannot read spec {path}: {err.strerror}", "check the path") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 -- a SafeLoader subclass
    except _DuplicateKey as err:
        raise FasaError(f"{path}:{err.line}: {err}", "keep one of the two keys") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise FasaError(f"{path}{where}: malformed YAML ({problem})", "fix the YAML syntax at that line") from None


def line_of(node: Any, path: Sequence[Any]) -> int | None:
    """The line of the deepest element of `path` found in `node` (None if none is)."""
    line = getattr(node, "line", None) or None
    for part in path:
        if isinstance(node, LineDict) and part in node:
            line, node = node.key_lines[part], node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line, node = node.item_lines[part], node[part]
        else:
            break
    return line


def plain(value: Any) -> Any:
    """Strip the line bookkeeping: plain dicts and lists (for hashing, dumping, merging)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
