from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.uuid_ring import DEFAULT_CAPACITY, BoundedUUIDSet


def test_add_contains_len() -> None:
    ring = BoundedUUIDSet(3)
    assert ring.add("a") is True
    assert ring.add("a") is False
    assert "a" in ring and "b" not in ring and 5 not in ring
    assert len(ring) == 1
    assert ring.capacity == 3
    assert BoundedUUIDSet().capacity == DEFAULT_CAPACITY == 2000


def test_evicts_oldest_first() -> None:
    ring = BoundedUUIDSet(3, initial=["a", "b", "c"])
    assert ring.add("d")
    assert "a" not in ring
    assert list(ring) == ["b", "c", "d"]
    assert ring.add("a")  # evicted, so new again
    assert list(ring) == ["c", "d", "a"]


def test_re_adding_does_not_refresh_position() -> None:
    ring = BoundedUUIDSet(2, initial=["a", "b"])
    assert ring.add("a") is False
    ring.add("c")
    assert "a" not in ring and list(ring) == ["b", "c"]


def test_discard_and_clear() -> None:
    ring = BoundedUUIDSet(3, initial=["a", "b", "c"])
    assert ring.discard("b") is True
    assert ring.discard("b") is False
    assert list(ring) == ["a", "c"]
    ring.add("d")
    ring.add("e")  # evicts a: discard freed one slot
    assert list(ring) == ["c", "d", "e"]
    ring.clear()
    assert len(ring) == 0 and "c" not in ring
    assert "3" in repr(ring)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BoundedUUIDSet(0)


@settings(deadline=None)
@given(
    st.integers(min_value=1, max_value=20), st.lists(st.text(alphabet="abcdefgh", max_size=2), max_size=200)
)
def test_never_exceeds_capacity_and_matches_fifo_model(capacity: int, items: list[str]) -> None:
    ring = BoundedUUIDSet(capacity)
    model: list[str] = []
    for item in items:
        added = ring.add(item)
        assert added == (item not in model)
        if added:
            model.append(item)
            if len(model) > capacity:
                model.pop(0)
        assert len(ring) <= capacity
        assert list(ring) == model
        assert all(x in ring for x in model)


@settings(deadline=None)
@given(
    st.integers(min_value=1, max_value=10),
    st.lists(st.tuples(st.booleans(), st.sampled_from("abcdefghijkl")), max_size=100),
)
def test_add_and_discard_match_model(capacity: int, ops: list[tuple[bool, str]]) -> None:
    ring = BoundedUUIDSet(capacity)
    model: list[str] = []
    for is_add, item in ops:
        if is_add:
            assert ring.add(item) == (item not in model)
            if item not in model:
                model.append(item)
                del model[:-capacity]
        else:
            assert ring.discard(item) == (item in model)
            if item in model:
                model.remove(item)
        assert list(ring) == model and len(ring) == len(model)
