from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.json_depth import MAX_DEPTH, TOO_DEEP, clamp, exceeds, nesting

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="[]{}\"\\ab", max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=30,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_nesting_counts_containers() -> None:
    assert nesting(1, 10) == 0 and nesting("[[[", 10) == 0
    assert nesting([], 10) == 1 and nesting({"a": [1, {"b": []}]}, 10) == 4
    assert nesting(nested(50), 100) == 50
    assert nesting(nested(50), 10) == 11  # stops counting past the limit


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(0, 8))
def test_exceeds_agrees_with_a_plain_recursive_count(value: Any, limit: int) -> None:
    raw = json.dumps(value)
    assert exceeds(raw, value, limit) == (reference_depth(value) > limit)
    assert exceeds(raw.encode(), value, limit) == (reference_depth(value) > limit)


def test_brackets_in_strings_never_refuse_a_shallow_value() -> None:
    value = {"text": "[{" * 1000}
    assert not exceeds(json.dumps(value), value)
    assert exceeds(json.dumps(nested(MAX_DEPTH + 1)), nested(MAX_DEPTH + 1))
    assert not exceeds(json.dumps(nested(MAX_DEPTH)), nested(MAX_DEPTH))


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(1, 6))
def test_clamp_bounds_depth_and_keeps_shallow_values(value: Any, limit: int) -> None:
    out = clamp(value, limit)
    assert reference_depth(out) <= limit
    if reference_depth(value) <= limit:
        assert out is value


def test_clamp_makes_any_stored_value_serialisable() -> None:
    deep = orjson.loads("[" * 1000 + "]" * 1000)
    out = clamp({"data": [deep]}, 200)
    text = orjson.dumps(out)
    assert TOO_DEEP.encode() in text and reference_depth(orjson.loads(text)) == 200
