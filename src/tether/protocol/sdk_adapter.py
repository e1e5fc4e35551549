"""The SDK message adapter of a remote client: subscribe-socket frames → things to show (docs/protocol.md §13).

Pure: :func:`convert` takes one inbound frame and the :class:`ConvertMode` it arrived in and
returns display items (frozen dataclasses) for a renderer, plus :class:`SendControl` items for
frames the client must answer at once. Nothing here draws or sends.

Rules (docs/protocol.md §13, with Tether's additions of docs/protocol.md §3, §4.7):

* ``assistant`` → one item per content block: text (Markdown), ``tool_use`` (a tool card);
  an ``error`` field becomes a warning.
* ``stream_event`` → :class:`StreamText` for text deltas (a live preview), else nothing.
* ``user`` → tool results always; plain text only in history (replayed transcript) or when it
  came from somewhere else — live echoes of prompts this client posted, ``isReplay`` echoes
  and synthetic messages are ignored.
* ``result`` → :class:`TurnEnded`; error subtypes also warn with the joined errors.
* ``system``: ``init`` → "Remote session initialized (model: X)"; ``status`` → "Compacting
  conversation…" / "Status: X" (null ignored); ``compact_boundary`` → a marker; others ignored.
* ``tool_progress`` → "Tool X running for Ns…"; ``auth_status``, ``tool_use_summary``,
  ``rate_limit_event``, ``keep_alive`` and unknown types → nothing.
* ``control_request``: ``can_use_tool`` → :class:`PermissionPrompt` with a synthetic
  tool card (message id ``remote-<request_id>``; a tool this client does not know gets a
  stub); ``interrupt`` / ``set_model`` / ``set_permission_mode`` (another client's actions,
  echoed by the log) → a note; any other subtype arriving live → :class:`SendControl` with the
  error ``Unsupported control request subtype: X`` at once.
* ``control_cancel_request`` → :class:`PromptCancelled`; a logged ``control_response`` (it has
  a ``sequence_num``: someone answered) → :class:`PromptResolved`; an unlogged one is the
  server's acknowledgement of our own control request → nothing.
* Tether frames: ``session_update`` → :class:`SessionState`, ``delivery_update`` →
  :class:`Delivery`, ``error`` → :class:`ServerError`.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tether.protocol.messages import CLIENT_CONTROL_SUBTYPES, control_error, result_reason
from tether.protocol.tool_activity import tool_activity

__all__ = [
    "HISTORY",
    "KNOWN_TOOLS",
    "LIVE",
    "AssistantText",
    "ConvertMode",
    "Delivery",
    "Item",
    "Level",
    "Notice",
    "PermissionPrompt",
    "PromptCancelled",
    "PromptResolved",
    "SendControl",
    "ServerError",
    "SessionState",
    "StreamText",
    "ToolResult",
    "ToolUse",
    "TurnEnded",
    "UserText",
    "convert",
    "is_permission_request",
    "log_sequence",
    "permission_prompt",
    "tool_card",
]

KNOWN_TOOLS: Final[frozenset[str]] = frozenset({
    "Agent", "Bash", "BashOutput", "Edit", "ExitPlanMode", "Glob", "Grep", "KillShell", "LS", "MultiEdit",
    "NotebookEdit", "Read", "Task", "TodoWrite", "WebFetch", "WebSearch", "Write",
})

Level = Literal["info", "warning", "error", "dim"]


@dataclass(frozen=True)
class ConvertMode:
    """How a frame arrived: ``history`` (a page of GET events) or live (the socket)."""

    history: bool = False
    own_uuids: Container[str] = field(default_factory=frozenset)
    """uuids of prompts this client posted (their live echoes are not shown again)."""


@dataclass(frozen=True)
class AssistantText:
    text: str
    uuid: str | None = None


@dataclass(frozen=True)
class ToolUse:
    tool_use_id: str | None
    name: str
    input: dict[str, Any]
    activity: str
    known: bool = True


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str | None
    text: str
    is_error: bool = False


@dataclass(frozen=True)
class UserText:
    text: str
    uuid: str | None = None


@dataclass(frozen=True)
class StreamText:
    """A text delta of the message being written (shown as a live preview, not kept)."""

    text: str
    index: int = 0


@dataclass(frozen=True)
class Notice:
    text: str
    level: Level = "info"


@dataclass(frozen=True)
class TurnEnded:
    ok: bool
    subtype: str = "success"


@dataclass(frozen=True)
class PermissionPrompt:
    request_id: str
    tool_name: str
    input: dict[str, Any]
    tool_use_id: str | None
    description: str | None
    card: ToolUse
    """The synthetic tool card to show with the question (a stub for unknown tools)."""
    message_id: str
    """``remote-<request_id>``: the id of the synthetic assistant message (docs/protocol.md §13)."""


@dataclass(frozen=True)
class PromptCancelled:
    request_id: str | None
    tool_use_id: str | None = None


@dataclass(frozen=True)
class PromptResolved:
    request_id: str
    behavior: str
    """``allow``, ``deny`` or ``error``."""
    message: str | None = None


@dataclass(frozen=True)
class SendControl:
    """A frame the client must send back at once (an error for an unsupported control request)."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class SessionState:
    status: str | None
    title: str | None


