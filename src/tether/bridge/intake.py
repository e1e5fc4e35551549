"""The standalone bridge's poll loop and what it does with each work item (docs/protocol.md §11.2, §7.4, §11.4).

:meth:`Intake.poll_loop` long-polls for work (E2) at the interval
:func:`~tether.protocol.bridge_policy.plan_next_poll` gives (at capacity it waits for a session to
end, a re-dispatch it asked for, or the at-capacity liveness poll); a failed poll backs off on one
of the two tracks of :class:`~tether.protocol.bridge_policy.PollBackoff` (with sleep detection) and
gives up after 10 minutes; the budget is the bridge's one :class:`~tether.bridge.reconnecting.Reconnecting`,
which the start shares. Each item goes through the pure
:func:`~tether.protocol.work_intake.classify_work`; :meth:`Intake.take` applies the decision:
acknowledge (E3), start the session (:class:`~tether.bridge.hosting.Hosting`), hand a re-dispatch's
fresh token to the running session, hold it until a session ends, or release it.
"""

from __future__ import annotations

import logging

from tether.bridge.aio import wait_event
from tether.bridge.context import BridgeContext, ServerCalls
from tether.bridge.hosting import Hosting
from tether.bridge.maintenance import Maintenance
from tether.bridge.reconnecting import Reconnecting
from tether.bridge.spawner import SessionRecord
from tether.bridge.status import shown_id
from tether.client.api import WorkItem
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, ProtocolError
from tether.protocol.bridge_policy import ErrorKind, plan_next_poll
from tether.protocol.work_intake import IntakeView, WorkDecision, classify_work

__all__ = ["Intake", "fatal_poll_message"]

log = logging.getLogger("tether.bridge")


