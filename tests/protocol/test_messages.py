from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import messages as m
from tether.protocol.messages import MessageError, PermissionAllow, PermissionDeny

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)


# --- parse_message / parse_line ---------------------------------------------------------


def test_parse_message_returns_the_object_untouched() -> None:
    obj = {"type": "some_future_type", "weird": [1, {"x": None}]}
    assert m.parse_message(obj) is obj


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([], "JSON object, got array"),
        (None, "JSON object, got null"),
        ("user", "JSON object, got string"),
        (3, "JSON object, got number"),
        ({}, "no 'type'"),
        ({"type": 1}, "must be a string, got number"),
        ({"type": None}, "must be a string, got null"),
        ({"type": True}, "must be a string, got boolean"),
        ({"type": {"a": 1}}, "must be a string, got object"),
        ({"type": ("x",)}, "must be a string, got array"),
        ({"type": {"x"}}, "must be a string, got set"),  # a caller's Python value, named as such
        ({"type": ""}, "empty"),
    ],
)
def test_parse_message_rejects_with_precise_reason(obj: object, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        m.parse_message(obj)


def test_message_error_is_value_error() -> None:
    assert issubclass(MessageError, ValueError)


def test_parse_line_accepts_str_and_bytes_with_newline() -> None:
    assert m.parse_line('{"type":"keep_alive"}\n') == {"type": "keep_alive"}
    assert m.parse_line(b'  {"type":"user","x":"\xc3\xa9"}\r\n') == {"type": "user", "x": "é"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("{", "not valid JSON"),
        ('{"type":"x"} trailing', "not valid JSON"),
        ('{"type":"x","n":NaN}', "NaN is not allowed"),
        ('{"type":"x","n":-Infinity}', "-Infinity is not allowed"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("[1]", "got array"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply|not valid JSON"),
    ],
)
def test_parse_line_rejects(line: str | bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        m.parse_line(line)


def test_parse_line_size_limit_counts_bytes() -> None:
    line = json.dumps({"type": "user", "t": "é" * 10})
    size = len(line.encode())
    assert m.parse_line(line, max_bytes=size)["type"] == "user"
    with pytest.raises(MessageError, match="over the"):
        m.parse_line(line, max_bytes=size - 1)


@settings(deadline=None)
@given(st.text(min_size=1), st.dictionaries(st.text().filter(lambda k: k != "type"), JSON, max_size=4))
def test_any_typed_object_round_trips_through_parse_line(kind: str, fields: dict[str, Any]) -> None:
    obj = {**fields, "type": kind}
    assert m.parse_line(json.dumps(obj)) == obj
    assert m.parse_line(json.dumps(obj).encode()) == obj


# --- classification --------------------------------------------------------------------


def test_classifiers() -> None:
    req = m.control_request("interrupt", "r1")
    res = m.control_success("r1")
    cancel = m.cancel_request("r1")
    assert m.is_control_request(req) and not m.is_control_request(res)
    assert m.is_control_response(res) and not m.is_control_response(req)
    assert m.is_control_cancel(cancel)
    assert all(m.is_control_message(x) for x in (req, res, cancel))
    assert not m.is_control_message({"type": "user"})
    assert m.is_ephemeral({"type": "stream_event"})
    assert m.is_ephemeral({"type": "custom", "ephemeral": True})
    assert not m.is_ephemeral({"type": "custom", "ephemeral": "yes"})
    assert not m.is_ephemeral({"type": "assistant"})
    assert m.is_keep_alive({"type": "keep_alive"})
    assert not m.is_keep_alive({"type": "user"})


def test_control_subtype() -> None:
    assert m.control_subtype(m.control_request("can_use_tool", "r")) == "can_use_tool"
    assert m.control_subtype(m.control_success("r")) == "success"
    assert m.control_subtype(m.control_error("r", "boom")) == "error"
    assert m.control_subtype({"type": "user", "request": {"subtype": "x"}}) is None
    assert m.control_subtype({"type": "control_request", "request": "nope"}) is None
    assert m.control_subtype({"type": "control_request", "request": {"subtype": 3}}) is None
    assert m.control_subtype({"type": "control_request"}) is None


def test_payload_helpers() -> None:
    req = m.control_request("set_model", "r", model="x")
    assert m.request_payload(req) == {"subtype": "set_model", "model": "x"}
    assert m.request_payload(m.control_success("r")) is None
    assert m.response_payload(m.control_success("r", {"a": 1})) == {
        "subtype": "success",
        "request_id": "r",
        "response": {"a": 1},
    }
    assert m.response_payload(req) is None
    assert m.request_id_of(req) == "r"
    assert m.request_id_of({"type": "control_cancel_request", "requestId": "c"}) == "c"
    assert m.request_id_of({"type": "control_request", "request_id": ""}) is None


def test_response_request_id_normalises_camel_case_and_snake_wins() -> None:
    assert m.response_request_id(m.control_success("a")) == "a"
    assert m.response_request_id({"type": "control_response", "response": {"requestId": "b"}}) == "b"
    both = {"type": "control_response", "response": {"requestId": "camel", "request_id": "snake"}}
    assert m.response_request_id(both) == "snake"
    assert m.response_request_id({"type": "control_response", "requestId": "top", "response": {}}) == "top"
    inner_wins = {"type": "control_response", "request_id": "top", "response": {"requestId": "in"}}
    assert m.response_request_id(inner_wins) == "in"
    assert m.response_request_id({"type": "control_response", "response": {"request_id": 5}}) is None


def test_normalize_control_keys_returns_new_dict() -> None:
    original = {
        "type": "control_response",
        "requestId": "t",
        "response": {"subtype": "success", "requestId": "r"},
    }
    snapshot = json.loads(json.dumps(original))
    out = m.normalize_control_keys(original)
    assert out == {
        "type": "control_response",
        "request_id": "t",
        "response": {"subtype": "success", "request_id": "r"},
    }
    assert original == snapshot
    assert out is not original and out["response"] is not original["response"]


def test_normalize_control_keys_keeps_snake_when_both_present() -> None:
    msg = {"type": "control_response", "response": {"request_id": "s", "requestId": "c"}}
    out = m.normalize_control_keys(msg)
    assert out["response"]["request_id"] == "s"
    assert m.normalize_control_keys({"type": "user"}) == {"type": "user"}


# --- builders ---------------------------------------------------------------------------


def test_builders_match_wire_shapes() -> None:
    assert m.control_success("r") == {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "r"},
    }
    assert m.control_success("r", {"mode": "plan"})["response"]["response"] == {"mode": "plan"}
    err = m.control_error(
        "r", "Unsupported", error_code="unsupported_request", pending_permission_requests=[]
    )
    assert err == {
        "type": "control_response",
        "response": {
            "subtype": "error",
            "request_id": "r",
            "error": "Unsupported",
            "error_code": "unsupported_request",
            "pending_permission_requests": [],
        },
    }
    assert m.control_request("set_permission_mode", "q", mode="acceptEdits") == {
        "type": "control_request",
        "request_id": "q",
        "request": {"subtype": "set_permission_mode", "mode": "acceptEdits"},
    }
    assert m.cancel_request("q") == {"type": "control_cancel_request", "request_id": "q"}


def test_user_message() -> None:
    msg = m.user_message("hello", "u1")
    assert msg == {
        "type": "user",
        "message": {"role": "user", "content": "hello"},
        "parent_tool_use_id": None,
        "uuid": "u1",
    }
    blocks = [{"type": "text", "text": "hi"}]
    msg2 = m.user_message(blocks, "u2", session_id="cse_x", parent_tool_use_id="toolu_1")
    assert msg2["session_id"] == "cse_x" and msg2["parent_tool_use_id"] == "toolu_1"
    assert msg2["message"]["content"] == blocks and msg2["message"]["content"][0] is not blocks[0]
    assert m.parse_line(json.dumps(msg2)) == msg2


def test_constants_are_consistent() -> None:
    assert m.CONTROL_REQUEST in m.KNOWN_MESSAGE_TYPES
    assert m.CAN_USE_TOOL in m.KNOWN_CONTROL_SUBTYPES
    assert m.CLIENT_CONTROL_SUBTYPES <= m.KNOWN_CONTROL_SUBTYPES
    assert "plan" in m.PERMISSION_MODES


# --- permission decisions ---------------------------------------------------------------

RULE = {
    "type": "addRules",
    "rules": [{"toolName": "Bash"}],
    "behavior": "allow",
    "destination": "localSettings",
}


def test_allow_with_input_and_permissions() -> None:
    d = m.parse_permission_decision(
        {
            "behavior": "allow",
            "updatedInput": {"command": "ls"},
            "updatedPermissions": [RULE],
            "toolUseID": "t",
        }
    )
    assert isinstance(d, PermissionAllow)
    assert d.updated_input == {"command": "ls"}
    assert d.updated_permissions == [RULE]
    assert d.tool_use_id == "t"
    assert d.effective_input({"command": "rm"}) == {"command": "ls"}
    assert d.to_json() == {
        "behavior": "allow",
        "updatedInput": {"command": "ls"},
        "updatedPermissions": [RULE],
        "toolUseID": "t",
    }


def test_allow_with_empty_or_missing_input_means_original() -> None:
    for payload in ({"behavior": "allow", "updatedInput": {}}, {"behavior": "allow"}):
        d = m.parse_permission_decision(payload)
        assert isinstance(d, PermissionAllow)
        assert d.effective_input({"command": "rm"}) == {"command": "rm"}
        assert d.to_json() == {"behavior": "allow", "updatedInput": {}}


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        {"x": 1},
        [RULE, {"type": "bogus", "destination": "session"}],
        [{"type": "setMode", "mode": "plan", "destination": "nowhere"}],
        [RULE, "str"],
    ],
)
def test_malformed_updated_permissions_are_ignored(bad: object) -> None:
    d = m.parse_permission_decision({"behavior": "allow", "updatedInput": {}, "updatedPermissions": bad})
    assert isinstance(d, PermissionAllow) and d.updated_permissions is None


