"""How long an event loop was blocked: the decisions of the loop-stall monitor (pure, clock passed in).

The monitor wakes every ``interval`` seconds; a wake-up later than planned means the loop
was busy (or blocked) meanwhile. On a loaded machine a thread can also be late because the
OS did not schedule it although it was ready to run: that time (the kernel's run-queue wait
of the loop's thread, ``/proc/self/task/<tid>/schedstat``) is not the server's doing and is
subtracted. What remains — running Python, waiting on the GIL, a blocking system call — is
the stall the server caused.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LagMeter",
    "Stall",
]


@dataclass(frozen=True)
class Stall:
    """One late wake-up above the threshold."""

    at: float  # when it was noticed (the caller's clock)
    late_s: float  # how much later than planned the loop woke up
    runnable_s: float  # of that, time the OS kept the ready thread waiting for a CPU
    stall_s: float  # late_s - runnable_s: the server's own share


class LagMeter:
    """Feed it each wake-up; it keeps the worst stall and says which ones cross ``threshold_s``."""

    def __init__(self, interval_s: float, threshold_s: float) -> None:
        if interval_s <= 0 or threshold_s <= 0:
            raise ValueError("interval and threshold must be positive")
        self.interval_s = interval_s
        self.threshold_s = threshold_s
        self.worst_s = 0.0
        self.worst_late_s = 0.0
        self.stalls = 0
        self._due: float | None = None
        self._runnable = 0.0

    def arm(self, now: float, runnable_total_s: float) -> float:
        """Plan the next wake-up; returns when it is due."""
        self._due = now + self.interval_s
        self._runnable = runnable_total_s
        return self._due

    def woke(self, now: float, runnable_total_s: float) -> Stall | None:
        """Account a wake-up planned by :meth:`arm` (then arm again); a stall above the threshold is returned."""
        if self._due is None:
            raise RuntimeError("woke() before arm()")
        late = max(0.0, now - self._due)
        runnable = min(late, max(0.0, runnable_total_s - self._runnable))
        own = late - runnable
        self._due = None
        self.worst_late_s = max(self.worst_late_s, late)
        self.worst_s = max(self.worst_s, own)
        if own <= self.threshold_s:
            return None
        self.stalls += 1
        return Stall(at=now, late_s=late, runnable_s=runnable, stall_s=own)
