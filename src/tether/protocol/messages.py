"""SDK and control messages: parsing, forward-compatible validation, builders.

Every message on the wire is a JSON object with a string ``type`` (docs/protocol.md §7.1).
That is the only thing :func:`parse_message` insists on: unknown types and unknown
fields pass through untouched, so a newer CLI or client never breaks an older
Tether. The helpers read the few fields Tether acts on (control request ids and
subtypes, permission decisions) and validate exactly those.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "ASSISTANT",
    "AUTH_STATUS",
    "CAN_USE_TOOL",
    "CLIENT_CONTROL_SUBTYPES",
    "CONTROL_CANCEL_REQUEST",
    "CONTROL_REQUEST",
    "CONTROL_RESPONSE",
    "DEFAULT_DENY_MESSAGE",
    "DEFAULT_MAX_LINE_BYTES",
    "END_SESSION",
    "GENERATE_SESSION_TITLE",
    "INITIALIZE",
    "INTERRUPT",
    "KEEP_ALIVE",
    "KNOWN_CONTROL_SUBTYPES",
    "KNOWN_MESSAGE_TYPES",
    "MCP_STATUS",
    "PERMISSION_MODES",
    "PROMPT_SUGGESTION",
    "RATE_LIMIT_EVENT",
    "RECEIPTS_HEADER",
    "RECEIPT_FIELD",
    "RESULT",
    "RETURN_TO_TERMINAL",
    "SET_MAX_THINKING_TOKENS",
    "SET_MODEL",
    "SET_PERMISSION_MODE",
    "STREAM_EVENT",
    "SYSTEM",
    "TAKE_OVER",
    "TOOL_PROGRESS",
    "TOOL_USE_SUMMARY",
    "UPDATE_ENVIRONMENT_VARIABLES",
    "USER",
    "ControlSubtype",
    "DecisionClassification",
    "Message",
    "MessageError",
    "MessageType",
    "PermissionAllow",
    "PermissionDecision",
    "PermissionDeny",
    "PermissionMode",
    "ResponseSubtype",
    "cancel_request",
    "control_error",
    "control_request",
    "control_subtype",
    "control_success",
    "is_control_cancel",
    "is_control_message",
    "is_control_request",
    "is_control_response",
    "is_ephemeral",
    "is_keep_alive",
    "normalize_control_keys",
    "parse_line",
    "parse_message",
    "parse_permission_decision",
    "receipt_uuids",
    "request_id_of",
    "request_payload",
    "response_payload",
    "response_request_id",
    "result_reason",
    "result_was_interrupted",
    "user_message",
]

Message = dict[str, Any]

DEFAULT_MAX_LINE_BYTES: Final = 1 << 20  # docs/protocol.md §4.8: frames and events ≤ 1 MiB


class MessageError(ValueError):
    """A message is not a valid protocol message; ``str(exc)`` says precisely why."""


# --- message types (docs/protocol.md §7.2–§7.3) --------------------------------------------

USER: Final = "user"
ASSISTANT: Final = "assistant"
RESULT: Final = "result"
SYSTEM: Final = "system"
STREAM_EVENT: Final = "stream_event"
TOOL_PROGRESS: Final = "tool_progress"
TOOL_USE_SUMMARY: Final = "tool_use_summary"
AUTH_STATUS: Final = "auth_status"
RATE_LIMIT_EVENT: Final = "rate_limit_event"
PROMPT_SUGGESTION: Final = "prompt_suggestion"
KEEP_ALIVE: Final = "keep_alive"
UPDATE_ENVIRONMENT_VARIABLES: Final = "update_environment_variables"
CONTROL_REQUEST: Final = "control_request"
CONTROL_RESPONSE: Final = "control_response"
CONTROL_CANCEL_REQUEST: Final = "control_cancel_request"

# Tether's explicit receipt on the v1 worker socket (docs/protocol.md §4.4): a worker that sends the
# header at the upgrade confirms each control message it read with a keep_alive frame whose
# RECEIPT_FIELD lists the uuids.
RECEIPTS_HEADER: Final = "X-Tether-Receipts"
RECEIPT_FIELD: Final = "tether_received"


def receipt_uuids(m: Mapping[str, Any]) -> list[str]:
    """The uuids a worker's ``keep_alive`` frame confirms (empty for anything else)."""
    if m.get("type") != KEEP_ALIVE:
        return []
    value = m.get(RECEIPT_FIELD)
    return [u for u in value if isinstance(u, str) and u] if isinstance(value, list) else []


# The stock CLI puts an internal diagnostic among an interrupted turn's ``errors`` (e.g.
# "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=tool_use"): not for people.
_DIAGNOSTIC_PREFIX: Final = "[ede_diagnostic]"


def result_was_interrupted(result: Mapping[str, Any]) -> bool:
    """An error ``result`` of a turn that was stopped (``terminal_reason`` ``aborted_…``)."""
    return str(result.get("terminal_reason") or "").startswith("aborted")


def result_reason(result: Mapping[str, Any]) -> str:
    """Why an error ``result`` ended its turn, in words for a person: its ``errors`` without the
    stock CLI's internal diagnostics, else its ``result`` text, else "Interrupted" for a stopped
    turn, else ""."""
    errors = result.get("errors")
    shown = [str(e) for e in errors if e and not str(e).startswith(_DIAGNOSTIC_PREFIX)] \
        if isinstance(errors, list) else []
    if shown:
        return "; ".join(shown)
    text = result.get("result")
    if isinstance(text, str) and text:
        return text
    return "Interrupted" if result_was_interrupted(result) else ""

MessageType = Literal[
    "user",
    "assistant",
    "result",
    "system",
    "stream_event",
    "tool_progress",
    "tool_use_summary",
    "auth_status",
    "rate_limit_event",
    "prompt_suggestion",
    "keep_alive",
    "update_environment_variables",
    "control_request",
    "control_response",
    "control_cancel_request",
]

KNOWN_MESSAGE_TYPES: Final[frozenset[str]] = frozenset(
    {
        USER,
        ASSISTANT,
        RESULT,
        SYSTEM,
        STREAM_EVENT,
        TOOL_PROGRESS,
        TOOL_USE_SUMMARY,
        AUTH_STATUS,
        RATE_LIMIT_EVENT,
        PROMPT_SUGGESTION,
        KEEP_ALIVE,
        UPDATE_ENVIRONMENT_VARIABLES,
        CONTROL_REQUEST,
        CONTROL_RESPONSE,
        CONTROL_CANCEL_REQUEST,
    }
)

# --- control request subtypes Tether acts on (docs/protocol.md §7.3) --------------------------

INITIALIZE: Final = "initialize"
INTERRUPT: Final = "interrupt"
CAN_USE_TOOL: Final = "can_use_tool"
SET_PERMISSION_MODE: Final = "set_permission_mode"
SET_MODEL: Final = "set_model"
SET_MAX_THINKING_TOKENS: Final = "set_max_thinking_tokens"
END_SESSION: Final = "end_session"
MCP_STATUS: Final = "mcp_status"
GENERATE_SESSION_TITLE: Final = "generate_session_title"
# Tether's own: move a `tether claude` session between its terminal and remote clients
# (docs/protocol.md §15); a worker without a terminal answers them with an error.
TAKE_OVER: Final = "tether_take_over"
RETURN_TO_TERMINAL: Final = "tether_return_to_terminal"

ControlSubtype = Literal[
    "initialize",
    "interrupt",
    "can_use_tool",
    "set_permission_mode",
    "set_model",
    "set_max_thinking_tokens",
    "end_session",
    "mcp_status",
    "generate_session_title",
    "tether_take_over",
    "tether_return_to_terminal",
]

KNOWN_CONTROL_SUBTYPES: Final[frozenset[str]] = frozenset(
    {
        INITIALIZE,
        INTERRUPT,
        CAN_USE_TOOL,
        SET_PERMISSION_MODE,
        SET_MODEL,
        SET_MAX_THINKING_TOKENS,
        END_SESSION,
        MCP_STATUS,
        GENERATE_SESSION_TITLE,
        TAKE_OVER,
        RETURN_TO_TERMINAL,
    }
)

# Subtypes a remote client may send to a worker (docs/protocol.md §4.7): the one list the server
# checks (tether.protocol.event_rules) and the clients render.
CLIENT_CONTROL_SUBTYPES: Final[frozenset[str]] = frozenset({
    INTERRUPT, SET_MODEL, SET_PERMISSION_MODE, SET_MAX_THINKING_TOKENS, END_SESSION, TAKE_OVER, RETURN_TO_TERMINAL,
})

ResponseSubtype = Literal["success", "error"]
PermissionMode = Literal["default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"]
PERMISSION_MODES: Final[frozenset[str]] = frozenset(
    {"default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"}
)


# --- parsing ------------------------------------------------------------------------


def parse_message(obj: object) -> Message:
    """Return ``obj`` as a message, or raise :class:`MessageError`.

    The object is returned as-is (not copied): validation only checks the envelope,
    so unknown types and fields survive untouched.
    """
    if not isinstance(obj, dict):
        raise MessageError(f"message must be a JSON object, got {_json_kind(obj)}")
    if "type" not in obj:
        raise MessageError("message has no 'type' field")
    kind = obj["type"]
    if not isinstance(kind, str):
        raise MessageError(f"message 'type' must be a string, got {_json_kind(kind)}")
    if not kind:
        raise MessageError("message 'type' is empty")
    return obj


