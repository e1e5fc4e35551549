"""The SDK message adapter (docs/protocol.md §13), as a table: frame × mode → display items."""

from __future__ import annotations

from typing import Any

import pytest

from tether.protocol.sdk_adapter import (
    HISTORY,
    LIVE,
    AssistantText,
    ConvertMode,
    Delivery,
    Notice,
    PermissionPrompt,
    PromptCancelled,
    PromptResolved,
    SendControl,
    ServerError,
    SessionState,
    StreamText,
    ToolResult,
    ToolUse,
    TurnEnded,
    UserText,
    convert,
    is_permission_request,
    log_sequence,
)

OWN = ConvertMode(own_uuids=frozenset({"u-mine"}))


def user(content: Any, uuid: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"type": "user", "uuid": uuid, "message": {"role": "user", "content": content}, **extra}


def can_use_tool(tool: str, rid: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"type": "control_request", "request_id": rid, "sequence_num": 7,
            "request": {"subtype": "can_use_tool", "tool_name": tool, "input": {"command": "ls"},
                        "tool_use_id": "t1", **extra}}


TABLE: list[tuple[str, dict[str, Any], ConvertMode, list[Any]]] = [
    ("assistant text and tool_use",
     {"type": "assistant", "uuid": "a1", "message": {"content": [
         {"type": "text", "text": "Let me look."},
         {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "src/app.py"}}]}},
     LIVE, [AssistantText("Let me look.", "a1"), ToolUse("t1", "Read", {"file_path": "src/app.py"},
                                                        "Reading src/app.py", True)]),
    ("assistant error kept", {"type": "assistant", "message": {"content": []}, "error": "rate_limit"},
     LIVE, [Notice("Assistant error: rate_limit", "warning")]),
    ("unknown tool gets a stub card",
     {"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t9", "name": "mcp__x__y",
                                                    "input": {"q": 1}}]}},
     LIVE, [ToolUse("t9", "mcp__x__y", {"q": 1}, "Using mcp__x__y", False)]),
    ("text delta streams", {"type": "stream_event", "ephemeral": True,
                            "event": {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": "Hel"}}},
     LIVE, [StreamText("Hel", 0)]),
    ("other stream events ignored", {"type": "stream_event", "event": {"type": "message_start"}}, LIVE, []),
    ("live echo of our own prompt ignored", user("hi", "u-mine"), OWN, []),
    ("live isReplay echo ignored", user("hi", "u2", isReplay=True), LIVE, []),
    ("live prompt from elsewhere shown", user("from the phone", "u3"), OWN, [UserText("from the phone", "u3")]),
    ("history prompt shown even if ours", user("hi", "u-mine"), ConvertMode(history=True,
                                                                         own_uuids=frozenset({"u-mine"})),
     [UserText("hi", "u-mine")]),
    ("history replay echo converted", user([{"type": "text", "text": "hi"}], "u4", isReplay=True), HISTORY,
     [UserText("hi", "u4")]),
    ("synthetic user ignored", user("meta", "u5", isSynthetic=True), HISTORY, []),
    ("tool results always converted",
     user([{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}],
            "is_error": True}]), LIVE, [ToolResult("t1", "ok", True)]),
    ("result success ends the turn", {"type": "result", "subtype": "success", "result": "done"}, LIVE,
     [TurnEnded(True, "success")]),
    ("result error warns with the errors",
     {"type": "result", "subtype": "error_during_execution", "errors": ["boom", "bang"]}, LIVE,
     [Notice("boom; bang", "warning"), TurnEnded(False, "error_during_execution")]),
    ("result error without details", {"type": "result", "subtype": "error_max_turns"}, LIVE,
     [Notice("Unknown error", "warning"), TurnEnded(False, "error_max_turns")]),
    ("system init", {"type": "system", "subtype": "init", "model": "claude-x"}, LIVE,
     [Notice("Remote session initialized (model: claude-x)", "dim")]),
    ("system status compacting", {"type": "system", "subtype": "status", "status": "compacting"}, LIVE,
     [Notice("Compacting conversation…", "dim")]),
    ("system status other", {"type": "system", "subtype": "status", "status": "busy"}, LIVE,
     [Notice("Status: busy", "dim")]),
    ("system status null ignored", {"type": "system", "subtype": "status", "status": None}, LIVE, []),
    ("compact boundary", {"type": "system", "subtype": "compact_boundary"}, LIVE,
     [Notice("── conversation compacted ──", "dim")]),
    ("other system ignored", {"type": "system", "subtype": "hook_response"}, LIVE, []),
    ("tool progress", {"type": "tool_progress", "tool_name": "Bash", "elapsed_time_seconds": 12.5}, LIVE,
     [Notice("Tool Bash running for 12s…", "dim")]),
    ("auth_status ignored", {"type": "auth_status"}, LIVE, []),
    ("tool_use_summary ignored", {"type": "tool_use_summary"}, LIVE, []),
    ("rate_limit_event ignored", {"type": "rate_limit_event"}, LIVE, []),
    ("keep_alive ignored", {"type": "keep_alive"}, LIVE, []),
    ("unknown type ignored", {"type": "something_new", "x": 1}, LIVE, []),
    ("interrupt from another client", {"type": "control_request", "request_id": "i1",
                                       "request": {"subtype": "interrupt"}}, LIVE,
     [Notice("Stop requested", "dim")]),
    ("set_model from another client", {"type": "control_request", "request_id": "m1",
                                       "request": {"subtype": "set_model", "model": "opus"}}, LIVE,
     [Notice("Model: opus", "dim")]),
    ("unsupported subtype answered with an error at once",
     {"type": "control_request", "request_id": "h1", "request": {"subtype": "hook_callback"}}, LIVE,
     [SendControl({"type": "control_response", "response": {
         "subtype": "error", "request_id": "h1", "error": "Unsupported control request subtype: hook_callback"}})]),
    ("unsupported subtype in history is not answered",
     {"type": "control_request", "request_id": "h1", "request": {"subtype": "hook_callback"}}, HISTORY, []),
    ("cancel", {"type": "control_cancel_request", "request_id": "r1"}, LIVE, [PromptCancelled("r1", None)]),
    ("logged answer resolves", {"type": "control_response", "sequence_num": 9, "response": {
        "subtype": "success", "request_id": "r1", "response": {"behavior": "deny", "message": "no"}}}, LIVE,
     [PromptResolved("r1", "deny", "no")]),
    ("camelCase requestId", {"type": "control_response", "sequence_num": 9, "response": {
        "subtype": "success", "requestId": "r2", "response": {"behavior": "allow"}}}, LIVE,
     [PromptResolved("r2", "allow", None)]),
    ("error answer resolves as error", {"type": "control_response", "sequence_num": 9, "response": {
        "subtype": "error", "request_id": "r3", "error": "gone"}}, LIVE, [PromptResolved("r3", "error", "gone")]),
    ("unlogged control_response is an ack", {"type": "control_response", "response": {
        "subtype": "success", "request_id": "i1"}}, LIVE, []),
    ("session_update", {"type": "session_update", "status": "running", "title": "T", "sequence_num": 4}, LIVE,
     [SessionState("running", "T")]),
    ("delivery_update", {"type": "delivery_update", "uuid": "u1", "status": "processed"}, LIVE,
     [Delivery("u1", "processed")]),
    ("assistant string content", {"type": "assistant", "uuid": "a2", "message": {"content": "Plain."}}, LIVE,
     [AssistantText("Plain.", "a2")]),
    ("assistant blank text, thinking and stray blocks skipped",
     {"type": "assistant", "message": {"content": ["stray", {"type": "thinking", "thinking": "hmm"},
                                                   {"type": "text", "text": "  "}, {"type": "text", "text": "ok"}]}},
     LIVE, [AssistantText("ok", None)]),
    ("assistant without a message", {"type": "assistant"}, LIVE, []),
    ("result error falls back to its result text", {"type": "result", "subtype": "error_during_execution",
                                                   "errors": [], "result": "API down"}, LIVE,
     [Notice("API down", "warning"), TurnEnded(False, "error_during_execution")]),
    ("is_error success is an error", {"type": "result", "subtype": "success", "is_error": True}, LIVE,
     [Notice("Unknown error", "warning"), TurnEnded(False, "success")]),
    ("tool progress without a time", {"type": "tool_progress", "elapsed_time_seconds": True}, LIVE,
     [Notice("Tool tool running…", "dim")]),
    ("non-text deltas ignored", {"type": "stream_event", "event": {
        "type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}}},
     LIVE, []),
    ("a delta without an index is block 0", {"type": "stream_event", "event": {
        "type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}}, LIVE, [StreamText("x", 0)]),
    ("prompt with an image", user([{"type": "text", "text": "look"}, {"type": "image", "source": {}},
                                   {"type": "document", "source": {}}, "stray"], "u6"), LIVE,
     [UserText("look\n[image]", "u6")]),
    ("prompt without content ignored", {"type": "user", "uuid": "u7", "message": {"role": "user"}}, LIVE, []),
    ("meta user ignored", user("meta", "u8", isMeta=True), LIVE, []),
    ("tool result text forms",
     user([{"type": "tool_result", "tool_use_id": "t1", "content": "plain"},
           {"type": "tool_result", "tool_use_id": "t2", "content": None}]), LIVE,
     [ToolResult("t1", "plain", False), ToolResult("t2", "", False)]),
    ("set_permission_mode from another client", {"type": "control_request", "request_id": "p1",
                                                 "request": {"subtype": "set_permission_mode", "mode": "plan"}},
     LIVE, [Notice("Permission mode: plan", "dim")]),
    ("set_model without a model", {"type": "control_request", "request_id": "m2",
                                   "request": {"subtype": "set_model"}}, LIVE, [Notice("Model: default", "dim")]),
    ("thinking budget", {"type": "control_request", "request_id": "k1",
                         "request": {"subtype": "set_max_thinking_tokens", "max_thinking_tokens": 2048}}, LIVE,
     [Notice("Thinking budget: 2048", "dim")]),
    ("thinking budget reset", {"type": "control_request", "request_id": "k2",
                               "request": {"subtype": "set_max_thinking_tokens", "max_thinking_tokens": None}},
     LIVE, [Notice("Thinking budget: default", "dim")]),
    ("end_session", {"type": "control_request", "request_id": "e1", "request": {"subtype": "end_session"}}, LIVE,
     [Notice("End of session requested", "dim")]),
    ("take over", {"type": "control_request", "request_id": "t1", "request": {"subtype": "tether_take_over"}},
     LIVE, [Notice("Taken over from the terminal", "dim")]),
    ("return to terminal", {"type": "control_request", "request_id": "t2",
                            "request": {"subtype": "tether_return_to_terminal"}}, LIVE,
     [Notice("Handed back to the terminal", "dim")]),
    ("client actions are not shown from history", {"type": "control_request", "request_id": "i1",
                                                   "request": {"subtype": "interrupt"}}, HISTORY, []),
    ("a question without request_id cannot be answered", {"type": "control_request",
                                                          "request": {"subtype": "can_use_tool"}}, LIVE, []),
    ("an unsupported request without request_id cannot be answered",
     {"type": "control_request", "request": {"subtype": "hook_callback"}}, LIVE, []),
    ("logged answer without request_id", {"type": "control_response", "sequence_num": 9,
                                          "response": {"subtype": "success"}}, LIVE, []),
    ("logged answer with the id outside", {"type": "control_response", "sequence_num": 9, "request_id": "r4",
                                           "response": {"subtype": "success", "response": "?"}}, LIVE,
     [PromptResolved("r4", "allow", None)]),
    ("delivery_update without status", {"type": "delivery_update", "uuid": "u1"}, LIVE, []),
    ("bare error frame", {"type": "error"}, LIVE, [ServerError("error", "The server refused that.", None)]),
    ("type that is not a string", {"type": 3}, LIVE, []),
    ("error frame", {"type": "error", "request_id": "r1",
                     "error": {"type": "already_resolved", "message": "already allowed"}}, LIVE,
     [ServerError("already_resolved", "already allowed", "r1")]),
]


@pytest.mark.parametrize(("frame", "mode", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_convert(frame: dict[str, Any], mode: ConvertMode, expected: list[Any]) -> None:
    assert convert(frame, mode) == expected


@pytest.mark.parametrize("mode", [LIVE, HISTORY], ids=["live", "history"])
def test_permission_request_of_a_known_tool(mode: ConvertMode) -> None:
    [prompt] = convert(can_use_tool("Bash", description="List files"), mode)
    assert isinstance(prompt, PermissionPrompt)
    assert (prompt.request_id, prompt.tool_name, prompt.tool_use_id, prompt.description) == ("r1", "Bash", "t1",
                                                                                               "List files")
    assert prompt.message_id == "remote-r1"
    assert prompt.card == ToolUse("t1", "Bash", {"command": "ls"}, "Running ls", True)


def test_permission_request_of_an_unknown_tool_gets_a_stub() -> None:
    [prompt] = convert(can_use_tool("SandboxNetworkAccess"))
    assert isinstance(prompt, PermissionPrompt)
    assert not prompt.card.known and prompt.card.activity == "Using SandboxNetworkAccess"
    assert prompt.card.input == {"command": "ls"}


@pytest.mark.parametrize(("frame", "seq"), [
    ({"type": "assistant", "sequence_num": 3}, 3),
    ({"type": "stream_event", "sequence_num": 3, "ephemeral": True}, None),
    ({"type": "session_update", "sequence_num": 3}, None),
    ({"type": "delivery_update", "sequence_num": 3}, None),
    ({"type": "control_response", "response": {}}, None),
    ({"type": "user", "sequence_num": True}, None),
    ({"type": "user", "sequence_num": 0}, None),
])
def test_log_sequence(frame: dict[str, Any], seq: int | None) -> None:
    assert log_sequence(frame) == seq


def test_is_permission_request() -> None:
    assert is_permission_request(can_use_tool("Bash"))
    assert not is_permission_request({"type": "control_request", "request": {"subtype": "interrupt"}})