@dataclass(frozen=True)
class Delivery:
    uuid: str
    status: str


@dataclass(frozen=True)
class ServerError:
    error_type: str
    message: str
    request_id: str | None = None


Item = (AssistantText | ToolUse | ToolResult | UserText | StreamText | Notice | TurnEnded | PermissionPrompt
        | PromptCancelled | PromptResolved | SendControl | SessionState | Delivery | ServerError)

LIVE: Final = ConvertMode()
HISTORY: Final = ConvertMode(history=True)


_NOT_LOGGED: Final = frozenset({"session_update", "delivery_update", "error", "keep_alive"})


def log_sequence(frame: Mapping[str, Any]) -> int | None:
    """The event-log sequence number of a frame, or None for frames outside the log
    (Tether's status frames, ephemeral events, acknowledgements)."""
    seq = frame.get("sequence_num")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    if frame.get("type") in _NOT_LOGGED or frame.get("ephemeral") is True:
        return None
    return seq


def is_permission_request(frame: Mapping[str, Any]) -> bool:
    request = frame.get("request")
    return (frame.get("type") == "control_request" and isinstance(request, Mapping)
            and request.get("subtype") == "can_use_tool")


def convert(frame: Mapping[str, Any], mode: ConvertMode = LIVE) -> list[Item]:
    """The display items for one inbound frame (empty: nothing to show)."""
    kind = frame.get("type")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    return handler(frame, mode) if handler is not None else []


# ---- SDK messages -------------------------------------------------------------------------------

