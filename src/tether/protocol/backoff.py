"""Retry budgets: exponential delay, jitter, give-up, sleep detection, Retry-After.

Sans-I/O: :class:`Backoff` never reads a clock or a global random generator. The
caller passes ``now`` (monotonic float seconds) and a random source to every call
and sleeps for the returned delay itself, so tests drive time by hand.

Delay of failure ``n`` (1-based, counted since the last success or reset)::

    d = min(base * 2 ** (n - 1), cap)            # or clamp(retry_after, base, cap)
    d = d * (1 + jitter_fraction * (2 r1 - 1))   # symmetric jitter, ±fraction
    d = d + additive_jitter * r2                  # additive jitter, [0, additive)

with ``r1, r2`` in [0, 1). A streak gives up once ``now - first failure`` reaches
``give_up_after`` or the failure count exceeds ``max_attempts``. If more than
``sleep_threshold`` seconds passed since the previous failure, the machine was most
likely suspended: the streak restarts instead of counting the nap against the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, Protocol

__all__ = [
    "TEN_MINUTES",
    "Backoff",
    "BackoffDecision",
    "DecisionReason",
    "RandomSource",
    "SupportsRandom",
    "bridge_connection",
    "bridge_general",
    "ccr_uploader",
    "hybrid_post",
    "sse_reconnect",
    "subscribe_reconnect",
    "ws_reconnect",
]

_MAX_EXPONENT: Final = 62  # 2**62 dwarfs any cap; avoids float overflow on huge streaks


class SupportsRandom(Protocol):
    """Anything with ``random() -> float`` in [0, 1), e.g. :class:`random.Random`."""

    def random(self) -> float: ...


RandomSource = SupportsRandom | float
"""A ``random.Random``-like object, or one float in [0, 1) used for every draw."""

DecisionReason = Literal["backoff", "retry_after", "gave_up_budget", "gave_up_attempts"]


@dataclass(frozen=True)
class BackoffDecision:
    """What to do after a failure: wait ``delay`` seconds, or give up (``delay is None``)."""

    delay: float | None
    reason: DecisionReason
    attempt: int
    """1-based failure count of the current streak."""
    elapsed: float
    """Seconds since the first failure of the streak."""
    slept: bool = False
    """True when sleep detection restarted the streak at this failure."""

    @property
    def give_up(self) -> bool:
        return self.delay is None


def _draw(rnd: RandomSource) -> float:
    value = rnd if isinstance(rnd, float | int) else rnd.random()
    if not 0.0 <= value < 1.0:
        raise ValueError(f"random source must yield a float in [0, 1), got {value!r}")
    return float(value)


class Backoff:
    """One retry track. Call :meth:`failure` after each failed attempt, :meth:`success` after one that worked."""

    def __init__(
        self,
        base: float,
        cap: float,
        jitter_fraction: float = 0.0,
        give_up_after: float | None = None,
        sleep_threshold: float | None = None,
        *,
        additive_jitter: float = 0.0,
        max_attempts: int | None = None,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        if not 0.0 <= jitter_fraction < 1.0:
            raise ValueError(f"jitter_fraction must be in [0, 1), got {jitter_fraction}")
        if additive_jitter < 0:
            raise ValueError(f"additive_jitter must be >= 0, got {additive_jitter}")
        if give_up_after is not None and give_up_after <= 0:
            raise ValueError(f"give_up_after must be > 0, got {give_up_after}")
        if sleep_threshold is not None and sleep_threshold <= 0:
            raise ValueError(f"sleep_threshold must be > 0, got {sleep_threshold}")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.base = base
        self.cap = cap
        self.jitter_fraction = jitter_fraction
        self.additive_jitter = additive_jitter
        self.give_up_after = give_up_after
        self.sleep_threshold = sleep_threshold
        self.max_attempts = max_attempts
        self._attempts = 0
        self._first_failure_at: float | None = None
        self._last_failure_at: float | None = None

    # -- state ---------------------------------------------------------------

    @property
    def attempts(self) -> int:
        """Failures in the current streak (0 after a success or reset)."""
        return self._attempts

    @property
    def failing_since(self) -> float | None:
        return self._first_failure_at

    @property
    def min_delay(self) -> float:
        """Smallest delay :meth:`failure` can return."""
        return self.base * (1 - self.jitter_fraction)

    @property
    def max_delay(self) -> float:
        """Largest delay :meth:`failure` can return (may exceed ``cap`` by the jitter)."""
        return self.cap * (1 + self.jitter_fraction) + self.additive_jitter

    def reset(self) -> None:
        """Forget the streak (also used to reset a sibling track, docs/protocol.md §11.4)."""
        self._attempts = 0
        self._first_failure_at = None
        self._last_failure_at = None

    def success(self, now: float) -> None:
        """An attempt worked at ``now``: the next failure starts a fresh streak."""
        del now  # accepted for symmetry with failure(); a success needs no timestamp
        self.reset()

    # -- decisions -----------------------------------------------------------

    def failure(self, now: float, rnd: RandomSource, retry_after: float | None = None) -> BackoffDecision:
        """Record a failure at ``now`` and decide the next delay.

        ``retry_after`` (a server's Retry-After, in seconds) replaces the exponential
        delay, clamped to ``[base, cap]``, and is still jittered; a non-finite value is ignored.
        """
        slept = (
            self.sleep_threshold is not None
            and self._last_failure_at is not None
            and now - self._last_failure_at > self.sleep_threshold
        )
        if slept:
            self.reset()
        if self._first_failure_at is None:
            self._first_failure_at = now
        self._attempts += 1
        self._last_failure_at = now
        attempt, elapsed = self._attempts, max(0.0, now - self._first_failure_at)

        if self.give_up_after is not None and elapsed >= self.give_up_after:
            return BackoffDecision(None, "gave_up_budget", attempt, elapsed, slept)
        if self.max_attempts is not None and attempt > self.max_attempts:
            return BackoffDecision(None, "gave_up_attempts", attempt, elapsed, slept)

        reason: DecisionReason
        if retry_after is not None and math.isfinite(retry_after):
            delay, reason = min(max(retry_after, self.base), self.cap), "retry_after"
        else:
            exponent = min(attempt - 1, _MAX_EXPONENT)
            delay, reason = min(self.base * 2.0**exponent, self.cap), "backoff"
        if self.jitter_fraction:
            delay *= 1 + self.jitter_fraction * (2 * _draw(rnd) - 1)
        if self.additive_jitter:
            delay += self.additive_jitter * _draw(rnd)
        return BackoffDecision(delay, reason, attempt, elapsed, slept)


# --- presets (docs/protocol.md §8.1, §8.2, §8.3, §10, §11.4) ---------------------------------

TEN_MINUTES: Final = 600.0


def ws_reconnect() -> Backoff:
    """Session-ingress WebSocket: 1 s → 30 s ±25 %, give up after 10 min, 60 s sleep detection."""
    return Backoff(1.0, 30.0, 0.25, TEN_MINUTES, 60.0)


def sse_reconnect() -> Backoff:
    """CCR v2 SSE read stream: same numbers as the WebSocket."""
    return Backoff(1.0, 30.0, 0.25, TEN_MINUTES, 60.0)


def hybrid_post() -> Backoff:
    """Hybrid POST writes: 500 ms × 2^(n-1) capped at 8 s, + [0, 1 s) jitter, never gives up.

    The REPL bridge's 50-failure cap is a caller choice: pass ``max_attempts`` to
    :class:`Backoff` directly when it is wanted.
    """
    return Backoff(0.5, 8.0, additive_jitter=1.0)


def ccr_uploader() -> Backoff:
    """CCR v2 event uploader: 500 ms → 30 s, + [0, 500 ms) jitter, never gives up."""
    return Backoff(0.5, 30.0, additive_jitter=0.5)


def bridge_connection() -> Backoff:
    """Standalone bridge poll, connection/5xx errors: 2 s → 120 s ±25 %, 10 min give-up.

    Sleep detection: a gap > 2 × cap (240 s) since the previous poll error. The
    reference then resets *both* tracks; the caller resets the sibling with
    :meth:`Backoff.reset` when a decision has ``slept``.
    """
    return Backoff(2.0, 120.0, 0.25, TEN_MINUTES, 240.0)


def bridge_general() -> Backoff:
    """Standalone bridge poll, other errors: 500 ms → 30 s ±25 %, 10 min give-up, 240 s sleep detection."""
    return Backoff(0.5, 30.0, 0.25, TEN_MINUTES, 240.0)


def subscribe_reconnect() -> Backoff:
    """Remote-client subscribe socket: a fixed 2 s delay, at most 5 attempts (docs/protocol.md §8.4)."""
    return Backoff(2.0, 2.0, max_attempts=5)
