from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import permissions as p
from tether.protocol.messages import MessageError, PermissionAllow, PermissionDeny, control_request

SUGGESTION = {"type": "setMode", "mode": "acceptEdits", "destination": "session"}


def can_use_tool(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tool_name": "Bash",
        "display_name": "Bash",
        "input": {"command": "touch x"},
        "description": "Create a file",
        "permission_suggestions": [SUGGESTION],
        "blocked_path": "/tmp/x",
        "tool_use_id": "toolu_1",
    }
    fields.update(overrides)
    return control_request("can_use_tool", "1ac0e926-9087-454a-a797-9cb92623e0ea", **fields)


def pending() -> p.PermissionRequest:
    return p.from_can_use_tool(can_use_tool(), "cse_abc", "2025-01-01T00:00:00Z")


def test_from_can_use_tool() -> None:
    req = pending()
    assert req.request_id == "1ac0e926-9087-454a-a797-9cb92623e0ea"
    assert req.session_id == "cse_abc"
    assert req.tool_name == "Bash"
    assert req.input == {"command": "touch x"}
    assert req.tool_use_id == "toolu_1"
    assert req.description == "Create a file"
    assert req.permission_suggestions == [SUGGESTION]
    assert req.status == "pending" and req.pending
    assert req.created_at == "2025-01-01T00:00:00Z"
    assert req.extra == {"display_name": "Bash", "blocked_path": "/tmp/x"}
    assert req.answered_by is None and req.decision is None


