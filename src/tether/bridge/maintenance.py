"""What keeps the standalone bridge's sessions alive while they run (docs/protocol.md §7.4, §11.6, §12.8).

* heartbeats of every session's work (E5), at :func:`~tether.protocol.bridge_policy.heartbeat_interval_s`;
  a heartbeat refused for its token asks for a fresh one at once;
* worker-token refresh: ``bridge/reconnect`` (E7) 5 minutes before a token's ``exp``
  (:class:`~tether.protocol.bridge_policy.RefreshSchedule`); the fresh token arrives as a
  re-dispatch, which the intake adopts;
* the hourly refresh of the crash-recovery pointer;
* each session's title, read again from the server now and then.

The per-session watchdog (``--session-timeout``) runs with the session itself
(:func:`~tether.bridge.spawner.run_session`); the poll's retry budget with the poll
(:mod:`~tether.bridge.intake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tether.bridge import pointer as pointers
from tether.bridge.aio import wait_event
from tether.bridge.context import BridgeContext
from tether.bridge.spawner import SessionRecord
from tether.bridge.status import shown_id
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, ProtocolError, TetherError
from tether.protocol.bridge_policy import RefreshSchedule, heartbeat_interval_s, jwt_expiry

__all__ = ["TITLE_REFRESH_S", "Maintenance"]

log = logging.getLogger("tether.bridge")

TITLE_REFRESH_S = 30.0  # how often a running session's title is read again from the server
REFRESH_IDLE_S = 60.0  # the refresh loop looks again at least this often


class Maintenance:
    def __init__(self, ctx: BridgeContext) -> None:
        self._ctx = ctx
        self._refresh: RefreshSchedule[str] = RefreshSchedule()
        self._refresh_changed = asyncio.Event()

    # ---- worker tokens ----------------------------------------------------------------------------

    def schedule_refresh(self, rec: SessionRecord) -> None:
        """Arm the refresh for the session's (new) token."""
        self._refresh.schedule(rec.key, jwt_expiry(rec.token), self._ctx.wall())
        self._refresh_changed.set()

    def forget(self, key: str) -> None:
        """The session ended: no more refreshes for it."""
        self._refresh.cancel(key)

    async def refresh_loop(self) -> None:
        ctx = self._ctx
        while True:
            self._refresh_changed.clear()
            for key in self._refresh.due(ctx.wall()):
                rec = ctx.sessions.get(key)
                if rec is None:
                    self._refresh.cancel(key)
                    continue
                await self._ask_for_token(rec)
            nxt = self._refresh.next_due()
            timeout = REFRESH_IDLE_S if nxt is None else min(REFRESH_IDLE_S, max(0.0, nxt - ctx.wall()))
            await wait_event(self._refresh_changed, timeout)

    async def _ask_for_token(self, rec: SessionRecord) -> None:
        """E7: the server re-dispatches the session with a fresh token (the intake adopts it)."""
        ctx, key = self._ctx, rec.key
        assert ctx.environment_id is not None
        try:
            await ctx.api.reconnect_session(ctx.environment_id, rec.session_id)
        except TetherError as exc:
            self._refresh.failed(key, ctx.wall())
            ctx.sink.event("warning", f"Token refresh for {shown_id(rec.session_id)} failed "
                           f"({exc.message}); retrying in a minute.", session_id=rec.session_id)
            return
        self._refresh.requested(key, ctx.wall())
        ctx.awaiting_redispatch.add(key)
        ctx.wake.set()
        ctx.sink.event("token_refresh", f"Asked for a fresh token for {shown_id(rec.session_id)}.",
                       session_id=rec.session_id)

    # ---- heartbeats -------------------------------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        ctx = self._ctx
        interval = heartbeat_interval_s(ctx.config.poll.config, ctx.config.lease_ttl_seconds)
        while True:
            await asyncio.sleep(interval)
            records = list(ctx.sessions.values())
            if records:
                await asyncio.gather(*(self._heartbeat(rec) for rec in records))

    async def _heartbeat(self, rec: SessionRecord) -> None:
        ctx = self._ctx
        assert ctx.environment_id is not None
        try:
            await ctx.api.heartbeat_work(ctx.environment_id, rec.work_id, rec.token)
        except BridgeFatalError as exc:
            if exc.status in (401, 403):  # the worker token expired: ask for a fresh one now
                ctx.sink.event("warning", f"Heartbeat of {shown_id(rec.session_id)} refused ({exc.message}); "
                               "asking for a fresh token.", session_id=rec.session_id)
                self._refresh.schedule(rec.key, ctx.wall(), ctx.wall())
                self._refresh_changed.set()
            else:  # superseded by a re-dispatch (the new item is on its way) or gone
                log.info("heartbeat of %s (%s): %s", rec.session_id, rec.work_id, exc.message)
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            log.info("heartbeat of %s failed: %s", rec.session_id, exc.message)

    # ---- pointer and titles -----------------------------------------------------------------------

    async def pointer_loop(self) -> None:
        o = self._ctx.options
        await pointers.keep_pointer_fresh(o.directory, o.home, lambda: self._ctx.pointer_written)

    async def title_loop(self, rec: SessionRecord) -> None:
        """The server's title wins (docs/protocol.md §12.8); read again now and then, so a rename in the
        web client reaches the terminal too."""
        while True:
            with contextlib.suppress(TetherError, ValueError):
                session = await self._ctx.api.get_session(rec.session_id)
                title = session.get("title")
                if isinstance(title, str) and title:
                    rec.server_title = title
            await asyncio.sleep(TITLE_REFRESH_S)