class Intake:
    def __init__(self, ctx: BridgeContext, calls: ServerCalls, hosting: Hosting, maintenance: Maintenance,
                 reconnecting: Reconnecting) -> None:
        self._ctx = ctx
        self._calls = calls
        self._hosting = hosting
        self._maintenance = maintenance
        self.held: dict[str, WorkItem] = {}
        """Work id → an item that came at capacity (not acknowledged), in arrival order."""
        self._reconnecting = reconnecting
        self.polls = 0

    # ---- the poll loop ----------------------------------------------------------------------------

    async def poll_loop(self) -> None:
        ctx = self._ctx
        assert ctx.environment_id is not None and ctx.environment_secret is not None
        poll_cfg = ctx.config.poll.config
        while True:
            ctx.wake.clear()  # before looking at the capacity: a change after this wakes us
            if not await self._ready_to_poll():
                continue
            started = ctx.clock()
            try:
                work = await ctx.api.poll_for_work(ctx.environment_id, ctx.environment_secret,
                                                   reclaim_older_than_ms=poll_cfg.reclaim_older_than_ms)
            except BridgeFatalError as exc:
                # 401: the poll's environment secret was replaced by another bridge's registration
                ctx.fail(fatal_poll_message(exc, ctx.environment_id), superseded=exc.status == 401)
                return
            except ApiUnavailable as exc:
                if not await self._backoff_wait("connection", exc.message, None):
                    return
                continue
            except (ApiError, ProtocolError) as exc:
                if not await self._backoff_wait("general", exc.message, getattr(exc, "retry_after", None)):
                    return
                continue
            new_work = await self._polled(work)
            plan = plan_next_poll(poll_cfg, active=ctx.active_count, max_sessions=ctx.max_sessions,
                                  multi_session=ctx.options.multi_session, got_work=new_work,
                                  poll_duration=ctx.clock() - started)
            if plan.state != "full" and plan.delay:
                await ctx.sleep(plan.delay)

    async def _ready_to_poll(self) -> bool:
        """False when the loop should look again first: at capacity it waits for a wake (a session
        ended, a fresh token is on its way) or the at-capacity interval (then one liveness poll);
        held items start as soon as there is room (they are ours, already delivered)."""
        ctx = self._ctx
        active = ctx.active_count
        if active >= ctx.max_sessions and not ctx.awaiting_redispatch:
            plan = plan_next_poll(ctx.config.poll.config, active=active, max_sessions=ctx.max_sessions,
                                  multi_session=ctx.options.multi_session)
            ctx.idle_state()
            return not await wait_event(ctx.wake, plan.delay)
        if self.held and active < ctx.max_sessions:
            await self._start_held()
            return False
        return True

    async def _polled(self, work: WorkItem | None) -> bool:
        """A poll answered; True when it brought something new (poll again at once)."""
        ctx = self._ctx
        self.polls += 1
        self._reconnecting.succeeded()
        ctx.idle_state()
        if work is None:
            ctx.awaiting_redispatch.clear()  # E7 queues before it answers: nothing more is coming
            return False
        return await self.take(work)

    async def _backoff_wait(self, kind: ErrorKind, message: str, retry_after: float | None) -> bool:
        """Record a failed poll and wait before the next one; False when the budget ran out."""
        decision = await self._reconnecting.wait(kind, message, retry_after, event="poll_error", doing="Poll")
        if decision.delay is None:
            self._ctx.fail(f"Gave up reaching the server after {decision.elapsed:.0f} s: {message}", resumable=True)
            return False
        return True

    # ---- work items -------------------------------------------------------------------------------

    def view(self) -> IntakeView:
        ctx = self._ctx
        return IntakeView(hosted={key: rec.work_id for key, rec in ctx.sessions.items()},
                          completed=ctx.completed_work, held=self.held, closing=ctx.closing,
                          max_sessions=ctx.max_sessions, spawn_mode=ctx.spawn_mode,
                          workspaces=ctx.options.workspaces is not None, initial_session=ctx.initial_session_id)

    async def take(self, work: WorkItem) -> bool:
        """Act on a polled item; False when it was nothing new."""
        decision = classify_work(work, self.view())
        await self._apply(work, decision)
        return decision.new_work

    async def _apply(self, work: WorkItem, decision: WorkDecision) -> None:
        ctx = self._ctx
        match decision.action:
            case "ignore":
                pass
            case "reject":
                what = (f"has a bad secret ({decision.detail})" if decision.reason == "bad_secret"
                        else "names an invalid session id")
                ctx.sink.event("work_rejected", f"Work {work.id} {what}; releasing it.", work_id=work.id)
                await self._calls.release(work.id)
            case "ack":
                if decision.reason == "unknown_type":
                    log.info("ignoring work %s of unknown type %r", work.id, work.data_type)
                await self._calls.ack(work.id, decision.token)
            case "adopt":
                assert decision.session_key is not None
                await self._adopt(ctx.sessions[decision.session_key], work, decision.token)
            case "hold":
                self.held[work.id] = work
                ctx.sink.event("work_held", f"At capacity ({ctx.max_sessions}); session {shown_id(work.data_id)} "
                               "starts when one ends.", work_id=work.id, session_id=work.data_id)
            case "leave":
                log.info("at capacity with %d items held: work %s is left for the server to deliver again",
                         len(self.held), work.id)
            case "spawn":
                assert decision.secret is not None and decision.placement is not None
                if await self._calls.ack(work.id, decision.token):
                    await self._hosting.spawn(work, decision.secret, decision.placement, initial=decision.initial)

    async def _adopt(self, rec: SessionRecord, work: WorkItem, token: str) -> None:
        """A re-dispatch of a session we host: a token update, never a second agent (docs/flows.md §5)."""
        rec.work_id, rec.token = work.id, token
        rec.host.set_token(token)
        self._ctx.awaiting_redispatch.discard(rec.key)
        self._maintenance.schedule_refresh(rec)
        await self._calls.ack(work.id, token)
        self._ctx.sink.event("token_refreshed", f"Session {shown_id(rec.session_id)} has a fresh token "
                             f"(work {work.id}).", session_id=rec.session_id, work_id=work.id)

    async def _start_held(self) -> None:
        """Held items, oldest first, while there is room: each is weighed again as it is now (its
        session may have started meanwhile under another item: then it is a re-dispatch)."""
        ctx = self._ctx
        while self.held and ctx.active_count < ctx.max_sessions:
            work = self.held.pop(next(iter(self.held)))
            await self._apply(work, classify_work(work, self.view()))


def fatal_poll_message(exc: BridgeFatalError, environment_id: str | None) -> str:
    if exc.status == 401:  # the poll's credential is the environment secret, not the login
        # (not exc.message: its advice to run `tether login` is for a login, and the login is fine)
        return ("The server no longer accepts this bridge's environment secret: environment "
                f"{environment_id} was registered again by another bridge (e.g. `tether remote-control "
                "--continue` elsewhere), or the server's data was reset. Your login is not the problem; start "
                "the bridge again.")
    if exc.status in (404, 410):
        return f"The environment is gone ({exc.message}). Start `tether remote-control` again."
    return exc.message
