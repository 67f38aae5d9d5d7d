"""Decoding a JSON body from a server, with a nesting depth pollkit decides, not the interpreter.

The standard decoder's own limit differs by version: up to 3.12 a reply nested a couple of
thousand levels deep raises `RecursionError`, while 3.13's decoder reads it. No API pollkit speaks
nests deeper than about ten levels, so anything deeper than `MAX_DEPTH` is refused the same way on
every Python: it is a broken or hostile reply, not data.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "NestedTooDeep", "loads"]

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects pollkit accepts in a reply (a scalar is depth 0)."""


class NestedTooDeep(ValueError):
    """A JSON document nests arrays or objects deeper than the limit."""


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode `data` as JSON, refusing documents nested deeper than `max_depth`.

    Args:
        data: The JSON text, as bytes (UTF-8, -16 or -32, as `json.loads` takes) or str.
        max_depth: How many levels of arrays and objects are accepted.

    Returns:
        The decoded value.

    Raises:
        NestedTooDeep: The document nests deeper than `max_depth` (also a `ValueError`).
        ValueError: The text is not JSON (`json.JSONDecodeError`, or not UTF-8).
    """
    try:
        value = json.loads(data)
    except RecursionError as exc:  # the interpreter's limit came first (up to 3.12)
        raise NestedTooDeep(f"JSON nested deeper than {max_depth} levels") from exc
    # A document with fewer opening brackets than the limit cannot exceed it: most replies stop
    # here after two C-speed counts, without walking the decoded value.
    if isinstance(data, str):
        brackets = data.count("[") + data.count("{")
    else:
        brackets = data.count(b"[") + data.count(b"{")
    if brackets > max_depth and _depth(value) > max_depth:
        raise NestedTooDeep(f"JSON nested deeper than {max_depth} levels")
    return value


def _depth(value: Any) -> int:
    """How many levels of lists and dicts `value` nests (iteratively: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest
