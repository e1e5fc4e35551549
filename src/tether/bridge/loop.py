"""The standalone bridge: register, poll for work, host sessions, tear down in order
(``tether remote-control``; docs/protocol.md §11.1–§11.8, docs/flows.md §1, §5–§7).

:meth:`Bridge.run` is the whole life of one bridge; each part lives in its own module and shares
one :class:`~tether.bridge.context.BridgeContext`:

1. **start** (:func:`~tether.bridge.startup.start_bridge`): re-attach a resumed session's
   environment, register (E1), resume or create the directory's session, write the pointer;
2. **run**, every task in a task group owned here: the poll loop and what it does with each work
   item (:class:`~tether.bridge.intake.Intake`, deciding with the pure
   :func:`~tether.protocol.work_intake.classify_work`); heartbeats, worker-token refresh and the
   pointer refresh (:class:`~tether.bridge.maintenance.Maintenance`); the sessions, each in the
   sessions task group (:class:`~tether.bridge.hosting.Hosting`);
3. **teardown** (:class:`~tether.bridge.teardown.Teardown`, planned by
   :func:`~tether.protocol.bridge_policy.plan_teardown`): stop polling → SIGTERM the agents →
   remove worktrees → ``stopWork(force)`` → archive → deregister → clear the pointer.

The decisions (poll intervals, backoff, refresh times, what to do with a work item, teardown
order) are pure and live in :mod:`tether.protocol`; these modules own the timers, tasks and calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from tether.bridge.aio import guarded
from tether.bridge.context import BridgeContext, BridgeOptions, ServerCalls
from tether.bridge.hosting import Hosting, TransportFactory
from tether.bridge.intake import Intake
from tether.bridge.maintenance import Maintenance
from tether.bridge.reconnecting import Reconnecting
from tether.bridge.session_host import HostConfig
from tether.bridge.spawner import SessionRecord
from tether.bridge.startup import StartupError, StartupStopped, start_bridge
from tether.bridge.status import BridgeSnapshot, BridgeState, EventSink, connect_url
from tether.bridge.teardown import Teardown
from tether.client.api import ApiClient, BridgeConfig
from tether.client.ccr import CCRConfig
from tether.client.factory import make_transport
from tether.client.hybrid import HybridConfig, boot_clock
from tether.client.sse import SSEConfig
from tether.client.v2 import V2Config
from tether.protocol.bridge_policy import TOKEN_EXPIRY_GRACE_S, SpawnMode

__all__ = ["Bridge", "BridgeOptions", "TransportFactory"]

log = logging.getLogger("tether.bridge")


class Bridge:
    def __init__(self, api: ApiClient, options: BridgeOptions, config: BridgeConfig, sink: EventSink, *,
                 clock: Callable[[], float] = boot_clock, wall: Callable[[], float] = time.time,
                 rnd: random.Random | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 transport_factory: TransportFactory = make_transport, hybrid_config: HybridConfig | None = None,
                 v2_config: V2Config | None = None, host_config: HostConfig | None = None) -> None:
        self.api = api
        self.options = options
        self.config = config
        self.sink = sink
        ctx = self._ctx = BridgeContext(api, options, config, sink, clock, wall, rnd or random.Random(), sleep,
                                        spawn_mode=options.spawn_mode, max_sessions=options.max_sessions)
        calls = ServerCalls(ctx)
        self._maintenance = Maintenance(ctx)
        # The bridge rotates its workers' tokens (E7): a token that expired while the refresh could
        # not get through is waited for, not the end of the session (docs/protocol.md §9.3).
        grace = TOKEN_EXPIRY_GRACE_S
        self._hosting = Hosting(ctx, calls, self._maintenance, transport_factory=transport_factory,
                                hybrid_config=hybrid_config or HybridConfig(expired_token_grace_s=grace),
                                v2_config=v2_config or V2Config(sse=SSEConfig(expired_token_grace_s=grace),
                                                                ccr=CCRConfig(expired_token_grace_s=grace)),
                                host_config=host_config or HostConfig(term_grace=options.shutdown_grace_s))
        self._reconnecting = Reconnecting(ctx)
        self._intake = Intake(ctx, calls, self._hosting, self._maintenance, self._reconnecting)
        self._teardown = Teardown(ctx, calls, self._hosting)
        # the loop's wake-up and its "a fresh token is on its way" set, by their old names (the
        # same objects as the context's: never rebound)
        self._wake = ctx.wake
        self._awaiting_redispatch = ctx.awaiting_redispatch

    # ---- views ------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self.api.server

    @property
    def state(self) -> BridgeState:
        return self._ctx.state

    @property
    def failure(self) -> str | None:
        return self._ctx.failure

    @property
    def exit_code(self) -> int:
        return self._ctx.exit_code

    @property
    def shutdown_reason(self) -> str | None:
        return self._ctx.shutdown_reason

    @property
    def environment_id(self) -> str | None:
        return self._ctx.environment_id

    @property
    def initial_session_id(self) -> str | None:
        return self._ctx.initial_session_id

    @property
    def spawn_mode(self) -> SpawnMode:
        return self._ctx.spawn_mode

    @property
    def max_sessions(self) -> int:
        return self._ctx.max_sessions

    @property
    def polls(self) -> int:
        return self._intake.polls

    @property
    def active_count(self) -> int:
        return self._ctx.active_count

    @property
    def sessions(self) -> dict[str, SessionRecord]:
        return dict(self._ctx.sessions)

    def snapshot(self) -> BridgeSnapshot:
        ctx, now = self._ctx, self._ctx.clock()
        failing, next_at = self._reconnecting.backoff.failing_since, self._reconnecting.next_attempt_at
        reconnecting = ctx.state == "reconnecting"
        return BridgeSnapshot(
            state=ctx.state, server=self.server, environment_id=ctx.environment_id,
            connect_url=connect_url(self.server, ctx.environment_id), spawn_mode=ctx.spawn_mode,
            max_sessions=ctx.max_sessions, sessions=tuple(r.view(self.server) for r in ctx.sessions.values()),
            retry_in=max(0.0, next_at - now) if next_at and reconnecting else None,
            disconnected_for=now - failing if failing is not None and reconnecting else None,
            failure=ctx.failure, worktree_available=self.options.worktree_available,
            directory=str(self.options.directory),
        )

    # ---- control ----------------------------------------------------------------------------

    def request_shutdown(self, reason: str = "requested") -> None:
        """Start the ordered teardown (SIGINT/SIGTERM, the single session ended, a fatal error).
        A second request while tearing down kills the agents at once."""
        self._ctx.request_shutdown(reason)

    def toggle_spawn_mode(self) -> SpawnMode | None:
        """``w``: same-dir ↔ worktree for new sessions (multi-session with a git repo only)."""
        ctx = self._ctx
        if not self.options.multi_session or not self.options.worktree_available:
            return None
        ctx.spawn_mode = "worktree" if ctx.spawn_mode == "same-dir" else "same-dir"
        self.sink.event("spawn_mode", f"New sessions will be created in "
                        f"{'an isolated worktree' if ctx.spawn_mode == 'worktree' else 'the current directory'}.",
                        spawn_mode=ctx.spawn_mode)
        return ctx.spawn_mode

    # ---- life ------------------------------------------------------------------------------

    async def run(self) -> int:
        ctx = self._ctx
        try:
            await start_bridge(ctx, self._reconnecting)
        except StartupStopped as exc:  # asked to stop while the server was away: nothing to tear down yet
            ctx.state = "stopping"
            self.sink.event("stopped", exc.message, exit_code=0, reason=ctx.shutdown_reason)
            return 0
        except StartupError as exc:
            ctx.failure = exc.message
            ctx.state = "failed"
            self.sink.event("failed", exc.message)
            return 1
        try:
            async with asyncio.TaskGroup() as sessions:
                self._hosting.task_group = sessions
                async with asyncio.TaskGroup() as tg:
                    loops = [(self._intake.poll_loop, "poll loop", "poll"),
                             (self._maintenance.heartbeat_loop, "heartbeats", "heartbeat"),
                             (self._maintenance.refresh_loop, "token refresh", "refresh"),
                             (self._maintenance.pointer_loop, "pointer refresh", "pointer")]
                    tasks = [tg.create_task(guarded(loop(), what, ctx.fail, log), name=name)
                             for loop, what, name in loops]
                    await ctx.shutdown.wait()
                    for task in tasks:  # teardown step 1: stop polling (and the other loops)
                        task.cancel()
                await self._teardown.run()
        finally:
            self._hosting.task_group = None
        self.sink.event("stopped", "Remote Control stopped.", exit_code=ctx.exit_code, reason=ctx.shutdown_reason)
        return ctx.exit_code
