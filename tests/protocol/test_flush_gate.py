from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.flush_gate import FlushGate, FlushGateOverflow


def test_inactive_gate_does_not_queue() -> None:
    gate: FlushGate[str] = FlushGate()
    assert not gate.active
    assert gate.enqueue("a") is False
    assert gate.pending_count == 0


def test_start_enqueue_end_in_order() -> None:
    gate: FlushGate[int] = FlushGate()
    gate.start()
    assert all(gate.enqueue(i) for i in range(5))
    assert gate.pending_count == 5
    assert gate.end() == [0, 1, 2, 3, 4]
    assert not gate.active and gate.pending_count == 0
    assert gate.enqueue(9) is False


def test_drop_discards() -> None:
    gate: FlushGate[int] = FlushGate()
    gate.start()
    gate.enqueue(1)
    gate.enqueue(2)
    assert gate.drop() == 2
    assert not gate.active and gate.pending_count == 0
    assert gate.end() == []


def test_deactivate_keeps_items_for_next_flush() -> None:
    gate: FlushGate[str] = FlushGate()
    gate.start()
    gate.enqueue("old")
    gate.deactivate()
    assert not gate.active and gate.pending_count == 1
    assert gate.enqueue("direct") is False
    gate.start()
    gate.enqueue("new")
    assert gate.end() == ["old", "new"]


def test_overflow_raises_by_default() -> None:
    gate: FlushGate[int] = FlushGate(capacity=2)
    gate.start()
    gate.enqueue(1)
    gate.enqueue(2)
    with pytest.raises(FlushGateOverflow):
        gate.enqueue(3)
    assert gate.end() == [1, 2]


def test_overflow_drop_oldest() -> None:
    gate: FlushGate[int] = FlushGate(capacity=2, on_overflow="drop_oldest")
    gate.start()
    for i in range(5):
        assert gate.enqueue(i)
    assert gate.dropped == 3
    assert gate.end() == [3, 4]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FlushGate(capacity=0)


@settings(deadline=None)
@given(
    st.lists(st.one_of(st.integers(), st.sampled_from(["start", "end", "drop", "deactivate"])), max_size=60)
)
def test_gate_matches_model(ops: list[int | str]) -> None:
    gate: FlushGate[int] = FlushGate(capacity=1000)
    active = False
    queue: list[int] = []
    sent: list[int] = []
    for op in ops:
        if op == "start":
            gate.start()
            active = True
        elif op == "end":
            assert gate.end() == queue
            sent.extend(queue)
            active, queue = False, []
        elif op == "drop":
            assert gate.drop() == len(queue)
            active, queue = False, []
        elif op == "deactivate":
            gate.deactivate()
            active = False
        else:
            assert isinstance(op, int)
            assert gate.enqueue(op) == active
            if active:
                queue.append(op)
        assert gate.active == active and gate.pending_count == len(queue)
