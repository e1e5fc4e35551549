"""The standalone bridge's one connection budget (docs/protocol.md §11.4, §13).

Both the start (register, look up and ``bridge/reconnect`` a resumed session) and the poll loop
retry a server they cannot reach on the two tracks of
:class:`~tether.protocol.bridge_policy.PollBackoff`: exponential waits with jitter, sleep
detection, and a give-up after 10 minutes of failing. Sharing one :class:`Reconnecting` keeps one
outage one outage (a server that restarts while the bridge starts is not counted twice) and lets
the live display show the retry countdown whichever part is waiting.
"""

from __future__ import annotations

import asyncio

from tether.bridge.context import BridgeContext
from tether.protocol.backoff import BackoffDecision
from tether.protocol.bridge_policy import ErrorKind, PollBackoff

__all__ = ["Reconnecting"]


class Reconnecting:
    def __init__(self, ctx: BridgeContext) -> None:
        self._ctx = ctx
        self.backoff = PollBackoff()
        self.next_attempt_at: float | None = None
        """When the next attempt is due while reconnecting (the clock's time)."""

    def succeeded(self) -> bool:
        """A call got through; True when that ends an outage (says so)."""
        ctx = self._ctx
        self.next_attempt_at = None
        if self.backoff.success(ctx.clock()):
            ctx.sink.event("reconnected", "Reconnected to the server.", environment_id=ctx.environment_id)
            return True
        return False

    async def wait(self, kind: ErrorKind, message: str, retry_after: float | None, *,
                   event: str, doing: str) -> BackoffDecision:
        """Record a failed call and wait before the next attempt (the wait ends early when the bridge
        is asked to stop). The decision's ``delay`` is None when the budget ran out; then nothing was
        waited for and the caller gives up."""
        ctx = self._ctx
        now = ctx.clock()
        decision = self.backoff.failure(kind, now, ctx.rnd, retry_after)
        if decision.slept:
            ctx.sink.event("sleep_detected", "Long gap since the last error (the machine slept?); "
                           "the retry budget starts over.", kind=kind)
        if decision.delay is None:
            return decision
        ctx.set_state("reconnecting")
        self.next_attempt_at = now + decision.delay
        ctx.sink.event(event, f"{doing} failed ({message}); retrying in {decision.delay:.1f} s.",
                       kind=kind, attempt=decision.attempt, delay=round(decision.delay, 3),
                       elapsed=round(decision.elapsed, 3), slept=decision.slept)
        await self._sleep_unless_stopping(decision.delay)
        return decision

    async def _sleep_unless_stopping(self, delay: float) -> None:
        ctx = self._ctx
        if ctx.shutdown.is_set():
            return

        async def nap_for() -> None:
            await ctx.sleep(delay)

        async with asyncio.TaskGroup() as tg:
            nap = tg.create_task(nap_for(), name="retry wait")
            stop = tg.create_task(ctx.shutdown.wait(), name="retry wait (stop)")
            await asyncio.wait((nap, stop), return_when=asyncio.FIRST_COMPLETED)
            nap.cancel()
            stop.cancel()
