"""A session's status as a table of rules (docs/protocol.md §4.2, §4.6). Pure.

A session is ``idle``, ``running``, ``requires_action`` or ``archived``. What moves it is a
*cue*: something that happened to the session, named once here and read the same way by the
server (over its event log) and by a session host (:mod:`tether.protocol.session_tracker`):

======================  ==================================================================
cue                     what happened
======================  ==================================================================
``prompt``              a person's prompt went to the agent
``agent_output``        the agent wrote a message of its turn (assistant text, a tool result)
``permission_asked``    the agent asked to use a tool (``can_use_tool``)
``permissions_settled`` the last open permission request was answered or withdrawn
``turn_ended``          the agent wrote its ``result``
``worker_gone``         the worker went away with requests open (they expired)
``archived``            the session was archived: nothing moves it again
======================  ==================================================================

:data:`TRANSITIONS` is the whole machine: a (status, cue) pair that is not in it leaves the
status as it is. A v2 worker also states its status itself (``PUT /worker``); that word wins
over the table (:func:`reported_status`), except on an archived session.

Whether a worker is *connected* (``session_update.worker.connected``, S2 ``worker.connected``)
is a rule of its own: :func:`worker_connected`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from tether.protocol import messages as m

__all__ = [
    "STATUSES",
    "TRANSITIONS",
    "WORKER_STATUSES",
    "Cue",
    "PresenceStatus",
    "SessionStatus",
    "WorkerStatus",
    "inbound_cue",
    "next_status",
    "outbound_cue",
    "presence_on_heartbeat",
    "presence_on_report",
    "reported_status",
    "settled_cue",
    "worker_connected",
]

SessionStatus = Literal["idle", "running", "requires_action", "archived"]
WorkerStatus = Literal["idle", "running", "requires_action"]
Cue = Literal["prompt", "agent_output", "permission_asked", "permissions_settled", "turn_ended",
              "worker_gone", "archived"]

STATUSES: Final[frozenset[str]] = frozenset({"idle", "running", "requires_action", "archived"})
WORKER_STATUSES: Final[tuple[WorkerStatus, ...]] = ("idle", "running", "requires_action")

TRANSITIONS: Final[Mapping[tuple[SessionStatus, Cue], SessionStatus]] = {
    ("idle", "prompt"): "running",
    ("requires_action", "prompt"): "running",  # docs/protocol.md §4.2: a delivered prompt → running
    ("idle", "agent_output"): "running",
    ("idle", "permission_asked"): "requires_action",
    ("running", "permission_asked"): "requires_action",
    ("requires_action", "permissions_settled"): "running",
    ("running", "turn_ended"): "idle",
    ("requires_action", "turn_ended"): "idle",
    ("requires_action", "worker_gone"): "idle",
    ("idle", "archived"): "archived",
    ("running", "archived"): "archived",
    ("requires_action", "archived"): "archived",
}


def next_status(current: SessionStatus, cue: Cue | None) -> SessionStatus:
    """The status after ``cue`` (``None``: nothing that moves it)."""
    if cue is None:
        return current
    return TRANSITIONS.get((current, cue), current)


def inbound_cue(msg: Mapping[str, Any]) -> Cue | None:
    """The cue of a message on its way to the agent (a client's event). A ``control_response``
    settles a permission request, but only the caller knows whether it was the last open one."""
    return "prompt" if msg.get("type") == m.USER else None


def outbound_cue(msg: Mapping[str, Any]) -> Cue | None:
    """The cue of a message the agent wrote (a worker's event). A ``control_cancel_request``
    (or a local answer) settles a request: the caller knows whether it was the last one."""
    kind = msg.get("type")
    if kind in (m.ASSISTANT, m.USER):
        return "agent_output"
    if kind == m.RESULT:
        return "turn_ended"
    if kind == m.CONTROL_REQUEST and m.control_subtype(msg) == m.CAN_USE_TOOL and m.request_id_of(msg):
        return "permission_asked"
    return None


def settled_cue(pending_left: int) -> Cue | None:
    """After a permission request was answered or withdrawn: ``permissions_settled`` once none is left."""
    return "permissions_settled" if pending_left == 0 else None


def reported_status(current: SessionStatus, worker_status: WorkerStatus | None) -> SessionStatus:
    """A v2 worker's own word (``PUT /worker`` ``worker_status``) wins, unless the session is archived."""
    if worker_status is None or current == "archived":
        return current
    return worker_status


# ---- worker presence -------------------------------------------------------------------------------

PresenceStatus = Literal["idle", "running", "requires_action", "connected", "disconnected"]
"""``worker_status`` as stored: a v2 worker's last stated status, ``connected`` while a v1 worker
socket is open, ``disconnected`` after it closed or a v2 worker said it disconnects."""


def worker_connected(worker_status: str | None, last_seen: float | None, now: float, ttl_s: float) -> bool:
    """v1: a worker socket is open; v2: the worker stated its status or heartbeat within ``ttl_s``."""
    if worker_status in (None, "disconnected"):
        return False
    if worker_status == "connected":
        return True
    return last_seen is not None and now - last_seen < ttl_s


def presence_on_heartbeat(worker_status: str | None) -> str | None:
    """A v2 heartbeat from a worker that stated nothing yet (or had disconnected) makes it ``idle``;
    otherwise its stated status stands (None: no change)."""
    return "idle" if worker_status in (None, "disconnected") else None


def presence_on_report(worker_status: str | None, stated: WorkerStatus | None, disconnecting: bool) -> str:
    """``worker_status`` after a v2 ``PUT /worker``: ``disconnected`` when it says so, else the
    status it states, else ``idle`` for a worker that had none, else what it was."""
    if disconnecting:
        return "disconnected"
    if stated is not None:
        return stated
    if worker_status in (None, "disconnected"):
        return "idle"
    return worker_status
