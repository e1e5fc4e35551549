"""Messaging rules of the in-process REPL bridge (docs/protocol.md §7.3, §7.5, §12.2–§12.4, §12.9). Pure.

A REPL bridge carries *one conversation* between a front end (Tether's terminal REPL, or a
mirrored Claude Code TUI) and the server. These functions and classes decide what goes
where; the adapter (:mod:`tether.bridge.repl`) owns the transport and the timers:

* :func:`is_eligible` / :func:`to_sdk_message`: what of the conversation is sent (``user`` and
  ``assistant`` messages; a ``system/local_command`` with output, sent as an assistant message);
* :func:`select_history`, :func:`plan_flush`: the transcript flushed when remote control starts
  mid-conversation (the last ``cap`` eligible messages not sent before), then what queued behind
  the gate meanwhile;
* :class:`InboundFilter`: routes what the server sends and drops our own echoes (the uuids we
  posted) and re-deliveries (the uuids already handed over), two rings of 2,000;
* :func:`plan_control_request`: how a server ``control_request`` is answered (``initialize`` at
  once, a few handed to the front end, the rest refused; everything but ``initialize`` refused
  in outbound-only mirror mode);
* :func:`turn_result`: the ``result`` written at the end of every turn.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tether.protocol import event_rules
from tether.protocol import messages as m
from tether.protocol.uuid_ring import DEFAULT_CAPACITY, BoundedUUIDSet

__all__ = [
    "DEFAULT_HISTORY_CAP",
    "DELEGATED_SUBTYPES",
    "LOCAL_COMMAND",
    "MIRROR_TAG",
    "OUTBOUND_ONLY_ERROR",
    "RETURN_TO_TERMINAL",
    "TAKE_OVER",
    "TERMINAL_SUBTYPES",
    "ControlAction",
    "ControlPlan",
    "InboundFilter",
    "InboundKind",
    "Message",
    "initialize_payload",
    "is_eligible",
    "local_command_text",
    "message_uuid",
    "plan_control_request",
    "plan_flush",
    "select_history",
    "to_sdk_message",
    "turn_result",
]

Message = dict[str, Any]

DEFAULT_HISTORY_CAP: Final = 200
OUTBOUND_ONLY_ERROR: Final = (
    "This session is outbound-only. Enable Remote Control locally to allow inbound control."
)
MIRROR_TAG: Final = event_rules.MIRROR_TAG
DELEGATED_SUBTYPES: Final[frozenset[str]] = frozenset(
    {m.INTERRUPT, m.SET_MODEL, m.SET_PERMISSION_MODE, m.SET_MAX_THINKING_TOKENS}
)
TAKE_OVER: Final = m.TAKE_OVER
RETURN_TO_TERMINAL: Final = m.RETURN_TO_TERMINAL
TERMINAL_SUBTYPES: Final[frozenset[str]] = frozenset({TAKE_OVER, RETURN_TO_TERMINAL})
"""Tether's own client requests for a session whose terminal can hand it over (``tether claude``,
docs/protocol.md §15): the front end answers them."""
LOCAL_COMMAND: Final = "local_command"


# ---- outbound ------------------------------------------------------------------------------------


def message_uuid(msg: Mapping[str, Any]) -> str | None:
    uid = msg.get("uuid")
    return uid if isinstance(uid, str) and uid else None


def local_command_text(msg: Mapping[str, Any]) -> str | None:
    """The output of a ``system/local_command`` message (``content``), or None."""
    if msg.get("type") != m.SYSTEM or msg.get("subtype") != LOCAL_COMMAND:
        return None
    content = msg.get("content")
    return content if isinstance(content, str) and content.strip() else None


def is_eligible(msg: Mapping[str, Any]) -> bool:
    """Part of the conversation remote clients see (``isEligibleBridgeMessage``): user prompts
    and tool results, assistant messages, and local commands that printed something. Agent
    echoes (``isReplay``) and virtual messages are not; neither are ``stream_event``s (no token
    streaming from an interactive REPL) nor the agent's own ``result`` (the bridge writes one
    per turn itself)."""
    if msg.get("isVirtual") or message_uuid(msg) is None:
        return False
    kind = msg.get("type")
    if kind == m.USER:
        return not msg.get("isReplay")
    if kind == m.ASSISTANT:
        return True
    return local_command_text(msg) is not None


def to_sdk_message(msg: Mapping[str, Any], session_id: str) -> Message:
    """The wire form of an eligible message, stamped with ``session_id``.

    A local command becomes an ``assistant`` text message (mobile clients do not know
    ``local_command_output``); a meta user message is marked ``isSynthetic``."""
    text = local_command_text(msg)
    if text is not None:
        return {
            "type": m.ASSISTANT,
            "uuid": msg.get("uuid"),
            "session_id": session_id,
            "parent_tool_use_id": None,
            "message": {"role": "assistant", "type": "message", "content": [{"type": "text", "text": text}]},
        }
    out = dict(msg)
    out["session_id"] = session_id
    if out.get("type") == m.USER and out.pop("isMeta", False):
        out["isSynthetic"] = True
    return out


def select_history(messages: Iterable[Mapping[str, Any]], cap: int = DEFAULT_HISTORY_CAP,
                   skip: Container[str] = ()) -> list[Mapping[str, Any]]:
    """The history flush (docs/protocol.md §12.4): eligible messages whose uuid is not in ``skip``
    (already sent to this session), the last ``cap`` of them (``cap <= 0``: all)."""
    chosen = [msg for msg in messages if is_eligible(msg) and message_uuid(msg) not in skip]
    return chosen[-cap:] if cap > 0 else chosen


def plan_flush(transcript: Iterable[Mapping[str, Any]], queued: Iterable[Mapping[str, Any]], *,
               cap: int, sent: Container[str]) -> list[Mapping[str, Any]]:
    """What a transport that just connected sends first, in order: the history (the transcript's
    eligible messages, the last ``cap``, minus the ones the gate holds), then everything the
    :class:`~tether.protocol.flush_gate.FlushGate` queued meanwhile, in order (conversation
    messages, and the permission questions, answers and turn results between them). No
    conversation message that is in ``sent`` (already in this session's log), none twice. When
    history went out, nothing is queued and the transcript ends with a turn's ``result``, that
    result closes the flush (the session is idle, not running)."""
    transcript = list(transcript)
    queued = list(queued)
    held = {message_uuid(msg) for msg in queued if is_eligible(msg)}
    history = select_history((msg for msg in transcript if message_uuid(msg) not in held), cap, sent)
    out: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for msg in (*history, *queued):
        if is_eligible(msg):
            uid = message_uuid(msg)
            if uid is None or uid in seen or uid in sent:
                continue
            seen.add(uid)
        out.append(msg)
    if out and not queued and transcript and transcript[-1].get("type") == m.RESULT:
        out.append(transcript[-1])  # the conversation is between turns: clients show it idle
    return out


# ---- inbound -------------------------------------------------------------------------------------

InboundKind = Literal["permission_response", "control_request", "prompt", "echo", "redelivery", "ignored"]


@dataclass
class InboundFilter:
    """The two dedup rings (docs/protocol.md §7.5): ``posted`` holds the uuids this bridge wrote (their
    echoes are dropped), ``inbound`` the uuids already handed to the front end (re-deliveries
    are dropped; control messages too, so a re-sent ``interrupt`` never stops a later turn)."""

    capacity: int = DEFAULT_CAPACITY
    posted: BoundedUUIDSet = field(init=False)
    inbound: BoundedUUIDSet = field(init=False)

    def __post_init__(self) -> None:
        self.posted = BoundedUUIDSet(self.capacity)
        self.inbound = BoundedUUIDSet(self.capacity)

    def route(self, msg: Mapping[str, Any]) -> InboundKind:
        kind = msg.get("type")
        uid = message_uuid(msg)
        if kind == m.KEEP_ALIVE:
            return "ignored"
        if uid is not None and uid in self.posted:
            return "echo"
        if uid is not None and not self.inbound.add(uid):
            return "redelivery"
        if kind == m.CONTROL_RESPONSE:
            return "permission_response"
        if kind == m.CONTROL_REQUEST:
            return "control_request"
        if kind == m.USER:
            return "prompt"
        return "ignored"

    def sent(self, uid: str) -> None:
        self.posted.add(uid)

    def already_sent(self, uid: str) -> bool:
        """Written to this session already, or it came from a client (it is in the log)."""
        return uid in self.posted or uid in self.inbound

    def new_session(self) -> None:
        """A fresh session: nothing of it was sent or received yet."""
        self.posted.clear()
        self.inbound.clear()


# ---- server control requests ---------------------------------------------------------------------

ControlAction = Literal["reply", "delegate", "ignore"]


@dataclass(frozen=True)
class ControlPlan:
    """``reply``: write ``reply`` now; ``delegate``: ask the front end (``subtype``/``request``) and
    reply with its verdict; ``ignore``: nothing can be answered (no request id)."""

    action: ControlAction
    request_id: str | None = None
    subtype: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    reply: Message | None = None


def initialize_payload(pid: int) -> dict[str, Any]:
    """What the REPL bridge answers the server's ``initialize`` with (docs/protocol.md §7.3)."""
    return {"commands": [], "output_style": "normal", "available_output_styles": ["normal"], "models": [],
            "account": {}, "pid": pid}


def plan_control_request(msg: Mapping[str, Any], *, outbound_only: bool, pid: int) -> ControlPlan:
    """``handleServerControlRequest``: ``initialize`` is always answered here; in outbound-only
    mode everything else is refused; ``interrupt``, ``set_model``, ``set_permission_mode``,
    ``set_max_thinking_tokens`` and Tether's terminal hand-over requests go to the front end; any
    other subtype is refused."""
    rid = m.request_id_of(msg)
    if rid is None:
        return ControlPlan("ignore")
    request = m.request_payload(msg) or {}
    subtype = request.get("subtype") if isinstance(request.get("subtype"), str) else None
    if subtype == m.INITIALIZE:
        return ControlPlan("reply", rid, subtype, request, m.control_success(rid, initialize_payload(pid)))
    if outbound_only:
        return ControlPlan("reply", rid, subtype, request, m.control_error(rid, OUTBOUND_ONLY_ERROR))
    if subtype in DELEGATED_SUBTYPES or subtype in TERMINAL_SUBTYPES:
        return ControlPlan("delegate", rid, subtype, request)
    return ControlPlan("reply", rid, subtype, request,
                       m.control_error(rid, f"REPL bridge does not handle control_request subtype: {subtype}"))


# ---- results -------------------------------------------------------------------------------------

_ZERO_USAGE: Final = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}


def turn_result(session_id: str, uid: str, agent_result: Mapping[str, Any] | None = None) -> Message:
    """The ``result`` a bridge writes at the end of every turn (``sendResult``), so clients stop
    their "working" state and the server marks the session idle. With the agent's own result
    its outcome, text and cost are kept; without one it is the reference's minimal success."""
    if agent_result is not None and agent_result.get("type") == m.RESULT:
        out = dict(agent_result)
        out["session_id"] = session_id
        out.setdefault("uuid", uid)
        return out
    return {"type": m.RESULT, "subtype": "success", "is_error": False, "duration_ms": 0, "duration_api_ms": 0,
            "num_turns": 0, "result": "", "stop_reason": None, "total_cost_usd": 0, "usage": dict(_ZERO_USAGE),
            "permission_denials": [], "session_id": session_id, "uuid": uid}
