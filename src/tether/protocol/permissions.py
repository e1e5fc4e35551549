"""Permission requests as durable values (docs/protocol.md §4.6).

A worker's ``can_use_tool`` control request becomes a :class:`PermissionRequest` in
state ``pending``. Exactly one transition out of ``pending`` ever happens:

    pending ─┬─ resolve(allow) ─→ allowed
             ├─ resolve(deny)  ─→ denied
             ├─ cancel         ─→ cancelled   (the worker's control_cancel_request)
             └─ expire         ─→ expired     (the session/worker went away)

First writer wins: every transition from a non-pending request raises
:class:`AlreadyResolved` and changes nothing, so two clients answering at once
cannot both reach the worker. All functions are pure: they return a new value and
the store persists it (with a conditional update on ``status = 'pending'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from tether.protocol.messages import (
    CAN_USE_TOOL,
    MessageError,
    PermissionAllow,
    PermissionDecision,
    control_request,
    is_control_request,
    request_id_of,
    request_payload,
    response_request_id,
)

__all__ = [
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "AlreadyResolved",
    "Answer",
    "DecisionBehavior",
    "PermissionRequest",
    "PermissionStateError",
    "PermissionStatus",
    "Resolution",
    "Settlement",
    "cancel",
    "expire",
    "from_can_use_tool",
    "parse_answer",
    "resolve",
    "resolve_with",
    "settle",
]

PermissionStatus = Literal["pending", "allowed", "denied", "cancelled", "expired"]
DecisionBehavior = Literal["allow", "deny"]
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"allowed", "denied", "cancelled", "expired"})

# Fields of the can_use_tool request that get their own attribute; the rest is kept in ``extra``.
_OWN_FIELDS: Final = frozenset(
    {"subtype", "tool_name", "input", "tool_use_id", "description", "permission_suggestions"}
)


class PermissionStateError(ValueError):
    """A transition that the state machine does not allow."""


class AlreadyResolved(PermissionStateError):
    """The request is no longer pending (maps to 409 ``already_resolved``)."""

    def __init__(self, request_id: str, status: PermissionStatus) -> None:
        super().__init__(f"permission request {request_id} is already {status}")
        self.request_id = request_id
        self.status: PermissionStatus = status


@dataclass(frozen=True)
class PermissionRequest:
    request_id: str
    session_id: str
    tool_name: str
    input: dict[str, Any]
    tool_use_id: str | None
    description: str | None
    permission_suggestions: list[dict[str, Any]] | None
    created_at: str
    status: PermissionStatus = "pending"
    answered_by: str | None = None
    answered_at: str | None = None
    decision: dict[str, Any] | None = None
    """The decision payload as forwarded to the worker (allowed/denied only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other ``can_use_tool`` fields (``blocked_path``, ``title``, ...), kept for clients."""

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def to_control_request(self) -> dict[str, Any]:
        """The ``can_use_tool`` control_request, rebuilt for a client that connects later."""
        fields: dict[str, Any] = dict(self.extra)
        fields.update(tool_name=self.tool_name, input=dict(self.input))
        if self.tool_use_id is not None:
            fields["tool_use_id"] = self.tool_use_id
        if self.description is not None:
            fields["description"] = self.description
        if self.permission_suggestions is not None:
            fields["permission_suggestions"] = [dict(s) for s in self.permission_suggestions]
        msg = control_request(CAN_USE_TOOL, self.request_id, **fields)
        msg["session_id"] = self.session_id
        return msg

    def to_json(self) -> dict[str, Any]:
        """API representation (``GET /v1/sessions/{id}/permissions``)."""
        return {
            "request_id": self.request_id,
            "session_id": self.session_id,
            "tool_name": self.tool_name,
            "input": dict(self.input),
            "tool_use_id": self.tool_use_id,
            "description": self.description,
            "permission_suggestions": self.permission_suggestions,
            "status": self.status,
            "created_at": self.created_at,
            "answered_by": self.answered_by,
            "answered_at": self.answered_at,
            "decision": self.decision,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


@dataclass(frozen=True)
class Resolution:
    """The outcome of one successful transition."""

    request: PermissionRequest
    """The request in its new, terminal state."""
    previous: PermissionStatus = "pending"

    @property
    def status(self) -> PermissionStatus:
        return self.request.status


def from_can_use_tool(message: Mapping[str, Any], session_id: str, now_iso: str) -> PermissionRequest:
    """Build a pending request from a worker's ``can_use_tool`` control_request.

    Raises :class:`MessageError` with the reason when the message is not one.
    Malformed ``permission_suggestions`` are dropped (they are advisory).
    """
    if not is_control_request(message):
        raise MessageError(f"expected a control_request, got type {message.get('type')!r}")
    rid = request_id_of(message)
    if rid is None:
        raise MessageError("can_use_tool request has no request_id")
    req = request_payload(message)
    if req is None:
        raise MessageError("control_request has no 'request' object")
    if req.get("subtype") != CAN_USE_TOOL:
        raise MessageError(f"expected subtype can_use_tool, got {req.get('subtype')!r}")
    tool_name = req.get("tool_name")
    if not isinstance(tool_name, str) or not tool_name:
        raise MessageError("can_use_tool request has no tool_name")
    tool_input = req.get("input")
    if not isinstance(tool_input, dict):
        raise MessageError("can_use_tool 'input' must be an object")
    tool_use_id = req.get("tool_use_id")
    if tool_use_id is not None and not isinstance(tool_use_id, str):
        raise MessageError("can_use_tool 'tool_use_id' must be a string")
    description = req.get("description")
    suggestions = req.get("permission_suggestions")
    return PermissionRequest(
        request_id=rid,
        session_id=session_id,
        tool_name=tool_name,
        input=dict(tool_input),
        tool_use_id=tool_use_id,
        description=description if isinstance(description, str) else None,
        permission_suggestions=(
            [dict(s) for s in suggestions]
            if isinstance(suggestions, list) and all(isinstance(s, dict) for s in suggestions)
            else None
        ),
        created_at=now_iso,
        extra={k: v for k, v in req.items() if k not in _OWN_FIELDS},
    )


# ---- the machine as a table --------------------------------------------------------------------------

Settlement = Literal["allow", "deny", "cancel", "expire"]
TRANSITIONS: Final[dict[tuple[PermissionStatus, Settlement], PermissionStatus]] = {
    ("pending", "allow"): "allowed",
    ("pending", "deny"): "denied",
    ("pending", "cancel"): "cancelled",
    ("pending", "expire"): "expired",
}


def settle(request_id: str, status: PermissionStatus, how: Settlement) -> PermissionStatus:
    """The status after ``how``; raises :class:`AlreadyResolved` unless the request is pending."""
    after = TRANSITIONS.get((status, how))
    if after is None:
        raise AlreadyResolved(request_id, status)
    return after


@dataclass(frozen=True)
class Answer:
    """A person's (or a terminal's) answer to a permission request, read from a ``control_response``."""

    request_id: str
    how: Literal["allow", "deny"]
    decision: dict[str, Any] | None
    """``response.response`` of a success reply as sent (forwarded to the worker as it is)."""


def parse_answer(message: Mapping[str, Any]) -> Answer:
    """A client's ``control_response`` as an answer, or :class:`MessageError` saying what is wrong.

    The request id is read where the reference allows it (``response.request_id``, camelCase, or
    the top level: :func:`~tether.protocol.messages.response_request_id`). A ``success`` reply needs
    ``response.response.behavior`` ``allow`` or ``deny``; an ``error`` reply denies.
    """
    request_id = response_request_id(message)
    if request_id is None:
        raise MessageError("control_response needs response.request_id.")
    inner = message.get("response")
    if not isinstance(inner, Mapping) or inner.get("subtype") not in ("success", "error"):
        raise MessageError("control_response.response.subtype must be 'success' or 'error'.")
    if inner.get("subtype") == "error":
        return Answer(request_id, "deny", None)
    decision = inner.get("response")
    behavior = decision.get("behavior") if isinstance(decision, Mapping) else None
    if behavior not in ("allow", "deny") or not isinstance(decision, dict):
        raise MessageError("A permission answer needs response.response.behavior 'allow' or 'deny'.")
    return Answer(request_id, "allow" if behavior == "allow" else "deny", decision)


def resolve(
    req: PermissionRequest,
    decision_behavior: DecisionBehavior,
    by: str,
    at: str,
    decision: Mapping[str, Any] | None = None,
) -> Resolution:
    """Record the first answer; raises :class:`AlreadyResolved` for any later one."""
    if decision_behavior not in ("allow", "deny"):
        raise PermissionStateError(f"decision behavior must be 'allow' or 'deny', got {decision_behavior!r}")
    status = settle(req.request_id, req.status, decision_behavior)
    new = replace(
        req,
        status=status,
        answered_by=by,
        answered_at=at,
        decision=dict(decision) if decision is not None else None,
    )
    return Resolution(new)


def resolve_with(req: PermissionRequest, decision: PermissionDecision, by: str, at: str) -> Resolution:
    """:func:`resolve` from a parsed decision, recording its wire form."""
    behavior: DecisionBehavior = "allow" if isinstance(decision, PermissionAllow) else "deny"
    return resolve(req, behavior, by, at, decision.to_json())


def cancel(req: PermissionRequest, at: str, by: str | None = None) -> Resolution:
    """The worker withdrew the request (``control_cancel_request``)."""
    return Resolution(replace(req, status=settle(req.request_id, req.status, "cancel"), answered_by=by,
                              answered_at=at))


def expire(req: PermissionRequest, at: str) -> Resolution:
    """Nobody can answer any more (worker gone, session archived)."""
    return Resolution(replace(req, status=settle(req.request_id, req.status, "expire"), answered_at=at))