def parse_line(line: str | bytes, max_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Message:
    """Parse one NDJSON line (trailing newline allowed) into a message.

    NaN and Infinity are rejected: they are not JSON and other peers cannot read them.
    """
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise MessageError(f"line is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"line is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    text = text.strip()
    if not text:
        raise MessageError("line is empty")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MessageError(f"line is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise MessageError("line is nested too deeply") from None
    return parse_message(obj)


def _reject_constant(name: str) -> object:
    raise MessageError(f"line is not valid JSON: {name} is not allowed")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- classification -------------------------------------------------------------------


def is_control_request(m: Mapping[str, Any]) -> bool:
    return m.get("type") == CONTROL_REQUEST


def is_control_response(m: Mapping[str, Any]) -> bool:
    return m.get("type") == CONTROL_RESPONSE


def is_control_cancel(m: Mapping[str, Any]) -> bool:
    return m.get("type") == CONTROL_CANCEL_REQUEST


def is_control_message(m: Mapping[str, Any]) -> bool:
    """Any of the three control envelopes (they are routed, never shown)."""
    return m.get("type") in (CONTROL_REQUEST, CONTROL_RESPONSE, CONTROL_CANCEL_REQUEST)


def is_ephemeral(m: Mapping[str, Any]) -> bool:
    """Fanned out live but never stored or replayed (docs/protocol.md §4.3)."""
    return m.get("type") == STREAM_EVENT or m.get("ephemeral") is True


def is_keep_alive(m: Mapping[str, Any]) -> bool:
    """Never stored, never fanned out, ignored by every receiver (docs/protocol.md §7.2)."""
    return m.get("type") == KEEP_ALIVE


def control_subtype(m: Mapping[str, Any]) -> str | None:
    """``request.subtype`` of a control_request, ``response.subtype`` of a control_response."""
    key = "request" if is_control_request(m) else "response" if is_control_response(m) else None
    if key is None:
        return None
    inner = m.get(key)
    if isinstance(inner, Mapping):
        subtype = inner.get("subtype")
        if isinstance(subtype, str) and subtype:
            return subtype
    return None


def request_payload(m: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``request`` object of a control_request, or None."""
    inner = m.get("request") if is_control_request(m) else None
    return inner if isinstance(inner, dict) else None


def response_payload(m: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``response`` object of a control_response, or None."""
    inner = m.get("response") if is_control_response(m) else None
    return inner if isinstance(inner, dict) else None


def _snake_or_camel(obj: Mapping[str, Any]) -> str | None:
    for key in ("request_id", "requestId"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def request_id_of(m: Mapping[str, Any]) -> str | None:
    """The top-level ``request_id`` of a control_request or control_cancel_request."""
    return _snake_or_camel(m)


def response_request_id(m: Mapping[str, Any]) -> str | None:
    """The request id a control_response answers.

    Looks inside ``response`` first, then at the top level; at each place snake_case
    ``request_id`` wins over the camelCase ``requestId`` older iOS builds send
    (docs/protocol.md §7.1).
    """
    inner = m.get("response")
    if isinstance(inner, Mapping):
        found = _snake_or_camel(inner)
        if found is not None:
            return found
    return _snake_or_camel(m)


def _renamed(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    if "requestId" in out and "request_id" not in out:
        out["request_id"] = out.pop("requestId")
    return out


def normalize_control_keys(m: Mapping[str, Any]) -> Message:
    """Return a new message with camelCase ``requestId`` renamed to ``request_id``.

    Applied at the top level and inside ``response``. When both spellings are present
    the snake_case value is kept and the camelCase key is left alone (snake wins).
    The input is never mutated.
    """
    out = _renamed(m)
    inner = out.get("response")
    if isinstance(inner, Mapping):
        out["response"] = _renamed(inner)
    return out


# --- builders ---------------------------------------------------------------------------


def control_success(request_id: str, response: Mapping[str, Any] | None = None) -> Message:
    body: dict[str, Any] = {"subtype": "success", "request_id": request_id}
    if response is not None:
        body["response"] = dict(response)
    return {"type": CONTROL_RESPONSE, "response": body}


def control_error(request_id: str, error: str, **extra: Any) -> Message:
    """An error reply; ``extra`` carries e.g. ``pending_permission_requests``, ``error_code``."""
    body: dict[str, Any] = {"subtype": "error", "request_id": request_id, "error": error}
    body.update(extra)
    return {"type": CONTROL_RESPONSE, "response": body}


def control_request(subtype: str, request_id: str, **fields: Any) -> Message:
    return {"type": CONTROL_REQUEST, "request_id": request_id, "request": {"subtype": subtype, **fields}}


def cancel_request(request_id: str) -> Message:
    return {"type": CONTROL_CANCEL_REQUEST, "request_id": request_id}


def user_message(
    text_or_content: str | list[dict[str, Any]],
    uuid: str,
    session_id: str | None = None,
    parent_tool_use_id: str | None = None,
) -> Message:
    """A stream-json ``user`` message (docs/protocol.md §14.4 stdin shape)."""
    content: str | list[dict[str, Any]] = (
        text_or_content if isinstance(text_or_content, str) else [dict(b) for b in text_or_content]
    )
    msg: Message = {
        "type": USER,
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": parent_tool_use_id,
        "uuid": uuid,
    }
    if session_id is not None:
        msg["session_id"] = session_id
    return msg


# --- permission decisions (docs/protocol.md §7.4) ---------------------------------------------

DecisionClassification = Literal["user_temporary", "user_permanent", "user_reject"]
_CLASSIFICATIONS: Final = frozenset({"user_temporary", "user_permanent", "user_reject"})
_UPDATE_TYPES: Final = frozenset(
    {"addRules", "replaceRules", "removeRules", "setMode", "addDirectories", "removeDirectories"}
)
_DESTINATIONS: Final = frozenset({"userSettings", "projectSettings", "localSettings", "session", "cliArg"})
DEFAULT_DENY_MESSAGE: Final = "Denied by remote operator"


@dataclass(frozen=True)
class PermissionAllow:
    """Allow the tool call. An empty ``updated_input`` means "use the original input"."""

    updated_input: dict[str, Any]
    updated_permissions: list[dict[str, Any]] | None = None
    tool_use_id: str | None = None
    decision_classification: DecisionClassification | None = None
    behavior: Literal["allow"] = "allow"

    def effective_input(self, original: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.updated_input) if self.updated_input else dict(original)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"behavior": "allow", "updatedInput": dict(self.updated_input)}
        if self.updated_permissions is not None:
            out["updatedPermissions"] = [dict(u) for u in self.updated_permissions]
        _add_common(out, self.tool_use_id, self.decision_classification)
        return out


@dataclass(frozen=True)
class PermissionDeny:
    """Deny the tool call; ``interrupt`` also aborts the whole turn."""

    message: str
    interrupt: bool = False
    tool_use_id: str | None = None
    decision_classification: DecisionClassification | None = None
    behavior: Literal["deny"] = "deny"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"behavior": "deny", "message": self.message}
        if self.interrupt:
            out["interrupt"] = True
        _add_common(out, self.tool_use_id, self.decision_classification)
        return out


PermissionDecision = PermissionAllow | PermissionDeny


def _add_common(out: dict[str, Any], tool_use_id: str | None, cls: str | None) -> None:
    if tool_use_id is not None:
        out["toolUseID"] = tool_use_id
    if cls is not None:
        out["decisionClassification"] = cls


def parse_permission_decision(response: object) -> PermissionDecision:
    """Validate the ``response.response`` payload of a success reply to ``can_use_tool``.

    Lenient where the reference is lenient: malformed ``updatedPermissions`` and
    ``decisionClassification`` are ignored, a missing ``updatedInput`` is the original
    input, a missing deny ``message`` gets a default. Strict where a wrong value
    would change the outcome: ``behavior``, a non-object ``updatedInput``, a
    non-string ``message`` and a non-boolean ``interrupt`` raise :class:`MessageError`.
    """
    if not isinstance(response, dict):
        raise MessageError(f"permission decision must be a JSON object, got {_json_kind(response)}")
    behavior = response.get("behavior")
    tool_use_id = response.get("toolUseID")
    tuid = tool_use_id if isinstance(tool_use_id, str) else None
    raw_cls = response.get("decisionClassification")
    cls: DecisionClassification | None = raw_cls if raw_cls in _CLASSIFICATIONS else None
    if behavior == "allow":
        updated = response.get("updatedInput", {})
        if not isinstance(updated, dict):
            raise MessageError(f"allow 'updatedInput' must be an object, got {_json_kind(updated)}")
        return PermissionAllow(
            updated_input=dict(updated),
            updated_permissions=_valid_updates(response.get("updatedPermissions")),
            tool_use_id=tuid,
            decision_classification=cls,
        )
    if behavior == "deny":
        message = response.get("message", DEFAULT_DENY_MESSAGE)
        if not isinstance(message, str):
            raise MessageError(f"deny 'message' must be a string, got {_json_kind(message)}")
        interrupt = response.get("interrupt", False)
        if not isinstance(interrupt, bool):
            raise MessageError(f"deny 'interrupt' must be a boolean, got {_json_kind(interrupt)}")
        return PermissionDeny(
            message=message, interrupt=interrupt, tool_use_id=tuid, decision_classification=cls
        )
    if "behavior" not in response:
        raise MessageError("permission decision has no 'behavior'")
    raise MessageError(f"permission decision 'behavior' must be 'allow' or 'deny', got {behavior!r}")


def _valid_updates(value: object) -> list[dict[str, Any]] | None:
    """The list when every entry is a well-formed PermissionUpdate, else None (ignored)."""
    if not isinstance(value, list):
        return None
    for entry in value:
        if not isinstance(entry, dict):
            return None
        if entry.get("type") not in _UPDATE_TYPES or entry.get("destination") not in _DESTINATIONS:
            return None
    return [dict(entry) for entry in value]
