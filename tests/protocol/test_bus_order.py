"""BusOrder and PublisherGaps: notices from many instances taken in each session's order."""

from __future__ import annotations

import pytest

from tether.protocol.bus_order import BusOrder, PublisherGaps


def test_first_notice_of_a_session_rereads_then_the_next_ones_go_through() -> None:
    order = BusOrder()
    assert order.notice("s1", 5) == "reread"
    assert order.notice("s1", 6) == "deliver"
    assert order.notice("s1", 7) == "deliver"
    assert order.watermark("s1") == 7


def test_a_hole_rereads_and_moves_the_watermark_past_it() -> None:
    order = BusOrder()
    order.notice("s1", 1)
    assert order.notice("s1", 4) == "reread"
    assert order.watermark("s1") == 4
    assert order.notice("s1", 5) == "deliver"


def test_a_late_notice_is_dropped() -> None:
    order = BusOrder()
    order.notice("s1", 1)
    order.notice("s1", 3)
    assert order.notice("s1", 2) == "drop"
    assert order.notice("s1", 3) == "drop"
    assert order.watermark("s1") == 3


def test_sessions_are_independent() -> None:
    order = BusOrder()
    order.notice("a", 1)
    order.notice("b", 10)
    assert order.notice("a", 2) == "deliver"
    assert order.notice("b", 11) == "deliver"


def test_forget_and_reset_start_over_with_a_reread() -> None:
    order = BusOrder()
    order.notice("a", 1)
    order.notice("b", 1)
    order.forget("a")
    assert order.notice("a", 2) == "reread"
    order.reset()
    assert len(order) == 0
    assert order.notice("b", 2) == "reread"


def test_bounded_sessions_start_over_when_full() -> None:
    order = BusOrder(max_sessions=2)
    order.notice("a", 1)
    order.notice("b", 1)
    assert order.notice("c", 1) == "reread"
    assert len(order) == 1
    assert order.notice("a", 2) == "reread"  # its watermark went with the others
    with pytest.raises(ValueError):
        BusOrder(max_sessions=0)


def test_publisher_numbers_must_follow_from_one() -> None:
    gaps = PublisherGaps()
    assert gaps.entry("p", 1, 0.0)
    assert gaps.entry("p", 2, 0.0)
    assert not gaps.entry("p", 4, 0.0)  # 3 went missing
    assert gaps.entry("p", 5, 0.0)
    assert not gaps.entry("q", 7, 0.0)  # a publisher first seen mid-stream: its earlier entries were missed


def test_expect_sets_where_reading_starts_and_forget_all_clears() -> None:
    gaps = PublisherGaps()
    gaps.expect("p", 41, 0.0)
    assert gaps.entry("p", 42, 0.0)
    gaps.forget_all()
    assert not gaps.entry("p", 43, 0.0)


def test_stale_publishers_are_pruned_when_full() -> None:
    gaps = PublisherGaps(max_publishers=2, stale_s=10.0)
    gaps.entry("old", 1, 0.0)
    gaps.entry("new", 1, 95.0)
    assert gaps.entry("third", 1, 100.0)  # "old" pruned (stale), "new" kept
    assert gaps.entry("new", 2, 100.0)
    assert not gaps.entry("old", 2, 100.0)


def test_knows_the_publishers_seen() -> None:
    gaps = PublisherGaps()
    assert not gaps.knows("p")
    gaps.expect("p", 9, 0.0)
    assert gaps.knows("p")
    gaps.forget_all()
    assert not gaps.knows("p")
