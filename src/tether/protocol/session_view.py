"""How a client lists sessions and finds the one a person means. Pure.

:func:`session_state` turns a session resource (docs/protocol.md §4.2: ``session_status``,
``worker``, ``environment.online``) into the honest one-line state `tether sessions` shows:

======================  =====================================================================
``archived``            the session ended
``offline``             its machine's bridge stopped polling (nothing will run until it is back)
``waiting for you``     a permission request is open (``requires_action``)
``running``             a turn is in progress
``worker connected``    idle, and an agent process is attached, ready for a prompt
``idle``                idle, no agent process yet (one starts on the next prompt)
======================  =====================================================================

:func:`resolve_session_ref` finds a session by id in either costume (``session_…`` /
``cse_…``, compared by body), or by a unique prefix of its title (case-insensitive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tether.protocol.ids import same_session_id, session_body

__all__ = [
    "Ambiguous",
    "Found",
    "NoMatch",
    "Resolution",
    "SessionStateName",
    "format_ago",
    "resolve_session_ref",
    "session_state",
]

SessionStateName = Literal["archived", "offline", "waiting for you", "running", "worker connected", "idle"]


def session_state(session: Mapping[str, Any]) -> SessionStateName:
    status = session.get("session_status")
    if status == "archived":
        return "archived"
    environment = session.get("environment")
    if isinstance(environment, Mapping) and environment.get("online") is False:
        return "offline"
    if status == "requires_action":
        return "waiting for you"
    if status == "running":
        return "running"
    worker = session.get("worker")
    if isinstance(worker, Mapping) and worker.get("connected") is True:
        return "worker connected"
    return "idle"


@dataclass(frozen=True)
class Found:
    session: Mapping[str, Any]


@dataclass(frozen=True)
class Ambiguous:
    candidates: list[Mapping[str, Any]]


@dataclass(frozen=True)
class NoMatch:
    ref: str


Resolution = Found | Ambiguous | NoMatch


def resolve_session_ref(ref: str, sessions: Sequence[Mapping[str, Any]]) -> Resolution:
    """An id (either costume) wins; otherwise the sessions whose title starts with ``ref``."""
    ref = ref.strip()
    if not ref:
        return NoMatch(ref)
    if session_body(ref) is not None:
        for session in sessions:
            sid = session.get("id")
            if isinstance(sid, str) and same_session_id(sid, ref):
                return Found(session)
    folded = ref.casefold()
    matches = [s for s in sessions if isinstance(s.get("title"), str) and s["title"].casefold().startswith(folded)]
    exact = [s for s in matches if s["title"].casefold() == folded]
    if len(exact) == 1:
        return Found(exact[0])
    if len(matches) == 1:
        return Found(matches[0])
    if matches:
        return Ambiguous(matches)
    return NoMatch(ref)


def format_ago(seconds: float) -> str:
    """``just now``, ``42s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"