def test_from_can_use_tool_accepts_camel_case_request_id_and_optional_fields() -> None:
    msg: dict[str, Any] = {
        "type": "control_request",
        "requestId": "r1",
        "request": {"subtype": "can_use_tool"},
    }
    msg["request"].update(tool_name="Write", input={}, permission_suggestions="junk")
    req = p.from_can_use_tool(msg, "s", "t")
    assert req.request_id == "r1"
    assert req.tool_use_id is None and req.description is None and req.permission_suggestions is None


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        ({"type": "user"}, "expected a control_request"),
        ({"type": "control_request", "request": {"subtype": "can_use_tool"}}, "no request_id"),
        ({"type": "control_request", "request_id": "r"}, "no 'request' object"),
        (control_request("interrupt", "r"), "expected subtype can_use_tool"),
        (can_use_tool(tool_name=""), "no tool_name"),
        (can_use_tool(tool_name=None), "no tool_name"),
        (can_use_tool(input="x"), "'input' must be an object"),
        (can_use_tool(tool_use_id=7), "'tool_use_id' must be a string"),
    ],
)
def test_from_can_use_tool_rejects(msg: dict[str, Any], reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        p.from_can_use_tool(msg, "s", "t")


def test_round_trip_to_control_request() -> None:
    original = can_use_tool()
    rebuilt = pending().to_control_request()
    assert rebuilt["session_id"] == "cse_abc"
    del rebuilt["session_id"]
    assert rebuilt == original
    assert p.from_can_use_tool(pending().to_control_request(), "cse_abc", "2025-01-01T00:00:00Z") == pending()


def test_a_minimal_question_round_trips_without_the_optional_fields() -> None:
    minimal = control_request("can_use_tool", "r1", tool_name="Read", input={"file_path": "a"})
    req = p.from_can_use_tool(minimal, "cse_abc", "2025-01-01T00:00:00Z")
    assert (req.tool_use_id, req.description, req.permission_suggestions, req.extra) == (None, None, None, {})
    rebuilt = req.to_control_request()
    del rebuilt["session_id"]
    assert rebuilt == minimal


def test_resolve_allow_then_everything_else_fails() -> None:
    req = pending()
    res = p.resolve(req, "allow", "user_1", "t1", {"behavior": "allow", "updatedInput": {}})
    assert res.status == "allowed" and res.previous == "pending"
    assert res.request.answered_by == "user_1" and res.request.answered_at == "t1"
    assert res.request.decision == {"behavior": "allow", "updatedInput": {}}
    assert req.status == "pending"  # values are immutable
    done = res.request
    with pytest.raises(p.AlreadyResolved) as info:
        p.resolve(done, "deny", "user_2", "t2")
    assert info.value.status == "allowed" and info.value.request_id == req.request_id
    with pytest.raises(p.AlreadyResolved):
        p.cancel(done, "t3")
    with pytest.raises(p.AlreadyResolved):
        p.expire(done, "t3")


def test_deny_cancel_expire() -> None:
    assert p.resolve(pending(), "deny", "u", "t").status == "denied"
    cancelled = p.cancel(pending(), "t", by="worker")
    assert cancelled.status == "cancelled" and cancelled.request.answered_by == "worker"
    expired = p.expire(pending(), "t")
    assert expired.status == "expired" and expired.request.answered_by is None


def test_resolve_rejects_unknown_behavior() -> None:
    with pytest.raises(p.PermissionStateError):
        p.resolve(pending(), "ask", "u", "t")  # type: ignore[arg-type]


def test_resolve_with_parsed_decision() -> None:
    allow = p.resolve_with(pending(), PermissionAllow(updated_input={"command": "ls"}), "u", "t")
    assert allow.status == "allowed"
    assert allow.request.decision == {"behavior": "allow", "updatedInput": {"command": "ls"}}
    deny = p.resolve_with(pending(), PermissionDeny(message="no", interrupt=True), "u", "t")
    assert deny.status == "denied"
    assert deny.request.decision == {"behavior": "deny", "message": "no", "interrupt": True}


def test_to_json() -> None:
    body = p.resolve(pending(), "deny", "u", "t").request.to_json()
    assert body["status"] == "denied" and body["answered_by"] == "u"
    assert body["extra"] == {"display_name": "Bash", "blocked_path": "/tmp/x"}
    assert "AlreadyResolved" not in body


def test_error_hierarchy() -> None:
    assert issubclass(p.AlreadyResolved, p.PermissionStateError)
    assert issubclass(p.PermissionStateError, ValueError)


OPS = st.lists(st.sampled_from(["allow", "deny", "cancel", "expire"]), min_size=1, max_size=8)
EXPECTED = {"allow": "allowed", "deny": "denied", "cancel": "cancelled", "expire": "expired"}


def apply(req: p.PermissionRequest, op: str, who: str) -> p.Resolution:
    if op == "allow":
        return p.resolve(req, "allow", who, who)
    if op == "deny":
        return p.resolve(req, "deny", who, who)
    if op == "cancel":
        return p.cancel(req, who)
    return p.expire(req, who)


@settings(deadline=None)
@given(OPS)
def test_first_writer_wins_in_any_order(ops: list[str]) -> None:
    state = pending()
    for i, op in enumerate(ops):
        if i == 0:
            state = apply(state, op, f"w{i}").request
            continue
        before = state
        with pytest.raises(p.AlreadyResolved):
            apply(state, op, f"w{i}")
        assert state == before
    assert state.status == EXPECTED[ops[0]]
    assert state.answered_at == "w0"
    assert state.status in p.TERMINAL_STATUSES


@settings(deadline=None)
@given(OPS)
def test_racing_writers_on_same_snapshot_only_one_commits(ops: list[str]) -> None:
    """Writers that all read the same pending row: the store commits the first, the rest re-read and fail."""
    snapshot = pending()
    stored = snapshot
    winners = 0
    for i, op in enumerate(ops):
        apply(snapshot, op, f"w{i}")  # each writer's pure decision succeeds on its own snapshot...
        try:
            stored = apply(stored, op, f"w{i}").request  # ...but only one conditional update wins
            winners += 1
        except p.AlreadyResolved:
            pass
    assert winners == 1 and stored.status == EXPECTED[ops[0]]


# ---- the table, and answers as clients send them ----------------------------------------------------

def test_the_table_has_one_way_out_of_pending() -> None:
    assert p.settle("r", "pending", "allow") == "allowed"
    assert p.settle("r", "pending", "deny") == "denied"
    assert p.settle("r", "pending", "cancel") == "cancelled"
    assert p.settle("r", "pending", "expire") == "expired"
    for status in ("allowed", "denied", "cancelled", "expired"):
        for how in ("allow", "deny", "cancel", "expire"):
            with pytest.raises(p.AlreadyResolved) as caught:
                p.settle("r", status, how)  # type: ignore[arg-type]
            assert caught.value.status == status and caught.value.request_id == "r"


def answer(inner: Any, **top: Any) -> dict[str, Any]:
    return {"type": "control_response", "response": inner, **top}


def test_parse_answer() -> None:
    allow = {"behavior": "allow", "updatedInput": {}}
    assert p.parse_answer(answer({"subtype": "success", "request_id": "r", "response": allow})) == p.Answer(
        "r", "allow", allow)
    deny = {"behavior": "deny", "message": "no"}
    assert p.parse_answer(answer({"subtype": "success", "requestId": "r2", "response": deny})).how == "deny"
    assert p.parse_answer(answer({"subtype": "error", "error": "x"}, request_id="r3")) == p.Answer("r3", "deny", None)


@pytest.mark.parametrize(("message", "error"), [
    (answer({"subtype": "success"}), "needs response.request_id"),
    (answer("yes", request_id="r"), "subtype must be"),
    (answer({"subtype": "maybe", "request_id": "r"}), "subtype must be"),
    (answer({"subtype": "success", "request_id": "r"}), "behavior 'allow' or 'deny'"),
    (answer({"subtype": "success", "request_id": "r", "response": {"behavior": "ask"}}), "behavior"),
])
def test_parse_answer_refuses(message: dict[str, Any], error: str) -> None:
    with pytest.raises(MessageError, match=error):
        p.parse_answer(message)
