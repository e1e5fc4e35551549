"""Socket liveness and reconnect decisions for the session-ingress WebSocket (docs/protocol.md §8.1, §8.5).

Sans-I/O: every call takes ``now`` (seconds, from a clock that keeps counting while the
machine sleeps) and, where jitter is involved, a random source.

:class:`PingLiveness` is driven by a timer every ``interval`` seconds (10 s):

* ``"ping"``  — send a ping; its pong must arrive before the next tick;
* ``"dead"``  — the previous ping got no pong: drop the connection and reconnect;
* ``"slept"`` — the timer fired more than ``sleep_threshold`` (60 s) late: the process was
  suspended, the socket is most likely a zombie: reconnect.

:class:`ReconnectPolicy` decides after each close or failed connect: reconnect after a
delay (1 s → 30 s ±25 %, :func:`tether.protocol.backoff.ws_reconnect`), or stop for good:
a permanent close code (1002, 4001, 4003 — but 4003 is retried once the token changed),
or 10 minutes of continuous failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal

from tether.protocol.backoff import Backoff, RandomSource, ws_reconnect

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_SESSION_NOT_FOUND",
    "CLOSE_UNAUTHORIZED",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_SLEEP_THRESHOLD",
    "PERMANENT_CLOSE_CODES",
    "PingLiveness",
    "PingVerdict",
    "ReconnectBudget",
    "ReconnectDecision",
    "ReconnectPolicy",
    "ReconnectReason",
    "is_permanent_close",
]

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_ABNORMAL: Final = 1006
CLOSE_SESSION_NOT_FOUND: Final = 4001
CLOSE_UNAUTHORIZED: Final = 4003

PERMANENT_CLOSE_CODES: Final[frozenset[int]] = frozenset(
    {CLOSE_PROTOCOL_ERROR, CLOSE_SESSION_NOT_FOUND, CLOSE_UNAUTHORIZED}
)

DEFAULT_PING_INTERVAL: Final = 10.0
DEFAULT_SLEEP_THRESHOLD: Final = 60.0

PingVerdict = Literal["ping", "dead", "slept"]


class PingLiveness:
    """Ping/pong bookkeeping for one connection at a time (call :meth:`start` on each open)."""

    __slots__ = ("_awaiting", "_interval", "_last_tick", "_pinged_at", "_sleep_threshold", "rtt")

    def __init__(
        self, interval: float = DEFAULT_PING_INTERVAL, sleep_threshold: float = DEFAULT_SLEEP_THRESHOLD
    ) -> None:
        if interval <= 0 or sleep_threshold <= 0:
            raise ValueError("interval and sleep_threshold must be > 0")
        self._interval = interval
        self._sleep_threshold = sleep_threshold
        self._last_tick: float | None = None
        self._awaiting = False
        self._pinged_at: float | None = None
        self.rtt: float | None = None

    @property
    def awaiting_pong(self) -> bool:
        return self._awaiting

    def start(self, now: float) -> None:
        """A connection opened at ``now``: no ping is outstanding."""
        self._last_tick = now
        self._awaiting = False
        self._pinged_at = None

    def next_tick(self) -> float:
        """When the timer should next call :meth:`tick`."""
        if self._last_tick is None:
            raise RuntimeError("start() was not called")
        return self._last_tick + self._interval

    def tick(self, now: float) -> PingVerdict:
        if self._last_tick is None:
            raise RuntimeError("start() was not called")
        gap = now - self._last_tick
        self._last_tick = now
        if gap > self._sleep_threshold:
            self._awaiting = False
            return "slept"
        if self._awaiting:
            return "dead"
        self._awaiting = True
        self._pinged_at = now
        return "ping"

    def pong(self, now: float) -> None:
        """The pong of the outstanding ping arrived (with none outstanding it measures nothing)."""
        if self._pinged_at is not None:
            self.rtt = max(0.0, now - self._pinged_at)
        self._awaiting = False


ReconnectReason = Literal["backoff", "permanent", "gave_up"]


@dataclass(frozen=True)
class ReconnectDecision:
    """Reconnect after ``delay`` seconds, or stop (``delay is None``) for ``reason``."""

    delay: float | None
    reason: ReconnectReason
    code: int | None
    attempt: int = 0
    slept: bool = False

    @property
    def give_up(self) -> bool:
        return self.delay is None


def is_permanent_close(code: int | None, *, token_changed: bool = False) -> bool:
    """True when a close with ``code`` must not be retried (docs/protocol.md §8.1)."""
    if code not in PERMANENT_CLOSE_CODES:
        return False
    return not (code == CLOSE_UNAUTHORIZED and token_changed)


class ReconnectBudget(ABC):
    """A reconnect budget across connections: what counts as permanent is left to subclasses.

    The WebSocket (close codes) and the SSE read stream (HTTP statuses) share the same
    failure-streak bookkeeping and differ only in their default backoff and permanent set.
    """

    __slots__ = ("_backoff", "connects", "failures")

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff if backoff is not None else self._default_backoff()
        self.connects = 0
        self.failures = 0

    @staticmethod
    @abstractmethod
    def _default_backoff() -> Backoff:
        """Hook: the backoff used when none is passed in."""

    @staticmethod
    @abstractmethod
    def _is_permanent(code: int | None, /, *, token_changed: bool) -> bool:
        """Hook: True when a failure with ``code`` must not be retried."""

    def opened(self, now: float) -> None:
        """The connection is open: the failure streak ends."""
        self.connects += 1
        self._backoff.success(now)

    def _failed(self, code: int | None, now: float, rnd: RandomSource, token_changed: bool) -> ReconnectDecision:
        self.failures += 1
        if self._is_permanent(code, token_changed=token_changed):
            return ReconnectDecision(None, "permanent", code)
        decision = self._backoff.failure(now, rnd)
        if decision.give_up:
            return ReconnectDecision(None, "gave_up", code, decision.attempt, decision.slept)
        return ReconnectDecision(decision.delay, "backoff", code, decision.attempt, decision.slept)


class ReconnectPolicy(ReconnectBudget):
    """One socket's reconnect budget across connections."""

    __slots__ = ()

    _default_backoff = staticmethod(ws_reconnect)
    _is_permanent = staticmethod(is_permanent_close)

    def closed(
        self, code: int | None, now: float, rnd: RandomSource, *, token_changed: bool = False
    ) -> ReconnectDecision:
        """The socket closed (or failed to open) with ``code`` (None: no close frame)."""
        return self._failed(code, now, rnd, token_changed)
