from __future__ import annotations

import pytest

from tether.protocol.replay_buffer import ReplayBuffer, message_uuid


def msg(u: str | None, kind: str = "assistant") -> dict[str, object]:
    return {"type": kind} if u is None else {"type": kind, "uuid": u}


def test_messages_without_uuid_are_not_kept() -> None:
    buf = ReplayBuffer()
    assert not buf.record(msg(None))
    assert not buf.record({"type": "x", "uuid": ""})
    assert len(buf) == 0
    assert message_uuid({"uuid": 3}) is None


def test_ack_forgets_and_keeps_order_of_the_rest() -> None:
    buf = ReplayBuffer()
    for u in "abcd":
        buf.record(msg(u))
    assert buf.ack(["b", "zz"]) == 1
    assert [m["uuid"] for m in buf.unacked()] == ["a", "c", "d"]
    assert "b" not in buf and "a" in buf


def test_rejected_messages_are_replayed_once_oldest_first() -> None:
    buf = ReplayBuffer()
    for u in "abc":
        buf.record(msg(u))
    assert buf.mark_rejected(["c", "a", "nope"]) == 2
    assert buf.rejected_count == 2 and buf.state_of("b") == "pending"
    assert [m["uuid"] for m in buf.take_replay()] == ["a", "c"]
    assert buf.take_replay() == [], "a replay is handed out once"
    assert buf.state_of("a") == "pending"
    buf.ack(["a", "b", "c"])
    assert len(buf) == 0


def test_capacity_evicts_oldest() -> None:
    buf = ReplayBuffer(capacity=3)
    for u in "abcde":
        buf.record(msg(u))
    assert [m["uuid"] for m in buf.unacked()] == ["c", "d", "e"]
    assert buf.evicted == 2


def test_default_capacity_is_the_references_1000() -> None:
    buf = ReplayBuffer()
    for i in range(1005):
        buf.record(msg(str(i)))
    assert len(buf) == 1000 and buf.capacity == 1000
    assert buf.unacked()[0]["uuid"] == "5"


def test_re_recording_replaces_in_place() -> None:
    buf = ReplayBuffer()
    buf.record(msg("a"))
    buf.record(msg("b"))
    buf.mark_rejected(["a"])
    buf.record({"type": "assistant", "uuid": "a", "v": 2})
    assert buf.unacked()[0] == {"type": "assistant", "uuid": "a", "v": 2}
    assert buf.state_of("a") == "pending"


def test_bad_capacity() -> None:
    with pytest.raises(ValueError):
        ReplayBuffer(0)