def _assistant(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    message = frame.get("message")
    blocks = message.get("content") if isinstance(message, Mapping) else None
    uuid = _str(frame.get("uuid"))
    items: list[Item] = []
    if isinstance(blocks, str) and blocks.strip():
        items.append(AssistantText(blocks, uuid))
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"].strip():
            items.append(AssistantText(block["text"], uuid))
        elif block.get("type") == "tool_use":
            items.append(tool_card(_str(block.get("name")) or "tool", block.get("input"), _str(block.get("id"))))
    error = frame.get("error")
    if isinstance(error, str) and error:
        items.append(Notice(f"Assistant error: {error}", "warning"))
    return items


def tool_card(name: str, tool_input: object, tool_use_id: str | None) -> ToolUse:
    """A tool card; tools this client does not know get a stub that just shows the input."""
    args = dict(tool_input) if isinstance(tool_input, Mapping) else {}
    known = name in KNOWN_TOOLS
    activity = tool_activity(name, args) if known else f"Using {name}"
    return ToolUse(tool_use_id, name, args, activity, known)


def _user(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    message = frame.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    results = [b for b in content if isinstance(b, Mapping) and b.get("type") == "tool_result"] \
        if isinstance(content, list) else []
    if results:
        return [ToolResult(_str(b.get("tool_use_id")), _result_text(b.get("content")), b.get("is_error") is True)
                for b in results]
    uuid = _str(frame.get("uuid"))
    if frame.get("isSynthetic") is True or frame.get("isMeta") is True:
        return []
    if not mode.history and (frame.get("isReplay") is True or (uuid is not None and uuid in mode.own_uuids)):
        return []
    text = _plain_text(content)
    return [UserText(text, uuid)] if text else []


def _result(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    subtype = _str(frame.get("subtype")) or "success"
    if subtype == "success" and frame.get("is_error") is not True:
        return [TurnEnded(True, subtype)]
    return [Notice(result_reason(frame) or "Unknown error", "warning"), TurnEnded(False, subtype)]


def _system(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    subtype = frame.get("subtype")
    if subtype == "init":
        return [Notice(f"Remote session initialized (model: {_str(frame.get('model')) or 'unknown'})", "dim")]
    if subtype == "status":
        status = frame.get("status")
        if status is None:
            return []
        return [Notice("Compacting conversation…" if status == "compacting" else f"Status: {status}", "dim")]
    if subtype == "compact_boundary":
        return [Notice("── conversation compacted ──", "dim")]
    return []


def _tool_progress(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    name = _str(frame.get("tool_name")) or "tool"
    seconds = frame.get("elapsed_time_seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return [Notice(f"Tool {name} running for {int(seconds)}s…", "dim")]
    return [Notice(f"Tool {name} running…", "dim")]


def _stream_event(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    event = frame.get("event")
    if not isinstance(event, Mapping) or event.get("type") != "content_block_delta":
        return []
    delta = event.get("delta")
    if isinstance(delta, Mapping) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
        index = event.get("index")
        return [StreamText(delta["text"], index if isinstance(index, int) else 0)]
    return []


# ---- control messages ---------------------------------------------------------------------------

def _control_request(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    request = frame.get("request")
    inner: Mapping[str, Any] = request if isinstance(request, Mapping) else {}
    subtype = _str(inner.get("subtype")) or ""
    rid = _str(frame.get("request_id"))
    if subtype == "can_use_tool":
        return [] if rid is None else [permission_prompt(rid, inner)]
    if subtype in CLIENT_CONTROL_SUBTYPES:
        return [] if mode.history else [Notice(_client_action(subtype, inner), "dim")]
    if mode.history or rid is None:
        return []
    return [SendControl(control_error(rid, f"Unsupported control request subtype: {subtype}"))]


def permission_prompt(request_id: str, request: Mapping[str, Any]) -> PermissionPrompt:
    name = _str(request.get("tool_name")) or "tool"
    tool_input = request.get("input")
    args = dict(tool_input) if isinstance(tool_input, Mapping) else {}
    tool_use_id = _str(request.get("tool_use_id"))
    return PermissionPrompt(request_id, name, args, tool_use_id, _str(request.get("description")),
                            tool_card(name, args, tool_use_id), f"remote-{request_id}")


def _client_action(subtype: str, request: Mapping[str, Any]) -> str:
    if subtype == "interrupt":
        return "Stop requested"
    if subtype == "set_model":
        return f"Model: {_str(request.get('model')) or 'default'}"
    if subtype == "set_permission_mode":
        return f"Permission mode: {_str(request.get('mode')) or '?'}"
    if subtype == "set_max_thinking_tokens":
        tokens = request.get("max_thinking_tokens")
        return f"Thinking budget: {tokens if isinstance(tokens, int) else 'default'}"
    if subtype == "end_session":
        return "End of session requested"
    return "Taken over from the terminal" if subtype == "tether_take_over" else "Handed back to the terminal"


def _control_response(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    if not isinstance(frame.get("sequence_num"), int):
        return []  # the server's ack of our own control request
    response = frame.get("response")
    inner: Mapping[str, Any] = response if isinstance(response, Mapping) else {}
    rid = _str(inner.get("request_id")) or _str(inner.get("requestId")) or _str(frame.get("request_id"))
    if rid is None:
        return []
    if inner.get("subtype") != "success":
        return [PromptResolved(rid, "error", _str(inner.get("error")))]
    decision = inner.get("response")
    decided: Mapping[str, Any] = decision if isinstance(decision, Mapping) else {}
    behavior = _str(decided.get("behavior")) or "allow"
    return [PromptResolved(rid, behavior, _str(decided.get("message")))]


def _control_cancel(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    return [PromptCancelled(_str(frame.get("request_id")), _str(frame.get("tool_use_id")))]


# ---- Tether frames ------------------------------------------------------------------------------

def _session_update(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    return [SessionState(_str(frame.get("status")), _str(frame.get("title")))]


def _delivery_update(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    uuid, status = _str(frame.get("uuid")), _str(frame.get("status"))
    return [Delivery(uuid, status)] if uuid and status else []


def _error(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    error = frame.get("error")
    inner: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    return [ServerError(_str(inner.get("type")) or "error", _str(inner.get("message")) or "The server refused that.",
                        _str(frame.get("request_id")))]


def _ignored(frame: Mapping[str, Any], mode: ConvertMode) -> list[Item]:
    return []


_HANDLERS: Final = {
    "assistant": _assistant,
    "user": _user,
    "result": _result,
    "system": _system,
    "tool_progress": _tool_progress,
    "stream_event": _stream_event,
    "control_request": _control_request,
    "control_response": _control_response,
    "control_cancel_request": _control_cancel,
    "session_update": _session_update,
    "delivery_update": _delivery_update,
    "error": _error,
    "keep_alive": _ignored,
    "auth_status": _ignored,
    "tool_use_summary": _ignored,
    "rate_limit_event": _ignored,
}


# ---- helpers ------------------------------------------------------------------------------------

def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _plain_text(content: object) -> str:
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif isinstance(block, Mapping) and block.get("type") == "image":
            parts.append("[image]")
    return "\n".join(p for p in parts if p).strip()


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    return _plain_text(content) if isinstance(content, list) else ""
