"""The delivery ledger (tether.protocol.delivery): moves only go forward, each move is news once
however many streams report it, and the moves not yet written come out in one batch; and what a
v1 worker's output says about its prompts (an echo starts a turn, a new result ends it)."""

from __future__ import annotations

import pytest

from tether.protocol.delivery import STATES, DeliveryLedger, V1Turns, rank, v1_turns


def test_ten_streams_sending_one_event_make_one_move() -> None:
    ledger = DeliveryLedger()
    news = [ledger.move("s", "u1", "received", seen="pending") for _ in range(10)]
    assert news == [True] + [False] * 9
    assert ledger.state("s", "u1") == "received"
    assert ledger.take_unsaved() == {"s": {"received": ["u1"]}}
    assert ledger.take_unsaved() == {}, "a batch is handed out once"
    assert not ledger.move("s", "u1", "received"), "still known after it was written"


def test_moves_never_go_backwards() -> None:
    ledger = DeliveryLedger()
    assert not ledger.move("s", "u", "received", seen="processed"), "the row says it is further already"
    assert ledger.move("s", "u", "processing")
    assert not ledger.move("s", "u", "received")
    assert ledger.move("s", "u", "processed")
    assert ledger.take_unsaved() == {"s": {"processed": ["u"]}}, "only the furthest state is written"


def test_a_saved_move_is_news_once_and_supersedes_an_unwritten_one() -> None:
    ledger = DeliveryLedger()
    assert ledger.move("s", "a", "received")
    assert ledger.move("s", "b", "received")
    assert ledger.saved("s", "a", "processed"), "the worker acknowledged it (written already)"
    assert not ledger.saved("s", "a", "processed")
    assert not ledger.saved("s", "b", "received"), "subscribers were told by the stream already"
    assert ledger.take_unsaved() == {"s": {"received": ["b"]}}, "a is in the store already"


def test_a_failed_batch_goes_back_behind_newer_moves() -> None:
    ledger = DeliveryLedger()
    ledger.move("s", "a", "received")
    ledger.move("t", "b", "received")
    batch = ledger.take_unsaved()
    ledger.move("s", "a", "processed")
    ledger.restore(batch)
    assert ledger.take_unsaved() == {"s": {"processed": ["a"]}, "t": {"received": ["b"]}}


def test_memory_is_bounded_and_a_forgotten_event_is_judged_by_what_its_caller_saw() -> None:
    ledger = DeliveryLedger(max_known=3)
    for i in range(5):
        ledger.move("s", f"u{i}", "received")
    assert ledger.state("s", "u0") is None and ledger.state("s", "u4") == "received"
    assert not ledger.move("s", "u0", "received", seen="received")
    assert ledger.unsaved_count == 5, "unwritten moves are never forgotten"


def test_bad_states_and_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown delivery state"):
        DeliveryLedger().move("s", "u", "delivered")
    with pytest.raises(ValueError):
        DeliveryLedger(max_known=0)
    assert [rank(s) for s in STATES] == [0, 1, 2, 3] and rank(None) == 0


def test_a_saved_move_behind_a_forgotten_unwritten_one_keeps_the_unwritten_one() -> None:
    ledger = DeliveryLedger(max_known=1)
    assert ledger.move("s", "a", "processed")
    ledger.move("s", "b", "received")  # a is forgotten, its move is not yet written
    assert ledger.state("s", "a") is None
    assert ledger.saved("s", "a", "received"), "forgotten: judged by what the caller saw, so news"
    assert ledger.take_unsaved() == {"s": {"processed": ["a"], "received": ["b"]}}, \
        "the store is behind the unwritten move, which still has to be written"


def echo(uid: str) -> dict[str, object]:
    return {"type": "user", "uuid": uid, "isReplay": True, "message": {"role": "user", "content": "hi"}}


def result(uid: str) -> dict[str, object]:
    return {"type": "result", "uuid": uid, "subtype": "success"}


def test_an_echo_starts_a_turn_and_only_its_result_ends_it() -> None:
    started = v1_turns([echo("p1"), {"type": "assistant", "uuid": "a1"}], new_results=set())
    assert started == V1Turns(started_after=("p1",)) and started.moves, "the echo: processing, not processed"
    assert v1_turns([{"type": "assistant", "uuid": "a2"}, result("r1")], {"r1"}) == V1Turns(finished=True)
    assert not v1_turns([{"type": "assistant", "uuid": "a3"}], set()).moves


def test_a_batch_that_ends_one_turn_and_starts_the_next() -> None:
    turns = v1_turns([echo("p1"), result("r1"), echo("p2"), {"type": "system", "uuid": "s"}], {"r1"})
    assert turns == V1Turns(started=("p1",), finished=True, started_after=("p2",)), \
        "p2 started after the result: its turn runs on"


def test_a_re_sent_result_ends_no_turn() -> None:
    """After a reconnect the worker re-sends writes the server may have stored already: a result
    that is in the log already ended its turn then, not the one started since."""
    turns = v1_turns([result("r1"), echo("p2")], new_results=set())
    assert turns == V1Turns(started_after=("p2",))
    assert v1_turns([result("r1"), echo("p2"), result("r2")], {"r2"}) == V1Turns(started=("p2",), finished=True)


def test_only_echoes_start_turns() -> None:
    prompt = {"type": "user", "uuid": "p1", "message": {"role": "user", "content": "not an echo"}}
    tool_result = {"type": "user", "uuid": "t1", "isReplay": False, "message": {"role": "user", "content": []}}
    no_uuid = {"type": "user", "isReplay": True, "message": {"role": "user", "content": "?"}}
    assert not v1_turns([prompt, tool_result, no_uuid], set()).moves
