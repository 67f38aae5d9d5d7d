"""The nesting limit of replies: the same answer on every Python, whatever its decoder takes."""

from __future__ import annotations

from typing import Any

import pytest

from pollkit.core.jsonbody import MAX_DEPTH, NestedTooDeep, loads


def nested(depth: int, *, kind: str = "list") -> str:
    """`depth` levels of arrays (or objects) around a 1."""
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    ("depth", "accepted"),
    [(0, True), (1, True), (MAX_DEPTH, True), (MAX_DEPTH + 1, False), (3_000, False)],
)
def test_depth_table(kind: str, as_bytes: bool, depth: int, accepted: bool) -> None:
    text = nested(depth, kind=kind)
    data: str | bytes = text.encode() if as_bytes else text
    if accepted:
        value: Any = loads(data)
        for _ in range(depth):
            value = value[0] if kind == "list" else value["a"]
        assert value == 1
    else:
        with pytest.raises(NestedTooDeep, match=f"deeper than {MAX_DEPTH} levels"):
            loads(data)


def test_far_beyond_any_decoder_still_a_value_error() -> None:
    # 10⁶ levels: a RecursionError up to 3.12, a value 3.13 decodes; both end the same way.
    with pytest.raises(ValueError, match="deeper than"):
        loads(nested(1_000_000))


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"note": "' + "[{" * 500 + '", "items": [[1], [2]]}'
    assert loads(text)["items"] == [[1], [2]]


def test_many_shallow_containers_are_fine() -> None:
    # More brackets than the limit, but spread wide: the walk decides, not the count.
    text = "[" + ",".join(['{"a": [1]}'] * 5_000) + "]"
    assert len(loads(text)) == 5_000


def test_the_limit_is_a_parameter() -> None:
    assert loads(nested(3), max_depth=3) == [[[1]]]
    with pytest.raises(NestedTooDeep):
        loads(nested(4), max_depth=3)


def test_not_json_is_still_a_value_error_of_its_own() -> None:
    with pytest.raises(ValueError, match="Expecting value") as info:
        loads(b"<html>")
    assert not isinstance(info.value, NestedTooDeep)
