"""A permission question asked in two places at once: the terminal and every remote client
(docs/protocol.md §12.7, §4.6). Pure.

The REPL's agent asks (``can_use_tool``); the REPL shows the question locally and the bridge
sends it to the server. The first answer wins:

* **local wins** — the bridge writes a ``control_response`` with the decision (the server records
  who answered) and a ``control_cancel_request`` so every client's prompt disappears;
* **remote wins** — an inbound ``control_response`` with a valid decision settles the question;
  the front end closes its local prompt and gives the decision to the agent;
* **withdrawn** — the agent settled it another way (an interrupt): a ``control_cancel_request``.

Every request is a :class:`~tether.protocol.permissions.PermissionRequest`: exactly one transition
out of ``pending``; any later answer is refused (:class:`AlreadyResolved`) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tether.protocol import messages as m
from tether.protocol.permissions import (
    AlreadyResolved,
    PermissionRequest,
    cancel,
    from_can_use_tool,
    resolve_with,
)
from tether.protocol.uuid_ring import BoundedUUIDSet

__all__ = [
    "LOCAL",
    "MAX_OPEN",
    "REMOTE",
    "Outcome",
    "PermissionRace",
    "RemoteAnswer",
]

LOCAL: Final = "local"
REMOTE: Final = "remote"
MAX_OPEN: Final = 1000

Outcome = Literal["won", "unknown", "already_resolved", "invalid"]


@dataclass(frozen=True)
class RemoteAnswer:
    """What an inbound ``control_response`` did: ``won`` (``decision`` settles the question),
    ``unknown`` (not a question of ours, e.g. the answer to another bridge's), ``already_resolved``
    (someone answered first) or ``invalid`` (no usable decision; ``error`` says why)."""

    outcome: Outcome
    request_id: str | None = None
    decision: m.PermissionDecision | None = None
    error: str | None = None


class PermissionRace:
    def __init__(self, session_id: str = "") -> None:
        self.session_id = session_id
        self._open: dict[str, PermissionRequest] = {}
        self._settled = BoundedUUIDSet(MAX_OPEN)

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._open)

    def get(self, request_id: str) -> PermissionRequest | None:
        return self._open.get(request_id)

    def settled(self, request_id: str) -> bool:
        """Answered or withdrawn already (as opposed to never asked here)."""
        return request_id in self._settled

    def open(self, request: Mapping[str, Any], now_iso: str) -> PermissionRequest:
        """The agent asked; raises :class:`~tether.protocol.messages.MessageError` for a malformed
        request. At most :data:`MAX_OPEN` questions stay open (the oldest is forgotten)."""
        req = from_can_use_tool(request, self.session_id, now_iso)
        if len(self._open) >= MAX_OPEN:
            self._open.pop(next(iter(self._open)))
        self._open[req.request_id] = req
        return req

    def _take(self, request_id: str) -> PermissionRequest:
        req = self._open.get(request_id)
        if req is None:  # answered or withdrawn already (or never asked)
            raise AlreadyResolved(request_id, "cancelled" if request_id in self._settled else "expired")
        return req

    def answer_locally(self, request_id: str, decision: m.PermissionDecision, at: str) -> list[m.Message]:
        """The person at the terminal answered first: the messages for the server (the decision,
        then the cancel that clears every client's prompt). Raises :class:`AlreadyResolved`."""
        req = self._take(request_id)
        resolve_with(req, decision, LOCAL, at)
        self._close(request_id)
        return [m.control_success(request_id, decision.to_json()), m.cancel_request(request_id)]

    def answer_remotely(self, response: Mapping[str, Any], at: str) -> RemoteAnswer:
        """An inbound ``control_response``; never raises."""
        rid = m.response_request_id(response)
        if rid is None:
            return RemoteAnswer("invalid", None, error="the control_response has no request_id")
        req = self._open.get(rid)
        if req is None:
            return RemoteAnswer("already_resolved" if rid in self._settled else "unknown", rid)
        inner = m.response_payload(response) or {}
        if inner.get("subtype") != "success":
            return RemoteAnswer("invalid", rid, error=str(inner.get("error") or "an error reply is not a decision"))
        try:
            decision = m.parse_permission_decision(inner.get("response"))
        except m.MessageError as exc:
            return RemoteAnswer("invalid", rid, error=str(exc))
        resolve_with(req, decision, REMOTE, at)
        self._close(rid)
        return RemoteAnswer("won", rid, decision)

    def withdraw(self, request_id: str, at: str) -> m.Message | None:
        """The agent settled the question itself: the cancel for the server (None if not open)."""
        req = self._open.get(request_id)
        if req is None:
            return None
        cancel(req, at, LOCAL)
        self._close(request_id)
        return m.cancel_request(request_id)

    def withdraw_all(self, at: str) -> list[m.Message]:
        return [msg for rid in list(self._open) if (msg := self.withdraw(rid, at)) is not None]

    def _close(self, request_id: str) -> None:
        self._open.pop(request_id, None)
        self._settled.add(request_id)
