from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.sequence import SequenceTracker


def test_in_order_stream() -> None:
    t = SequenceTracker()
    assert [t.observe(i) for i in (1, 2, 3)] == ["new", "new", "new"]
    assert t.high_water == t.resume_from == 3
    assert len(t) == 0  # contiguous runs collapse into the floor
    assert t.floor == 3


def test_duplicates_are_dropped() -> None:
    t = SequenceTracker()
    t.observe(1)
    t.observe(2)
    assert t.observe(2) == "duplicate"
    assert t.observe(1) == "duplicate"
    assert t.observe(0) == "duplicate"


def test_gap_is_reported_but_accepted_and_hole_fills_later() -> None:
    t = SequenceTracker()
    t.observe(1)
    assert t.observe(4) == "gap"
    assert t.high_water == 4
    assert t.observe(3) == "new"
    assert t.observe(2) == "new"
    assert t.observe(3) == "duplicate"
    assert len(t) == 0 and t.floor == 4


def test_resume_start() -> None:
    t = SequenceTracker(start=10)
    assert t.resume_from == 10
    assert t.observe(10) == "duplicate"
    assert t.observe(11) == "new"
    assert SequenceTracker().observe(57) == "gap"  # live-only subscribe starts mid-log


def test_pruning_bounds_memory_and_keeps_window() -> None:
    t = SequenceTracker(max_entries=10, window=5)
    t.observe(1)
    for seq in range(3, 40, 2):  # odd numbers: every one leaves a hole
        t.observe(seq)
    assert len(t) <= 10
    assert t.floor > 4  # pruned at least once
    # a hole older than the window is now treated as seen: never delivered late
    assert t.observe(4) == "duplicate"
    # a hole inside the window can still be filled
    assert t.observe(t.high_water - 1) == "new"


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3"])
def test_invalid_sequence_numbers(bad: object) -> None:
    with pytest.raises(ValueError):
        SequenceTracker().observe(bad)  # type: ignore[arg-type]


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        SequenceTracker(max_entries=0)
    with pytest.raises(ValueError):
        SequenceTracker(start=-1)


@settings(deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=400), max_size=400),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=30),
)
def test_never_new_twice_and_bounded(seqs: list[int], max_entries: int, window: int) -> None:
    t = SequenceTracker(max_entries=max_entries, window=window)
    accepted: set[int] = set()
    for seq in seqs:
        result = t.observe(seq)
        if result != "duplicate":
            assert seq not in accepted
            accepted.add(seq)
        else:
            assert t.seen(seq)
        assert len(t) <= max_entries
        assert t.high_water == max([0, *accepted])


@settings(deadline=None)
@given(st.permutations(list(range(1, 60))))
def test_unbounded_window_accepts_every_number_once(order: list[int]) -> None:
    t = SequenceTracker(max_entries=1000, window=200)
    results = [t.observe(s) for s in order]
    assert "duplicate" not in results
    assert all(t.observe(s) == "duplicate" for s in order)
    assert t.floor == 59 and len(t) == 0


def test_advance_to_collapses_a_filtered_readers_skips_into_the_floor() -> None:
    t = SequenceTracker()
    t.observe(2)  # a hole at 1: held individually
    assert len(t) == 1
    t.advance_to(7)  # an in-order reader of a filtered log: nothing at or below 7 is still to come
    assert (t.floor, t.high_water, len(t)) == (7, 7, 0)
    assert t.observe(5) == "duplicate" and t.observe(8) == "new"
    t.advance_to(3)  # never backwards
    assert (t.floor, t.high_water) == (8, 8)
    with pytest.raises(ValueError):
        t.advance_to(-1)
