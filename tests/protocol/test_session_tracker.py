from __future__ import annotations

from typing import Any

import pytest

from tether.protocol.session_tracker import SessionTracker


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "user", "uuid": "u", "message": {"role": "user", "content": text}, **extra}


def tool_use(name: str, **args: Any) -> dict[str, Any]:
    return {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": name, "input": args}]}}


def can_use_tool(rid: str) -> dict[str, Any]:
    return {"type": "control_request", "request_id": rid,
            "request": {"subtype": "can_use_tool", "tool_name": "Edit", "input": {}}}


def answer(rid: str) -> dict[str, Any]:
    return {"type": "control_response", "response": {"subtype": "success", "request_id": rid,
                                                     "response": {"behavior": "allow", "updatedInput": {}}}}


def test_state_machine_of_a_turn_with_a_permission() -> None:
    tr = SessionTracker(cwd="/repo")
    assert tr.state == "idle"
    assert tr.observe_inbound(user("fix the bug in app.py"), 1.0)
    assert tr.state == "running"
    tr.observe_outbound(user("fix the bug in app.py", isReplay=True), 1.1)
    tr.observe_outbound(tool_use("Edit", file_path="/repo/src/app.py"), 2.0)
    assert tr.observe_outbound(can_use_tool("r1"), 2.1)
    assert tr.state == "requires_action" and tr.pending_permissions == ("r1",)
    assert tr.observe_inbound(answer("r1"), 3.0)
    assert tr.state == "running" and tr.pending_permissions == ()
    tr.observe_outbound({"type": "assistant", "message": {"content": [{"type": "text", "text": "Done.\n  ok"}]}}, 4)
    assert tr.observe_outbound({"type": "result", "subtype": "success", "is_error": False}, 5.0)
    assert tr.state == "idle" and tr.turns == 1
    assert [(a.kind, a.summary) for a in tr.activities] == [
        ("tool_start", "Editing src/app.py"), ("text", "Done. ok"), ("result", "Session completed")]
    assert tr.title == "fix the bug in app.py"


def test_cancel_request_settles_and_two_pending_need_both() -> None:
    tr = SessionTracker()
    tr.observe_outbound(can_use_tool("a"), 0)
    tr.observe_outbound(can_use_tool("b"), 0)
    tr.observe_outbound({"type": "control_cancel_request", "request_id": "a"}, 0)
    assert tr.state == "requires_action"
    tr.observe_inbound({"type": "control_response", "response": {"subtype": "success", "requestId": "b"}}, 0)
    assert tr.state == "running"


def test_error_result_records_its_first_error_and_clears_pending() -> None:
    tr = SessionTracker()
    tr.observe_outbound(can_use_tool("a"), 0)
    tr.observe_outbound({"type": "result", "subtype": "error_during_execution", "is_error": True,
                         "errors": ["", "boom"]}, 1)
    assert tr.state == "idle" and tr.pending_permissions == ()
    assert tr.activities[-1].kind == "error" and tr.activities[-1].summary == "boom"
    tr.observe_outbound({"type": "result", "subtype": "error_max_turns", "is_error": True}, 2)
    assert tr.activities[-1].summary == "error_max_turns"


def test_only_ten_activities_are_kept() -> None:
    tr = SessionTracker()
    for i in range(15):
        tr.observe_outbound(tool_use("Bash", command=f"echo {i}"), float(i))
    assert len(tr.activities) == 10 and tr.activities[0].summary == "Running echo 5"


def test_title_comes_from_the_first_real_user_message() -> None:
    tr = SessionTracker()
    tr.observe_outbound(user("replayed", isReplay=True), 0)
    tr.observe_inbound(user("/compact"), 0)
    tr.observe_outbound({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}}, 0)
    assert tr.title is None
    tr.observe_inbound(user("  first\nreal   prompt "), 0)
    tr.observe_inbound(user("second prompt"), 0)
    assert tr.title == "first real prompt"


def test_agent_output_while_idle_means_running() -> None:
    tr = SessionTracker()
    assert tr.observe_outbound({"type": "assistant", "message": {"content": "odd"}}, 0)
    assert tr.state == "running"
    assert not tr.observe_outbound({"type": "system", "subtype": "init"}, 0)


def test_pending_tool_names_the_open_permission_requests() -> None:
    t = SessionTracker()
    t.observe_outbound({"type": "control_request", "request_id": "r1",
                        "request": {"subtype": "can_use_tool", "tool_name": "Write", "input": {}}}, 1.0)
    assert t.pending_tool("r1") == "Write"
    assert t.pending_tool("r2") is None and t.pending_tool(None) is None
    t.observe_inbound({"type": "control_response", "response": {"subtype": "success", "request_id": "r1",
                                                                 "response": {"behavior": "deny", "message": "no"}}}, 2.0)
    assert t.pending_tool("r1") is None


def test_activities_come_from_tool_uses_and_non_blank_text_only() -> None:
    tr = SessionTracker()
    tr.observe_outbound({"type": "assistant", "message": {"content": [
        "stray", {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "   "}, {"type": "text", "text": 3},
        {"type": "tool_use", "name": 7, "input": "not an object"}, {"type": "text", "text": "x" * 200}]}}, 1.0)
    kinds = [(a.kind, len(a.summary)) for a in tr.activities]
    assert kinds[0][0] == "tool_start" and kinds[1] == ("text", 80)
    assert len(kinds) == 2


def test_the_hosts_own_notes_are_activities_too() -> None:
    tr = SessionTracker(max_activities=2)
    tr.note("error", "Too large to relay", 1.0)
    tr.observe_outbound(tool_use("Bash", command="ls"), 2.0)
    tr.note("error", "again", 3.0)
    assert [(a.kind, a.summary, a.at) for a in tr.activities] == [("tool_start", "Running ls", 2.0),
                                                                  ("error", "again", 3.0)]
    assert tr.state == "running", "a note does not move the state"


def test_an_inbound_interrupt_changes_neither_title_nor_permissions() -> None:
    tr = SessionTracker()
    tr.observe_outbound(can_use_tool("r1"), 0)
    tr.observe_inbound({"type": "control_request", "request_id": "i", "request": {"subtype": "interrupt"}}, 1)
    assert tr.pending_permissions == ("r1",) and tr.title is None


def test_an_answer_to_a_question_not_open_here_changes_nothing() -> None:
    tr = SessionTracker()
    tr.observe_outbound(can_use_tool("r1"), 0)
    assert not tr.observe_inbound(answer("other"), 1)
    assert not tr.observe_outbound({"type": "control_cancel_request"}, 1)
    assert tr.state == "requires_action" and tr.pending_permissions == ("r1",)


def test_at_least_one_activity_is_kept() -> None:
    with pytest.raises(ValueError):
        SessionTracker(max_activities=0)
