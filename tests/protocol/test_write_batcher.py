from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.write_batcher import BatcherFull, WriteBatcher, classify_post_status


def ev(i: int) -> dict[str, object]:
    return {"type": "stream_event", "uuid": f"s{i}"}


def durable(i: int) -> dict[str, object]:
    return {"type": "assistant", "uuid": f"a{i}"}


def ids(batch: list[dict[str, object]]) -> list[object]:
    return [m["uuid"] for m in batch]


def test_stream_events_wait_for_the_window() -> None:
    b = WriteBatcher(window=0.1)
    b.add(ev(1), now=10.0)
    b.add(ev(2), now=10.05)
    assert b.take(10.05) == []
    assert b.wait_time(10.05) == pytest.approx(0.05)
    assert ids(b.take(10.1)) == ["s1", "s2"]
    assert b.wait_time(10.1) is None and len(b) == 0


def test_a_durable_write_flushes_buffered_stream_events_first() -> None:
    b = WriteBatcher(window=0.1)
    b.add(ev(1), now=0.0)
    b.add(durable(1), now=0.01)
    b.add(ev(2), now=0.02)
    assert b.wait_time(0.02) == 0.0
    assert ids(b.take(0.02)) == ["s1", "a1"], "order kept, the later delta keeps coalescing"
    assert b.coalescing_count == 1
    assert ids(b.take(0.125)) == ["s2"]


def test_batches_hold_at_most_max_batch() -> None:
    b = WriteBatcher(max_batch=500)
    for i in range(1203):
        b.add(durable(i), now=0.0)
    sizes = []
    while batch := b.take(0.0):
        sizes.append(len(batch))
    assert sizes == [500, 500, 203]


def test_batches_respect_the_byte_bound_but_always_move() -> None:
    b = WriteBatcher(max_batch_bytes=100)
    b.add(durable(1), 0.0, size=60)
    b.add(durable(2), 0.0, size=60)
    b.add(durable(3), 0.0, size=500)
    assert ids(b.take(0.0)) == ["a1"]
    assert ids(b.take(0.0)) == ["a2"]
    assert ids(b.take(0.0)) == ["a3"], "one oversize event still goes out alone"


def test_capacity_is_bounded() -> None:
    b = WriteBatcher(capacity=2)
    b.add(durable(1), 0.0)
    b.add(ev(1), 0.0)
    with pytest.raises(BatcherFull):
        b.add(durable(2), 0.0)


def test_add_front_puts_replays_first_in_order() -> None:
    b = WriteBatcher()
    b.add(durable(9), 0.0)
    b.add_front([(durable(1), 0), (durable(2), 0)])
    assert ids(b.take(0.0)) == ["a1", "a2", "a9"]


def test_flush_releases_stream_events() -> None:
    b = WriteBatcher(window=5)
    b.add(ev(1), 0.0)
    b.flush()
    assert ids(b.take(0.0)) == ["s1"]



def test_pending_lists_everything_queued_oldest_first_without_taking_it() -> None:
    b = WriteBatcher(window=5)
    b.add(ev(1), 0.0)
    b.add(durable(1), 0.0)
    b.add(ev(2), 0.0)
    b.add_front([(durable(0), 0)])
    assert ids(b.pending()) == ["a0", "s1", "a1", "s2"]
    assert len(b) == 4 and ids(b.take(0.0)) == ["a0", "s1", "a1"]
    assert ids(b.pending()) == ["s2"]


@pytest.mark.parametrize("settings_", [
    {"window": -0.1}, {"max_batch": 0}, {"capacity": 0}, {"max_batch_bytes": 0},
])
def test_bad_settings_are_refused(settings_: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WriteBatcher(**settings_)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0, max_value=0.3)), max_size=60),
       st.integers(min_value=1, max_value=7))
def test_order_is_always_kept(writes: list[tuple[bool, float]], max_batch: int) -> None:
    b = WriteBatcher(window=0.1, max_batch=max_batch)
    now, sent, expected = 0.0, [], []
    for i, (stream, gap) in enumerate(writes):
        now += gap
        m = ev(i) if stream else durable(i)
        expected.append(m["uuid"])
        b.add(m, now)
        sent += ids(b.take(now))
    b.flush()
    while batch := b.take(now):
        assert len(batch) <= max_batch
        sent += ids(batch)
    assert sent == expected


@pytest.mark.parametrize(("status", "verdict"), [
    (None, "retry"), (200, "ok"), (204, "ok"), (429, "retry"), (500, "retry"), (503, "retry"),
    (408, "retry"), (401, "reject"), (403, "reject"), (400, "drop"), (404, "drop"), (409, "drop"),
    (413, "drop"), (302, "drop"),
])
def test_post_status_classification(status: int | None, verdict: str) -> None:
    assert classify_post_status(status) == verdict
