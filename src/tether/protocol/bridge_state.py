"""The REPL bridge's state as a person sees it (docs/protocol.md §12.10). Pure; time is passed in.

States: ``connecting`` (before the core is up), ``ready`` (registered, session created, no
transport yet), ``connected`` (transport up and history flushed), ``reconnecting`` (transport
lost, lease expired, token refresh …), ``failed`` (a fatal error or a give-up; ``detail`` says
why). A failed bridge switches itself off ``auto_disable_after`` seconds later (10 s), and
after three failed starts in a row (:class:`InitFailures`) the process stops trying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "AUTO_DISABLE_AFTER_S",
    "BRIDGE_STATES",
    "MAX_INIT_FAILURES",
    "BridgeState",
    "BridgeStatus",
    "InitFailures",
]

BridgeState = Literal["connecting", "ready", "connected", "reconnecting", "failed"]
BRIDGE_STATES: Final[tuple[BridgeState, ...]] = ("connecting", "ready", "connected", "reconnecting", "failed")
AUTO_DISABLE_AFTER_S: Final = 10.0
MAX_INIT_FAILURES: Final = 3


@dataclass
class BridgeStatus:
    """The current state, its detail and when it was entered; :meth:`footer_label` is the text
    of the footer (failed → reconnecting → active → connecting…, in that precedence)."""

    state: BridgeState = "connecting"
    detail: str | None = None
    since: float = 0.0
    auto_disable_after: float = AUTO_DISABLE_AFTER_S

    def update(self, state: BridgeState, detail: str | None, now: float) -> bool:
        """Enter ``state``; False when nothing changed. ``failed`` is final: only a new bridge
        (a new :class:`BridgeStatus`) leaves it."""
        if self.state == "failed" and state != "failed":
            return False
        if state == self.state and detail == self.detail:
            return False
        if state != self.state:
            self.since = now
        self.state, self.detail = state, detail
        return True

    @property
    def active(self) -> bool:
        return self.state in ("ready", "connected")

    def footer_label(self) -> str:
        if self.state == "failed":
            return "Remote Control failed"
        if self.state == "reconnecting":
            return "Remote Control reconnecting"
        if self.active:
            return "Remote Control active"
        return "Remote Control connecting…"

    def auto_disable_at(self) -> float | None:
        """When a failed bridge switches itself off (None unless failed)."""
        return self.since + self.auto_disable_after if self.state == "failed" else None

    def should_disable(self, now: float) -> bool:
        due = self.auto_disable_at()
        return due is not None and now >= due


@dataclass
class InitFailures:
    """Consecutive failed starts; after ``limit`` of them remote control stays off for the rest
    of the process ("disabled after repeated failures · restart to retry")."""

    limit: int = MAX_INIT_FAILURES
    count: int = 0
    last_reason: str | None = None

    @property
    def disabled(self) -> bool:
        return self.count >= self.limit

    def failed(self, reason: str) -> bool:
        """Record one failed start; True when this one disables remote control."""
        self.count += 1
        self.last_reason = reason
        return self.disabled

    def succeeded(self) -> None:
        self.count = 0
        self.last_reason = None

    def message(self) -> str:
        why = f" (last: {self.last_reason})" if self.last_reason else ""
        return f"Remote Control disabled after {self.count} failed attempts{why} · restart tether to retry"
