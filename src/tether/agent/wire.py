"""Builders for the stream-json lines ``tether agent`` writes. Pure.

Shapes follow the stock CLI as recorded in ``tests/fixtures/claude-cli`` (keys
present in every recorded CLI version, plus a few more clients read). Ids and
timestamps are parameters, never generated here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from tether.protocol.messages import CAN_USE_TOOL, CONTROL_REQUEST, Message

INTERRUPTED: Final = "[Request interrupted by user]"
INTERRUPTED_FOR_TOOL: Final = "[Request interrupted by user for tool use]"
REJECTED_TEXT: Final = (
    "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file "
    "edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell "
    "you how to proceed."
)
STOPPED_WHILE_RUNNING_TEXT: Final = (
    REJECTED_TEXT + " Correction to the text above: this call was stopped while running, not refused before it "
    "ran. It may have run in part or in full, and its changes may have been written. No permission prompt was "
    "involved. Work it started elsewhere (a remote command, a background process) may still be running, so "
    "check before starting the same work again. The instruction to stop and wait still stands."
)
USER_REJECTED: Final = "User rejected tool use"
OUTPUT_STYLE: Final = "default"


def system_init(*, session_id: str, uuid: str, cwd: str, tools: Sequence[str], model: str,
                permission_mode: str, version: str, api_key_source: str,
                additional_directories: Sequence[str] = ()) -> Message:
    return {
        "type": "system", "subtype": "init", "cwd": cwd, "session_id": session_id, "tools": list(tools),
        "mcp_servers": [], "model": model, "permissionMode": permission_mode, "slash_commands": [],
        "apiKeySource": api_key_source, "claude_code_version": version, "output_style": OUTPUT_STYLE,
        "agents": [], "skills": [], "plugins": [], "analytics_disabled": True,
        "product_feedback_disabled": True, "uuid": uuid, "memory_paths": {}, "fast_mode_state": "off",
        "original_cwd": cwd, "additional_directories": list(additional_directories),
    }


def status(*, session_id: str, uuid: str, status: str | None, permission_mode: str | None = None) -> Message:
    msg: Message = {"type": "system", "subtype": "status", "status": status}
    if permission_mode is not None:
        msg["permissionMode"] = permission_mode
    msg.update(uuid=uuid, session_id=session_id)
    return msg


def session_state_changed(*, session_id: str, uuid: str, state: str) -> Message:
    return {"type": "system", "subtype": "session_state_changed", "state": state, "sdk_host_only": True,
            "uuid": uuid, "session_id": session_id}


def permission_denied(*, session_id: str, uuid: str, tool_name: str, tool_use_id: str, message: str) -> Message:
    return {"type": "system", "subtype": "permission_denied", "tool_name": tool_name,
            "tool_use_id": tool_use_id, "message": message, "uuid": uuid, "session_id": session_id}


def assistant(*, session_id: str, uuid: str, timestamp: str, message_id: str, model: str,
              content: Sequence[Mapping[str, Any]], usage: Mapping[str, Any], request_id: str | None,
              aborted: bool = False) -> Message:
    """One ``assistant`` line. ``stop_reason`` is null, as the CLI writes it (the result carries it)."""
    msg: Message = {
        "type": "assistant",
        "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [dict(b) for b in content], "stop_reason": None, "stop_sequence": None,
            "usage": dict(usage), "context_management": None,
        },
        "parent_tool_use_id": None, "session_id": session_id, "uuid": uuid, "timestamp": timestamp,
        "request_id": request_id,
    }
    if aborted:
        msg["aborted"] = True
    return msg


def user_tool_result(*, session_id: str, uuid: str, timestamp: str, block: Mapping[str, Any],
                     tool_use_result: Any, meta: Mapping[str, Any]) -> Message:
    return {
        "type": "user", "message": {"role": "user", "content": [dict(block)]}, "parent_tool_use_id": None,
        "session_id": session_id, "uuid": uuid, "timestamp": timestamp, "tool_use_result": tool_use_result,
        "tool_result_meta": [dict(meta)],
    }


def user_text(*, session_id: str, uuid: str, timestamp: str, text: str) -> Message:
    return {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]},
            "parent_tool_use_id": None, "session_id": session_id, "uuid": uuid, "timestamp": timestamp}


def replay(inbound: Mapping[str, Any], *, session_id: str, uuid: str, timestamp: str) -> Message:
    """The ``isReplay`` acknowledgement of an inbound user message."""
    msg: Message = {k: v for k, v in inbound.items() if k not in ("uuid", "session_id", "isReplay")}
    msg.setdefault("parent_tool_use_id", None)
    msg.update(type="user", session_id=session_id, uuid=uuid, timestamp=timestamp, isReplay=True)
    return msg


def stream_event(event: Mapping[str, Any], *, session_id: str, uuid: str, message_id: str | None,
                 ttft_ms: int | None = None) -> Message:
    msg: Message = {"type": "stream_event", "event": dict(event), "session_id": session_id,
                    "parent_tool_use_id": None, "uuid": uuid}
    if ttft_ms is not None:
        msg["ttft_ms"] = ttft_ms
    if message_id is not None:
        msg["api_message_id"] = message_id
    return msg


def tool_result_block(tool_use_id: str, content: str | list[dict[str, Any]], is_error: bool) -> dict[str, Any]:
    return {"tool_use_id": tool_use_id, "type": "tool_result", "content": content, "is_error": is_error}


def can_use_tool(*, request_id: str, tool_name: str, tool_input: Mapping[str, Any], tool_use_id: str,
                 description: str | None, suggestions: Sequence[Mapping[str, Any]], title: str | None,
                 decision_reason: str | None, blocked_path: str | None) -> Message:
    req: dict[str, Any] = {"subtype": CAN_USE_TOOL, "tool_name": tool_name, "display_name": tool_name,
                           "input": dict(tool_input)}
    if description is not None:
        req["description"] = description
    if suggestions:
        req["permission_suggestions"] = [dict(s) for s in suggestions]
    if blocked_path is not None:
        req["blocked_path"] = blocked_path
    if decision_reason is not None:
        req["decision_reason"] = decision_reason
        req["decision_reason_type"] = "other"
    if title is not None:
        req["title"] = title
    req["tool_use_id"] = tool_use_id
    return {"type": CONTROL_REQUEST, "request_id": request_id, "request": req}


def usage_block(input_tokens: int, output_tokens: int, cache_read: int = 0, cache_creation: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens, "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read, "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "service_tier": "standard",
    }


def model_usage(model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int,
                cost: float) -> dict[str, Any]:
    return {model: {"inputTokens": input_tokens, "outputTokens": output_tokens,
                    "cacheReadInputTokens": cache_read, "cacheCreationInputTokens": cache_creation,
                    "webSearchRequests": 0, "costUSD": cost, "contextWindow": 200000,
                    "maxOutputTokens": 32000}}


def result(*, session_id: str, uuid: str, subtype: str, is_error: bool, duration_ms: int,
           duration_api_ms: int, num_turns: int, stop_reason: str | None, total_cost_usd: float,
           usage: Mapping[str, Any], model_usage_map: Mapping[str, Any],
           permission_denials: Sequence[Mapping[str, Any]], terminal_reason: str, result_text: str | None,
           errors: Sequence[str] = (), api_error_status: int | None = None, ttft_ms: int | None = None,
           time_to_request_ms: int | None = None) -> Message:
    msg: Message = {
        "type": "result", "subtype": subtype, "is_error": is_error, "duration_ms": duration_ms,
        "duration_api_ms": duration_api_ms, "num_turns": num_turns, "stop_reason": stop_reason,
        "session_id": session_id, "total_cost_usd": total_cost_usd, "usage": dict(usage),
        "modelUsage": dict(model_usage_map), "permission_denials": [dict(d) for d in permission_denials],
        "terminal_reason": terminal_reason, "fast_mode_state": "off", "uuid": uuid,
    }
    if subtype == "success":
        msg["result"] = result_text or ""
        msg["api_error_status"] = None
        msg["ttft_ms"] = ttft_ms or 0
        msg["ttft_stream_ms"] = ttft_ms or 0
        msg["time_to_request_ms"] = time_to_request_ms or 0
    else:
        msg["errors"] = list(errors)
        if api_error_status is not None or terminal_reason == "api_error":
            msg["api_error_status"] = api_error_status
    return msg


def initialize_response(*, pid: int, model: str, models: Sequence[Mapping[str, Any]], api_key_source: str,
                        permission_mode: str, version: str) -> dict[str, Any]:
    """``response.response`` of the ``initialize`` reply."""
    return {
        "commands": [],
        "agents": [],
        "output_style": OUTPUT_STYLE,
        "available_output_styles": [OUTPUT_STYLE],
        "models": [dict(m) for m in models],
        "account": {"tokenSource": "none", "apiKeySource": api_key_source, "apiProvider": "firstParty"},
        "pid": pid,
        "claude_code_version": version,
        "current_permission_mode": permission_mode,
        "current_model": model,
        "session_state": "idle",
        "capabilities": [],
    }
