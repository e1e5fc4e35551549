"""Which server instances are alive, and whose v1 workers an instance may mark gone (pure).

A v1 worker socket lives in one server process; the session row records which instance holds it
(``worker_instance``). Each instance beats a heartbeat row every ``heartbeat_s``; one not heard of
for ``missed_beats`` beats is gone (it crashed, or stopped without saying so). An instance marks
disconnected only the v1 workers it holds itself, those of instances that are gone, and those of
no known instance (rows written before instances were recorded) — never those another live
instance holds (docs/protocol.md §4.4).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["MISSED_BEATS", "InstanceLiveness", "may_release"]

MISSED_BEATS = 3


@dataclass(frozen=True)
class InstanceLiveness:
    heartbeat_s: float
    missed_beats: int = MISSED_BEATS

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0 or self.missed_beats < 1:
            raise ValueError("the heartbeat interval and the beats an instance may miss must be positive")

    @property
    def ttl(self) -> float:
        return self.heartbeat_s * self.missed_beats

    def alive_since(self, now: float) -> float:
        """Instances whose last beat is at or after this are alive."""
        return now - self.ttl

    def alive(self, last_seen: float | None, now: float) -> bool:
        return last_seen is not None and last_seen >= self.alive_since(now)


def may_release(owner: str | None, me: str, alive: Collection[str], *, starting: bool) -> bool:
    """Whether instance ``me`` may mark a v1 worker recorded as held by ``owner`` disconnected:
    a worker of no known instance or of one that is gone, yes; its own only when starting (what
    it held before a restart died with the old process; while it runs, its socket's close does it)."""
    if owner is None:
        return True
    if owner == me:
        return starting
    return owner not in alive
