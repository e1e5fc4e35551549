"""The turn state machine and the stream accumulator (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.agent import wire
from tether.agent.runner import merge_roles
from tether.agent.stream import MessageAccumulator, StreamProtocolError
from tether.agent.turn import TurnState, TurnStateError


def start(msg_id: str = "msg_1") -> dict[str, Any]:
    return {"type": "message_start", "message": {"id": msg_id, "model": "m", "content": [],
                                                 "usage": {"input_tokens": 7, "output_tokens": 1}}}


def text_events(index: int, *pieces: str) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            *({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
              for p in pieces),
            {"type": "content_block_stop", "index": index}]


def tool_events(index: int, tool_id: str, name: str, *json_pieces: str) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index,
             "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}},
            *({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta",
                                                                         "partial_json": p}} for p in json_pieces),
            {"type": "content_block_stop", "index": index}]


def end(stop: str) -> list[dict[str, Any]]:
    return [{"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}},
            {"type": "message_stop"}]


def feed(state: TurnState, events: list[dict[str, Any]]) -> list[Any]:
    return [done for e in events if (done := state.on_event(e)) is not None]


def prompt() -> TurnState:
    return TurnState(prompt={"role": "user", "content": "hi"})


def test_accumulator_blocks_and_usage() -> None:
    acc = MessageAccumulator()
    events = [start(), {"type": "ping"}, *text_events(0, "Hel", "lo"),
              *tool_events(1, "t1", "Bash", '{"comm', 'and": "ls"}'), *end("tool_use")]
    done = [d for e in events if (d := acc.feed(e)) is not None]
    assert [d.block for d in done] == [{"type": "text", "text": "Hello"},
                                       {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]
    assert acc.stop_reason == "tool_use" and acc.usage["output_tokens"] == 9 and acc.start_usage["output_tokens"] == 1
    assert acc.stopped and acc.message_id == "msg_1"


def test_accumulator_bad_json_and_grammar() -> None:
    acc = MessageAccumulator()
    acc.feed(start())
    done = [d for e in tool_events(0, "t1", "Bash", '{"x": ') if (d := acc.feed(e)) is not None]
    assert done[0].invalid_input == '{"x": ' and done[0].block["input"] == {}
    with pytest.raises(StreamProtocolError):
        acc.feed({"type": "content_block_delta", "index": 5, "delta": {"type": "text_delta", "text": "x"}})
    with pytest.raises(StreamProtocolError):
        acc.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_plain_turn_succeeds() -> None:
    state = prompt()
    state.begin_request()
    feed(state, [start(), *text_events(0, "Hi", " there"), *end("end_turn")])
    assert state.end_message("m") == []
    outcome = state.success()
    assert (outcome.subtype, outcome.result_text, outcome.stop_reason, outcome.num_turns) == \
        ("success", "Hi there", "end_turn", 1)
    assert state.new_messages == [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": [{"type": "text", "text": "Hi there"}]}]
    assert state.usage.input_tokens == 7 and state.usage.output_tokens == 9


def test_tool_round_trip_builds_a_valid_history() -> None:
    state = prompt()
    state.begin_request()
    feed(state, [start(), *tool_events(0, "t1", "Bash", '{"command": "ls"}'), *end("tool_use")])
    calls = state.end_message("m")
    assert [c.id for c in calls] == ["t1"] and state.phase == "tools"
    state.mark("t1", "running")
    state.record_result("t1", wire.tool_result_block("t1", "a.txt", False))
    state.begin_request()
    feed(state, [start("msg_2"), *text_events(0, "done"), *end("end_turn")])
    state.end_message("m")
    assert [m["role"] for m in state.new_messages] == ["user", "assistant", "user", "assistant"]
    assert state.new_messages[2]["content"][0]["type"] == "tool_result"
    assert state.success().num_turns == 2


def test_abort_while_streaming_keeps_the_partial_text() -> None:
    state = prompt()
    state.begin_request()
    feed(state, [start(), *text_events(0, "tick ", "tick ")[:-1]])  # block still open
    plan, outcome = state.abort()
    assert plan.partial_content == [{"type": "text", "text": "tick tick "}]
    assert plan.marker == wire.INTERRUPTED and plan.terminal_reason == "aborted_streaming"
    assert [e["type"] for e in plan.closing_events] == ["content_block_stop", "message_delta", "message_stop"]
    assert outcome.is_error and outcome.stop_reason is None
    assert state.new_messages[-1] == {"role": "user", "content": [{"type": "text", "text": wire.INTERRUPTED}]}
    with pytest.raises(TurnStateError):
        state.abort()


def test_abort_with_tools_answers_every_call() -> None:
    state = prompt()
    state.begin_request()
    feed(state, [start(), *tool_events(0, "t1", "Bash", "{}"), *tool_events(1, "t2", "Write", "{}"),
                 *tool_events(2, "t3", "Read", "{}"), *end("tool_use")])
    state.end_message("m")
    state.mark("t1", "done")
    state.record_result("t1", wire.tool_result_block("t1", "ok", False))
    state.mark("t2", "running")
    plan, outcome = state.abort()
    by_id = {r.call.id: r.block["content"] for r in plan.tool_results}
    assert by_id == {"t2": wire.STOPPED_WHILE_RUNNING_TEXT, "t3": wire.REJECTED_TEXT}
    assert outcome.terminal_reason == "aborted_tools" and outcome.stop_reason == "tool_use"
    last = state.new_messages[-1]
    assert [b.get("tool_use_id") for b in last["content"]] == ["t1", "t2", "t3", None]
    assert state.denials == []


def test_abort_while_asking_records_a_denial() -> None:
    state = prompt()
    state.begin_request()
    feed(state, [start(), *tool_events(0, "t1", "Bash", '{"command": "x"}'), *end("tool_use")])
    state.end_message("m")
    state.mark("t1", "awaiting_permission")
    plan, _ = state.abort()
    assert plan.tool_results[0].meta == {"id": "t1", "non_execution_kind": "user-rejected"}
    assert state.denials == [{"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "x"}}]


def test_failure_keeps_the_prompt() -> None:
    state = prompt()
    state.begin_request()
    feed(state, [start(), *text_events(0, "par")[:-1]])
    outcome = state.failure("API Error: boom", 529)
    assert outcome.errors == ("API Error: boom",) and outcome.api_error_status == 529
    assert state.new_messages == [{"role": "user", "content": "hi"}]


def test_merge_roles() -> None:
    merged = merge_roles([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "c"}]}])
    assert merged == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "c"}]}]
