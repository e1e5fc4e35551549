"""What the bridge shows: its state, a snapshot for the live display, and the event sink.

The bridge loop reports through an :class:`EventSink` (``event(name, message, **fields)``);
:mod:`tether.bridge.display` has three of them (the live rich display, plain log lines, JSON
lines). :class:`BridgeSnapshot` is what the live display renders every second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from tether.protocol.ids import to_compat_session_id

BridgeState = Literal["connecting", "ready", "connected", "reconnecting", "failed", "stopping"]
STATE_LABELS: Final[dict[str, str]] = {
    "connecting": "Connecting",
    "ready": "Ready",
    "connected": "Connected",
    "reconnecting": "Reconnecting",
    "failed": "Failed",
    "stopping": "Stopping",
}


def connect_url(server: str, environment_id: str | None) -> str:
    """Where a person finds this bridge in the web client."""
    base = f"{server.rstrip('/')}/code"
    return f"{base}?bridge={environment_id}" if environment_id else base


def session_url(server: str, session_id: str) -> str:
    return f"{server.rstrip('/')}/code/{shown_id(session_id)}"


def shown_id(session_id: str) -> str:
    """The one costume of a session id a person sees: ``session_…``, as in its web URL (the
    ``cse_…`` of v2 work is the same session)."""
    return to_compat_session_id(session_id)


@dataclass(frozen=True)
class SessionView:
    session_id: str
    url: str
    title: str
    activity: str | None
    state: str
    started_at: float
    cwd: str
    worktree: str | None = None
    pid: int | None = None


@dataclass(frozen=True)
class BridgeSnapshot:
    state: BridgeState
    server: str
    environment_id: str | None
    connect_url: str
    spawn_mode: str
    max_sessions: int
    sessions: tuple[SessionView, ...] = ()
    retry_in: float | None = None
    disconnected_for: float | None = None
    failure: str | None = None
    worktree_available: bool = False
    directory: str = ""

    @property
    def active(self) -> int:
        return len(self.sessions)

    @property
    def multi_session(self) -> bool:
        return self.spawn_mode != "session"

    @property
    def web_url(self) -> str:
        """The page the footer and the QR code point at: the session of a single-session bridge,
        else this machine in the session list."""
        return self.sessions[0].url if (self.sessions and not self.multi_session) else self.connect_url


class EventSink(Protocol):
    def event(self, name: str, message: str, /, **fields: Any) -> None:
        """One thing that happened: ``name`` for machines, ``message`` for people."""


class NullSink:
    def event(self, name: str, message: str, /, **fields: Any) -> None:
        pass


class RecordingSink:
    """Keeps every event (tests)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def event(self, name: str, message: str, /, **fields: Any) -> None:
        self.events.append((name, message, fields))

    def names(self) -> list[str]:
        return [e[0] for e in self.events]
