"""The REPL bridge's messaging rules: eligibility, the history flush behind the FlushGate, the two
dedup rings, server control requests and the per-turn result (docs/protocol.md §7.3, §7.5, §12.4)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import repl_bridge as rb
from tether.protocol.flush_gate import FlushGate
from tether.protocol.messages import control_request, user_message


def assistant(text: str, uid: str) -> dict[str, Any]:
    return {"type": "assistant", "uuid": uid, "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


def test_eligibility() -> None:
    assert rb.is_eligible(user_message("hi", "u1"))
    assert rb.is_eligible(assistant("hello", "a1"))
    assert rb.is_eligible(user_message([{"type": "tool_result", "tool_use_id": "t", "content": "ok"}], "u2"))
    assert not rb.is_eligible({**user_message("hi", "u1"), "isReplay": True})
    assert not rb.is_eligible({**assistant("x", "a2"), "isVirtual": True})
    assert not rb.is_eligible({"type": "assistant", "message": {}})  # no uuid: cannot be deduplicated
    for other in ({"type": "result", "uuid": "r"}, {"type": "stream_event", "uuid": "s"},
                  {"type": "system", "subtype": "init", "uuid": "i"},
                  {"type": "system", "subtype": "local_command", "uuid": "l", "content": "  "},
                  control_request("can_use_tool", "req")):
        assert not rb.is_eligible(other), other
    assert rb.is_eligible({"type": "system", "subtype": "local_command", "uuid": "l", "content": "cost: $0"})


def test_wire_form_is_stamped_and_local_commands_become_assistant_text() -> None:
    out = rb.to_sdk_message({**user_message("hi", "u1"), "isMeta": True}, "session_x")
    assert out["session_id"] == "session_x" and out["isSynthetic"] is True and "isMeta" not in out
    cmd = rb.to_sdk_message({"type": "system", "subtype": "local_command", "uuid": "l", "content": "Total: $0"}, "s")
    assert cmd["type"] == "assistant" and cmd["uuid"] == "l"
    assert cmd["message"]["content"] == [{"type": "text", "text": "Total: $0"}]
    plain = rb.to_sdk_message(user_message("hi", "u2"), "session_x")
    assert plain == {**user_message("hi", "u2"), "session_id": "session_x"} and "isSynthetic" not in plain
    meta_false = rb.to_sdk_message({**user_message("hi", "u3"), "isMeta": False}, "s")
    assert "isSynthetic" not in meta_false and "isMeta" not in meta_false
    result = rb.to_sdk_message({"type": "result", "uuid": "r", "isMeta": True}, "s")
    assert result["isMeta"] is True and "isSynthetic" not in result, "only a user message becomes synthetic"


def conversation(turns: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(turns):
        out += [user_message(f"prompt {i}", f"u{i}"), {**user_message(f"prompt {i}", f"u{i}"), "isReplay": True},
                {"type": "system", "subtype": "init", "uuid": f"i{i}"}, assistant(f"answer {i}", f"a{i}"),
                {"type": "result", "uuid": f"r{i}"}]
    return out


def test_history_selection_keeps_the_last_cap_eligible_messages_not_sent_before() -> None:
    convo = conversation(5)
    assert [m["uuid"] for m in rb.select_history(convo)] == [u for i in range(5) for u in (f"u{i}", f"a{i}")]
    assert [m["uuid"] for m in rb.select_history(convo, cap=3)] == ["a3", "u4", "a4"]
    assert [m["uuid"] for m in rb.select_history(convo, cap=0, skip={"u0", "a0"})][:2] == ["u1", "a1"]


@settings(deadline=None, max_examples=300)
@given(history=st.integers(0, 30), during=st.integers(0, 20), cap=st.integers(0, 40), overlap=st.booleans(),
       sent_before=st.integers(0, 10))
def test_flush_sends_history_then_the_queued_live_messages_each_once_in_order(
        history: int, during: int, cap: int, overlap: bool, sent_before: int) -> None:
    """The gate starts before the transport connects; messages produced meanwhile queue (and the
    front end's transcript may already hold them when the flush reads it: ``overlap``). The flush
    is the last ``cap`` history messages not sent before, then every queued one: in order, once."""
    transcript = [user_message(f"m{i}", f"m{i}") for i in range(history)]
    gate: FlushGate[dict[str, Any]] = FlushGate()
    gate.start()
    live = [user_message(f"l{i}", f"l{i}") for i in range(during)]
    for msg in live:
        assert gate.enqueue(msg)
        if overlap:
            transcript.append(msg)
    inbound = rb.InboundFilter()
    already = [f"m{i}" for i in range(min(sent_before, history))]
    for uid in already:
        inbound.sent(uid)
    plan = rb.plan_flush(transcript, gate.end(), cap=cap, sent=inbound.posted)
    sent = [m["uuid"] for m in plan]
    fresh = [f"m{i}" for i in range(history) if f"m{i}" not in already]
    expected = (fresh[-cap:] if cap > 0 else fresh) + [m["uuid"] for m in live]
    assert sent == expected
    assert not gate.active and gate.pending_count == 0


def test_a_flush_between_turns_ends_with_the_last_result() -> None:
    convo = conversation(2)  # ends with the result of turn 1
    plan = rb.plan_flush(convo, [], cap=10, sent=set())
    assert [m["uuid"] for m in plan] == ["u0", "a0", "u1", "a1", "r1"]
    assert rb.plan_flush(convo, [], cap=10, sent={"u0", "a0", "u1", "a1"}) == []  # nothing new: nothing at all
    live = user_message("now", "n")
    assert [m["uuid"] for m in rb.plan_flush(convo, [live], cap=10, sent=set())][-1] == "n"


def test_control_messages_queued_behind_the_gate_keep_their_place() -> None:
    ask = control_request("can_use_tool", "r1", tool_name="Bash", input={})
    queued = [user_message("p", "p"), ask, assistant("a", "a"), rb.turn_result("s", "res"), user_message("p", "p")]
    plan = rb.plan_flush([user_message("old", "o")], queued, cap=10, sent=set())
    assert [m.get("uuid", m.get("request_id")) for m in plan] == ["o", "p", "r1", "a", "res"]


def test_inbound_routing_drops_echoes_and_redeliveries() -> None:
    f = rb.InboundFilter(capacity=100)
    f.sent("mine")
    assert f.route(user_message("x", "mine")) == "echo"
    prompt = user_message("from the phone", "p1")
    assert f.route(prompt) == "prompt"
    assert f.route(prompt) == "redelivery"
    assert f.already_sent("p1")  # it is in the log as a client event: never written back
    interrupt = {**control_request("interrupt", "r1"), "uuid": "c1"}
    assert f.route(interrupt) == "control_request"
    assert f.route(interrupt) == "redelivery"  # a re-sent interrupt must not stop a later turn
    assert f.route({"type": "control_response", "uuid": "c2", "response": {}}) == "permission_response"
    assert f.route({"type": "keep_alive"}) == "ignored"
    assert f.route({"type": "assistant", "uuid": "z"}) == "ignored"
    f.new_session()
    assert f.route(prompt) == "prompt"


def test_rings_are_bounded() -> None:
    f = rb.InboundFilter(capacity=3)
    for i in range(5):
        f.sent(f"u{i}")
    assert len(f.posted) == 3 and not f.already_sent("u0") and f.already_sent("u4")


def test_control_requests() -> None:
    init = rb.plan_control_request(control_request("initialize", "r1"), outbound_only=True, pid=42)
    assert init.action == "reply" and init.reply is not None
    assert init.reply["response"]["subtype"] == "success"
    assert init.reply["response"]["response"] == rb.initialize_payload(42)
    refused = rb.plan_control_request(control_request("interrupt", "r2"), outbound_only=True, pid=1)
    assert refused.reply is not None and refused.reply["response"]["error"] == rb.OUTBOUND_ONLY_ERROR
    for subtype in ("interrupt", "set_model", "set_permission_mode", "set_max_thinking_tokens"):
        plan = rb.plan_control_request(control_request(subtype, "r3", model="m"), outbound_only=False, pid=1)
        assert (plan.action, plan.subtype, plan.request_id) == ("delegate", subtype, "r3")
    other = rb.plan_control_request(control_request("can_use_tool", "r4"), outbound_only=False, pid=1)
    assert other.reply is not None
    assert other.reply["response"]["error"] == "REPL bridge does not handle control_request subtype: can_use_tool"
    assert rb.plan_control_request({"type": "control_request", "request": {}}, outbound_only=False, pid=1).action \
        == "ignore"


def test_turn_result() -> None:
    minimal = rb.turn_result("session_s", "u")
    assert minimal["type"] == "result" and minimal["subtype"] == "success" and minimal["num_turns"] == 0
    assert minimal["result"] == "" and minimal["session_id"] == "session_s" and minimal["uuid"] == "u"
    agent = {"type": "result", "subtype": "error_during_execution", "is_error": True, "uuid": "agent-u",
             "total_cost_usd": 0.5}
    out = rb.turn_result("session_s", "u", agent)
    assert out["subtype"] == "error_during_execution" and out["uuid"] == "agent-u" and out["session_id"] == "session_s"
    assert "session_id" not in agent  # never mutated
