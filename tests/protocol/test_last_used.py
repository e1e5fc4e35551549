"""At most one ``last_used_at`` write per credential per interval; the clock is passed in."""

from __future__ import annotations

import pytest

from tether.protocol.last_used import LastUsedThrottle


def test_first_use_is_written_then_not_again_within_the_interval() -> None:
    t = LastUsedThrottle(60)
    assert t.due("tok", 1000.0, None)
    assert not t.due("tok", 1000.5, None)  # a request that read the row before the write committed
    assert not t.due("tok", 1059.9, 1000.0)
    assert t.due("tok", 1060.0, 1000.0)
    assert not t.due("tok", 1061.0, 1000.0)  # the write just made counts, not the older stored value


def test_the_stored_value_counts_after_a_restart() -> None:
    t = LastUsedThrottle(60)  # a fresh process: nothing in memory
    assert not t.due("tok", 1030.0, 1000.0)
    assert t.due("tok", 1060.0, 1000.0)


def test_credentials_are_independent() -> None:
    t = LastUsedThrottle(60)
    assert t.due("a", 10.0, None)
    assert t.due("b", 10.0, None)
    assert not t.due("a", 11.0, None)


def test_a_clock_that_went_back_allows_a_write() -> None:
    t = LastUsedThrottle(60)
    assert t.due("tok", 1000.0, None)
    assert t.due("tok", 900.0, 1000.0)


def test_a_failed_write_is_forgotten() -> None:
    t = LastUsedThrottle(60)
    assert t.due("tok", 10.0, None)
    t.forget("tok")
    assert t.due("tok", 11.0, None)


def test_memory_is_bounded_oldest_first() -> None:
    t = LastUsedThrottle(60, capacity=2)
    assert t.due("a", 0.0, None) and t.due("b", 0.0, None) and t.due("c", 0.0, None)
    assert len(t) == 2
    assert t.due("a", 1.0, None)  # forgotten: the stored value (None here) decides
    assert not t.due("c", 1.0, None)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LastUsedThrottle(0)
    with pytest.raises(ValueError):
        LastUsedThrottle(60, capacity=0)