def test_deny() -> None:
    d = m.parse_permission_decision({"behavior": "deny", "message": "no", "interrupt": True})
    assert d == PermissionDeny(message="no", interrupt=True)
    assert d.to_json() == {"behavior": "deny", "message": "no", "interrupt": True}
    d2 = m.parse_permission_decision({"behavior": "deny"})
    assert isinstance(d2, PermissionDeny)
    assert d2.message == m.DEFAULT_DENY_MESSAGE and d2.interrupt is False
    assert "interrupt" not in d2.to_json()


def test_decision_classification_kept_or_ignored() -> None:
    ok = m.parse_permission_decision(
        {"behavior": "deny", "message": "", "decisionClassification": "user_reject"}
    )
    assert ok.decision_classification == "user_reject"
    assert ok.to_json()["decisionClassification"] == "user_reject"
    bad = m.parse_permission_decision({"behavior": "allow", "decisionClassification": "whatever"})
    assert bad.decision_classification is None
    assert m.parse_permission_decision({"behavior": "allow", "toolUseID": 5}).tool_use_id is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "got null"),
        ([], "got array"),
        ({}, "no 'behavior'"),
        ({"behavior": "ask"}, "'allow' or 'deny'"),
        ({"behavior": "allow", "updatedInput": []}, "updatedInput' must be an object"),
        ({"behavior": "allow", "updatedInput": None}, "updatedInput' must be an object"),
        ({"behavior": "deny", "message": 3}, "message' must be a string"),
        ({"behavior": "deny", "message": "x", "interrupt": "yes"}, "interrupt' must be a boolean"),
    ],
)
def test_invalid_decisions(payload: object, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        m.parse_permission_decision(payload)


@settings(deadline=None)
@given(st.dictionaries(st.text(), JSON, max_size=4))
def test_parse_permission_decision_never_crashes_unexpectedly(payload: dict[str, Any]) -> None:
    try:
        d = m.parse_permission_decision(payload)
    except MessageError:
        return
    assert m.parse_permission_decision(d.to_json()) == d


def test_receipts_are_the_uuids_a_keep_alive_confirms() -> None:
    keep_alive = {"type": m.KEEP_ALIVE, m.RECEIPT_FIELD: ["u1", "", 3, None, "u2"]}
    assert m.receipt_uuids(keep_alive) == ["u1", "u2"], "only non-empty strings"
    assert m.receipt_uuids({"type": m.KEEP_ALIVE}) == []
    assert m.receipt_uuids({"type": m.KEEP_ALIVE, m.RECEIPT_FIELD: "u1"}) == []
    assert m.receipt_uuids({"type": "user", m.RECEIPT_FIELD: ["u1"]}) == [], "only a keep_alive carries receipts"


def test_result_reason_leaves_out_the_stock_clis_diagnostics() -> None:
    diagnostic = "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=tool_use"
    stopped = {"type": "result", "subtype": "error_during_execution", "is_error": True,
               "terminal_reason": "aborted_tools", "result": None, "errors": [diagnostic]}
    assert m.result_was_interrupted(stopped) and m.result_reason(stopped) == "Interrupted"
    assert m.result_reason({**stopped, "errors": [diagnostic, "", "Interrupted at the terminal"]}) == (
        "Interrupted at the terminal")
    assert m.result_reason({"errors": ["a", "b"], "result": "ignored"}) == "a; b"
    assert m.result_reason({"errors": "not a list", "result": "Stopped: the runner's time limit"}) == (
        "Stopped: the runner's time limit")
    assert m.result_reason({"subtype": "error_max_turns", "terminal_reason": "max_turns", "result": ""}) == ""
    assert not m.result_was_interrupted({"terminal_reason": None})
