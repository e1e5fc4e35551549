"""What a session host knows about its session from the messages it relays (docs/protocol.md §5).

Pure bookkeeping, fed with each inbound message (server → agent) and each outbound
message (agent → server), with ``now`` passed in:

* ``state``: the rules of :mod:`tether.protocol.session_status` (the server reads its log by
  the same table): ``idle`` → ``running`` on a prompt or agent output → ``requires_action``
  while a ``can_use_tool`` request is open → ``running`` once answered or cancelled →
  ``idle`` on a ``result``;
* ``activities``: the last ``max_activities`` (10) tool starts ("Editing src/app.py"),
  assistant text (first 80 characters) and results;
* ``title``: from the first title-worthy user message (:mod:`tether.protocol.titles`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tether.protocol import messages as m
from tether.protocol import session_status as status
from tether.protocol.titles import TitleState
from tether.protocol.tool_activity import tool_activity

__all__ = [
    "DEFAULT_MAX_ACTIVITIES",
    "TEXT_ACTIVITY_LEN",
    "Activity",
    "ActivityKind",
    "SessionState",
    "SessionTracker",
]

SessionState = status.WorkerStatus  # a host never sees its session archived
ActivityKind = Literal["tool_start", "text", "result", "error"]
DEFAULT_MAX_ACTIVITIES: Final = 10
TEXT_ACTIVITY_LEN: Final = 80


@dataclass(frozen=True)
class Activity:
    kind: ActivityKind
    summary: str
    at: float


class SessionTracker:
    def __init__(self, cwd: str | None = None, max_activities: int = DEFAULT_MAX_ACTIVITIES) -> None:
        if max_activities < 1:
            raise ValueError(f"max_activities must be at least 1, got {max_activities}")
        self.cwd = cwd
        self._state: SessionState = "idle"
        self._pending: dict[str, str] = {}  # request_id -> tool name
        self._activities: deque[Activity] = deque(maxlen=max_activities)
        self._title = TitleState()
        self.turns = 0
        self.last_result: dict[str, Any] | None = None

    # -- views ---------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def pending_permissions(self) -> tuple[str, ...]:
        return tuple(self._pending)

    @property
    def activities(self) -> tuple[Activity, ...]:
        return tuple(self._activities)

    @property
    def title(self) -> str | None:
        return self._title.title

    def pending_tool(self, request_id: str | None) -> str | None:
        """The tool name of the agent's ``can_use_tool`` ``request_id`` while it is open, else None."""
        return self._pending.get(request_id) if request_id is not None else None

    # -- inputs --------------------------------------------------------------

    def observe_inbound(self, msg: Mapping[str, Any], now: float) -> bool:
        """A message on its way to the agent; True when ``state`` changed."""
        before = self._state
        kind = msg.get("type")
        if kind == m.USER:
            self._title = self._title.observe(msg)
        elif kind == m.CONTROL_RESPONSE:
            self._settle(m.response_request_id(msg))
        self._move(status.inbound_cue(msg))
        return self._state != before

    def observe_outbound(self, msg: Mapping[str, Any], now: float) -> bool:
        """A message the agent wrote; True when ``state`` changed."""
        before = self._state
        kind = msg.get("type")
        cue = status.outbound_cue(msg)
        if kind == m.ASSISTANT:
            self._assistant(msg, now)
        elif kind == m.USER and not msg.get("isReplay"):
            self._title = self._title.observe(msg)
        elif cue == "permission_asked":
            request_id = m.request_id_of(msg) or ""
            tool = (m.request_payload(msg) or {}).get("tool_name")
            self._pending[request_id] = tool if isinstance(tool, str) else ""
        elif kind == m.CONTROL_CANCEL_REQUEST:
            self._settle(m.request_id_of(msg))
        elif kind == m.RESULT:
            self._result(msg, now)
        self._move(cue)
        return self._state != before

    def note(self, kind: ActivityKind, summary: str, now: float) -> None:
        """An activity no relayed message shows (the host's own, e.g. output it could not relay)."""
        self._activities.append(Activity(kind, summary, now))

    # -- internals -----------------------------------------------------------

    def _move(self, cue: status.Cue | None) -> None:
        moved = status.next_status(self._state, cue)
        assert moved != "archived"  # no cue a host sees archives
        self._state = moved

    def _settle(self, request_id: str | None) -> None:
        if request_id is None or self._pending.pop(request_id, None) is None:
            return
        self._move(status.settled_cue(len(self._pending)))

    def _assistant(self, msg: Mapping[str, Any], now: float) -> None:
        inner = msg.get("message")
        content = inner.get("content") if isinstance(inner, Mapping) else None
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "tool_use":
                name = block.get("name")
                raw_input = block.get("input")
                tool_input = raw_input if isinstance(raw_input, Mapping) else None
                summary = tool_activity(name if isinstance(name, str) else "", tool_input, self.cwd)
                self._activities.append(Activity("tool_start", summary, now))
            elif block.get("type") == "text":
                text = block.get("text")
                if isinstance(text, str) and text.strip():
                    flat = " ".join(text.split())
                    self._activities.append(Activity("text", flat[:TEXT_ACTIVITY_LEN], now))

    def _result(self, msg: Mapping[str, Any], now: float) -> None:
        self.turns += 1
        self.last_result = dict(msg)
        self._pending.clear()
        if msg.get("subtype") == "success" and not msg.get("is_error"):
            self._activities.append(Activity("result", "Session completed", now))
            return
        errors = msg.get("errors")
        first = next((e for e in errors if isinstance(e, str) and e), None) if isinstance(errors, list) else None
        text = first or (msg.get("result") if isinstance(msg.get("result"), str) else None)
        subtype = msg.get("subtype")
        self._activities.append(Activity("error", text or str(subtype or "error"), now))
