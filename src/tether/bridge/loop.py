"""The standalone bridge: register, poll for work, host sessions, tear down in order
(``tether remote-control``; reference §5.2–§5.11, FLOWS.md §1, §5–§7).

:meth:`Bridge.run` is the whole life of one bridge:

1. **start**: re-attach a resumed session's environment (``--continue`` / ``--session-id``),
   register (E1, ``max_sessions`` and ``metadata.worker_type``), ``bridge/reconnect`` the resumed
   session (E7) or pre-create one in the directory (S1), write the crash-recovery pointer;
2. **run**, every task in a task group: the poll loop (E2, long poll) with the two backoff
   tracks and sleep detection; heartbeats of active work (E5); worker-token refresh through
   ``bridge/reconnect`` (E7) 5 minutes before ``exp``; the hourly pointer refresh. Each session
   runs in the sessions task group (:func:`~tether.bridge.spawner.run_session`): a
   :class:`~tether.bridge.session_host.SessionHost` with its transport from
   :func:`tether.client.factory.make_transport` and the agent process, plus its watchdog;
3. **teardown** (:func:`~tether.protocol.bridge_policy.plan_teardown`): stop polling →
   SIGTERM the agents (30 s, then SIGKILL) → remove worktrees → ``stopWork(force)`` → archive →
   deregister → clear the pointer.

The decisions (poll intervals, backoff, refresh times, teardown order) are pure and live in
:mod:`tether.protocol.bridge_policy`; this module owns the timers, tasks and calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tether.bridge import pointer as pointers
from tether.bridge.agent_process import AgentSpec
from tether.bridge.session_host import HostConfig, SessionHost
from tether.bridge.spawner import AgentChoice, SessionEnd, SessionRecord, run_session
from tether.bridge.startup import StartupError
from tether.bridge.status import BridgeSnapshot, BridgeState, EventSink, connect_url, session_url
from tether.bridge.worktree import WorktreeError, create_worktree, remove_worktree
from tether.client.api import ApiClient, BridgeConfig, WorkItem
from tether.client.ccr import CCRConfig
from tether.client.factory import make_transport
from tether.client.hybrid import HybridConfig, boot_clock
from tether.client.sse import SSEConfig
from tether.client.transport import SessionTransport
from tether.client.v2 import V2Config
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, ProtocolError, TetherError
from tether.protocol.bridge_policy import (
    SHUTDOWN_GRACE_S,
    TOKEN_EXPIRY_GRACE_S,
    ActiveWork,
    ErrorKind,
    PollBackoff,
    RefreshSchedule,
    SpawnMode,
    TeardownStep,
    heartbeat_interval_s,
    jwt_expiry,
    plan_next_poll,
    plan_teardown,
    stop_work_retry,
)
from tether.protocol.ids import id_body, is_valid_id, same_session_id, to_compat_session_id
from tether.protocol.uuid_ring import BoundedUUIDSet
from tether.protocol.work_secret import WorkSecret, WorkSecretError, decode_work_secret

log = logging.getLogger("tether.bridge")

TransportFactory = Callable[..., Awaitable[SessionTransport]]
MAX_HELD = 64


@dataclass
class BridgeOptions:
    directory: pathlib.Path
    agent: AgentChoice
    spawn_mode: SpawnMode
    max_sessions: int
    machine_name: str
    branch: str | None = None
    git_repo_url: str | None = None
    worktree_available: bool = False
    name: str | None = None
    permission_mode: str | None = None
    session_timeout_s: float | None = 24 * 3600.0
    create_initial_session: bool = True
    resume_session_id: str | None = None
    agent_env: dict[str, str] = field(default_factory=dict)
    include_partial_messages: bool = True
    debug_file: pathlib.Path | None = None
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    home: pathlib.Path | None = None
    """``$TETHER_HOME`` for the pointer (None: the default)."""

    @property
    def multi_session(self) -> bool:
        return self.spawn_mode != "session"


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
        self._clock = clock
        self._wall = wall
        self._rnd = rnd or random.Random()
        self._sleep = sleep
        self._transport_factory = transport_factory
        # The bridge rotates its workers' tokens (E7): a token that expired while the refresh could
        # not get through is waited for, not the end of the session (docs/protocol.md §9.3).
        self._hybrid_config = hybrid_config or HybridConfig(expired_token_grace_s=TOKEN_EXPIRY_GRACE_S)
        self._v2_config = v2_config or V2Config(sse=SSEConfig(expired_token_grace_s=TOKEN_EXPIRY_GRACE_S),
                                                ccr=CCRConfig(expired_token_grace_s=TOKEN_EXPIRY_GRACE_S))
        self._host_config = host_config or HostConfig(term_grace=options.shutdown_grace_s)
        self.spawn_mode: SpawnMode = options.spawn_mode
        self.max_sessions = options.max_sessions
        self.environment_id: str | None = None
        self._environment_secret: str | None = None
        self.initial_session_id: str | None = None
        self._pointer_written = False
        self._sessions: dict[str, SessionRecord] = {}
        self._closing: set[str] = set()
        self._held: dict[str, tuple[WorkItem, WorkSecret]] = {}
        self._completed_work = BoundedUUIDSet(1000)
        self._to_archive: dict[str, str] = {}  # key → session id, in order
        self._awaiting_redispatch: set[str] = set()
        self._refresh: RefreshSchedule[str] = RefreshSchedule()
        self._backoff = PollBackoff()
        self._wake = asyncio.Event()  # capacity changed / a re-dispatch is expected
        self._refresh_changed = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._tearing_down = False
        self._keep_resumable = False
        self._force_kill = False
        self._sessions_tg: asyncio.TaskGroup | None = None
        self._session_tasks: set[asyncio.Task[None]] = set()  # running or cleaning up
        self._teardown_records: list[SessionRecord] = []
        self._next_attempt_at: float | None = None
        self.state: BridgeState = "connecting"
        self.failure: str | None = None
        self.exit_code = 0
        self.polls = 0
        self.shutdown_reason: str | None = None

    # ---- views ------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self.api.server

    @property
    def active_count(self) -> int:
        return len(self._sessions)

    @property
    def sessions(self) -> dict[str, SessionRecord]:
        return dict(self._sessions)

    def snapshot(self) -> BridgeSnapshot:
        now = self._clock()
        failing = self._backoff.failing_since
        return BridgeSnapshot(
            state=self.state, server=self.server, environment_id=self.environment_id,
            connect_url=connect_url(self.server, self.environment_id), spawn_mode=self.spawn_mode,
            max_sessions=self.max_sessions, sessions=tuple(r.view(self.server) for r in self._sessions.values()),
            retry_in=max(0.0, self._next_attempt_at - now) if self._next_attempt_at and self.state == "reconnecting"
            else None,
            disconnected_for=now - failing if failing is not None and self.state == "reconnecting" else None,
            failure=self.failure, worktree_available=self.options.worktree_available,
            directory=str(self.options.directory),
        )

    def _set_state(self, state: BridgeState) -> None:
        if state != self.state and self.state not in ("failed", "stopping"):
            self.state = state

    def _idle_state(self) -> None:
        self._set_state("connected" if self._sessions else "ready")

    # ---- control ----------------------------------------------------------------------------

    def request_shutdown(self, reason: str = "requested") -> None:
        """Start the ordered teardown (SIGINT/SIGTERM, the single session ended, a fatal error).
        A second request while tearing down kills the agents at once."""
        if self._shutdown.is_set():
            if self._tearing_down and not self._force_kill:
                self._force_kill = True
                self.sink.event("force_kill", "Stopping the agents now (second interrupt).")
                for rec in [*self._teardown_records, *self._sessions.values()]:
                    _kill_group(rec.host.pid)
            return
        self.shutdown_reason = reason
        self._shutdown.set()

    def toggle_spawn_mode(self) -> SpawnMode | None:
        """``w``: same-dir ↔ worktree for new sessions (multi-session with a git repo only)."""
        if not self.options.multi_session or not self.options.worktree_available:
            return None
        self.spawn_mode = "worktree" if self.spawn_mode == "same-dir" else "same-dir"
        self.sink.event("spawn_mode", f"New sessions will be created in "
                        f"{'an isolated worktree' if self.spawn_mode == 'worktree' else 'the current directory'}.",
                        spawn_mode=self.spawn_mode)
        return self.spawn_mode

    def _fail(self, message: str, *, resumable: bool = False) -> None:
        self.failure = message
        self.state = "failed"
        self.exit_code = 1
        self._keep_resumable = resumable and self.initial_session_id is not None
        self.sink.event("failed", message)
        self.request_shutdown("failed")

    # ---- life ------------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            await self._start()
        except StartupError as exc:
            self.failure = exc.message
            self.state = "failed"
            self.sink.event("failed", exc.message)
            return 1
        try:
            async with asyncio.TaskGroup() as sessions:
                self._sessions_tg = sessions
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(self._guard(self._poll_loop, "poll loop"), name="poll"),
                        tg.create_task(self._guard(self._heartbeat_loop, "heartbeats"), name="heartbeat"),
                        tg.create_task(self._guard(self._refresh_loop, "token refresh"), name="refresh"),
                        tg.create_task(self._guard(self._pointer_loop, "pointer refresh"), name="pointer"),
                    ]
                    await self._shutdown.wait()
                    for task in tasks:  # teardown step 1: stop polling (and the other loops)
                        task.cancel()
                await self._teardown()
        finally:
            self._sessions_tg = None
        self.sink.event("stopped", "Remote Control stopped.", exit_code=self.exit_code,
                        reason=self.shutdown_reason)
        return self.exit_code

    async def _guard(self, loop: Callable[[], Awaitable[None]], what: str) -> None:
        """A background loop that breaks ends the bridge in order instead of tearing the task group."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the %s failed", what)
            self._fail(f"internal error in the {what}: {exc!r}")

    # ---- start -----------------------------------------------------------------------------

    async def _start(self) -> None:
        o = self.options
        resume_env: str | None = None
        if o.resume_session_id is not None:
            resume_env = await self._resumable_environment(o.resume_session_id)
        else:
            pointers.clear_pointer(o.directory, o.home)  # a stale pointer of an earlier run
        try:
            reg = await self.api.register_environment(
                machine_name=o.machine_name, directory=str(o.directory), branch=o.branch,
                git_repo_url=o.git_repo_url, max_sessions=self.max_sessions, worker_type=o.agent.worker_type,
                environment_id=resume_env)
        except BridgeFatalError as exc:
            if exc.status == 404:
                raise StartupError("Remote Control environments are not available on this server.") from None
            raise StartupError(f"Registering this machine failed: {exc.message}") from None
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            raise StartupError(f"Registering this machine failed: {exc.message}") from None
        self.environment_id, self._environment_secret = reg.environment_id, reg.environment_secret
        self.sink.event("registered", f"Registered {o.machine_name} as {reg.environment_id} "
                        f"({self._mode_words()}).", environment_id=reg.environment_id,
                        max_sessions=self.max_sessions, spawn_mode=self.spawn_mode,
                        url=connect_url(self.server, reg.environment_id), reattached=reg.reattached)
        if o.resume_session_id is not None:
            if reg.reattached:
                await self._reconnect_resumed(o.resume_session_id)
            else:
                self.sink.event("warning", f"Could not re-attach environment {resume_env} (it expired); "
                                "starting a fresh session instead.")
                await self._create_initial_session()
        elif o.create_initial_session:
            await self._create_initial_session()
        if self.initial_session_id is not None:
            self._write_pointer()
        self._set_state("ready")

    def _mode_words(self) -> str:
        if self.spawn_mode == "session":
            return "single session; exits when it ends"
        where = "an isolated worktree" if self.spawn_mode == "worktree" else "the current directory"
        return f"capacity {self.max_sessions}; new sessions in {where}"

    async def _resumable_environment(self, session_id: str) -> str:
        try:
            session = await self.api.get_session(session_id)
        except BridgeFatalError as exc:
            if exc.status == 404:
                raise StartupError(f"Session {session_id} was not found; it cannot be resumed.") from None
            raise StartupError(f"Cannot resume {session_id}: {exc.message}") from None
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            raise StartupError(f"Cannot resume {session_id}: {exc.message}") from None
        status = session.get("session_status") or session.get("status")
        if status == "archived":
            raise StartupError(f"Session {session_id} is archived; it cannot be resumed. "
                               "Run `tether remote-control` without --continue for a new one.")
        env = session.get("environment_id")
        if not is_valid_id(env):
            raise StartupError(f"Session {session_id} is not bound to an environment; it cannot be resumed here.")
        assert isinstance(env, str)
        return env

    async def _reconnect_resumed(self, session_id: str) -> None:
        assert self.environment_id is not None
        try:
            await self.api.reconnect_session(self.environment_id, session_id)
        except TetherError as exc:
            raise StartupError(f"Cannot resume {session_id}: {exc.message}") from None
        self.initial_session_id = to_compat_session_id(session_id)
        self._to_archive[id_body(session_id)] = self.initial_session_id
        self.sink.event("session_resumed", f"Resuming session {self.initial_session_id}.",
                        session_id=self.initial_session_id, url=session_url(self.server, session_id))

    async def _create_initial_session(self) -> None:
        o = self.options
        context: dict[str, Any] = {}
        if o.git_repo_url:
            context["sources"] = [{"type": "git_repository", "url": o.git_repo_url,
                                   **({"revision": o.branch} if o.branch else {})}]
        try:
            session = await self.api.create_session(environment_id=self.environment_id, title=o.name,
                                                    permission_mode=o.permission_mode, session_context=context)
        except (TetherError, ValueError) as exc:  # non-fatal (reference §5.2 step 14)
            msg = exc.message if isinstance(exc, TetherError) else str(exc)
            self.sink.event("warning", f"Could not create a session in {o.directory}: {msg}")
            return
        sid = str(session["id"])
        self.initial_session_id = sid
        self._to_archive[id_body(sid)] = sid
        self.sink.event("session_created", f"Created session {sid} in {o.directory}.", session_id=sid,
                        url=session_url(self.server, sid))

    def _write_pointer(self) -> None:
        assert self.initial_session_id is not None and self.environment_id is not None
        try:
            pointers.write_pointer(self.options.directory, pointers.BridgePointer(
                self.initial_session_id, self.environment_id, "standalone"), self.options.home)
            self._pointer_written = True
        except OSError as exc:
            self.sink.event("warning", f"Could not write the crash-recovery pointer: {exc}")

    # ---- poll loop ---------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        assert self.environment_id is not None and self._environment_secret is not None
        poll_cfg = self.config.poll.config
        multi = self.options.multi_session
        while True:
            self._wake.clear()  # before looking at the capacity: a change after this wakes us
            active = self.active_count
            if active >= self.max_sessions and not self._awaiting_redispatch:
                plan = plan_next_poll(poll_cfg, active=active, max_sessions=self.max_sessions, multi_session=multi)
                self._idle_state()
                if await _wait_event(self._wake, plan.delay):
                    continue  # capacity changed or a fresh token is on its way: look again
                # the at-capacity interval passed: one liveness poll
            elif self._held and active < self.max_sessions:
                await self._start_held()  # a held item starts at once (it is ours, already delivered)
                continue
            started = self._clock()
            try:
                work = await self.api.poll_for_work(self.environment_id, self._environment_secret,
                                                    reclaim_older_than_ms=poll_cfg.reclaim_older_than_ms)
            except BridgeFatalError as exc:
                self._fail(_fatal_poll_message(exc))
                return
            except ApiUnavailable as exc:
                if not await self._backoff_wait("connection", exc.message, None):
                    return
                continue
            except (ApiError, ProtocolError) as exc:
                if not await self._backoff_wait("general", exc.message, getattr(exc, "retry_after", None)):
                    return
                continue
            self.polls += 1
            self._next_attempt_at = None
            if self._backoff.success(self._clock()):
                self.sink.event("reconnected", "Reconnected to the server.", environment_id=self.environment_id)
            self._idle_state()
            new_work = False
            if work is None:
                self._awaiting_redispatch.clear()  # E7 queues before it answers: nothing more is coming
            else:
                new_work = await self._handle_work(work)
            plan = plan_next_poll(poll_cfg, active=self.active_count, max_sessions=self.max_sessions,
                                  multi_session=multi, got_work=new_work,
                                  poll_duration=self._clock() - started)
            if plan.state != "full" and plan.delay:
                await self._sleep(plan.delay)

    async def _backoff_wait(self, kind: ErrorKind, message: str, retry_after: float | None) -> bool:
        """Record a failed poll and wait before the next one; False when the budget ran out."""
        now = self._clock()
        decision = self._backoff.failure(kind, now, self._rnd, retry_after)
        if decision.slept:
            self.sink.event("sleep_detected", "Long gap since the last poll error (the machine slept?); "
                            "the retry budget starts over.", kind=kind)
        if decision.delay is None:
            self._fail(f"Gave up reaching the server after {decision.elapsed:.0f} s: {message}", resumable=True)
            return False
        self._set_state("reconnecting")
        self._next_attempt_at = now + decision.delay
        self.sink.event("poll_error", f"Poll failed ({message}); retrying in {decision.delay:.1f} s.",
                        kind=kind, attempt=decision.attempt, delay=round(decision.delay, 3),
                        elapsed=round(decision.elapsed, 3), slept=decision.slept)
        await self._sleep(decision.delay)
        return True

    # ---- work ------------------------------------------------------------------------------

    async def _handle_work(self, work: WorkItem) -> bool:
        """Act on a polled item; False when it was one we had already seen (nothing new)."""
        if work.id in self._completed_work or work.id in self._held:
            return False
        try:
            secret = decode_work_secret(work.secret)
        except WorkSecretError as exc:
            self._completed_work.add(work.id)
            self.sink.event("work_rejected", f"Work {work.id} has a bad secret ({exc}); releasing it.",
                            work_id=work.id)
            await self._stop_work(work.id, force=False)
            return True
        token = secret.session_ingress_token
        if work.data_type == "healthcheck":
            await self._ack(work.id, token)
            return True
        if work.data_type != "session":
            log.info("ignoring work %s of unknown type %r", work.id, work.data_type)
            await self._ack(work.id, token)
            return True
        sid = work.data_id
        if not is_valid_id(sid):
            self._completed_work.add(work.id)
            self.sink.event("work_rejected", f"Work {work.id} names an invalid session id; releasing it.",
                            work_id=work.id)
            await self._stop_work(work.id, force=False)
            return True
        key = id_body(sid)
        rec = self._sessions.get(key)
        if rec is not None:
            if work.id == rec.work_id:  # the same item again (its ack was lost): ack it once more
                await self._ack(work.id, token)
                return False
            await self._adopt_redispatch(rec, work, token)
            return True
        if key in self._closing:
            return False  # ended here a moment ago and about to be archived: leave it
        if self.active_count >= self.max_sessions:
            if len(self._held) < MAX_HELD:
                self._held[work.id] = (work, secret)
                self.sink.event("work_held", f"At capacity ({self.max_sessions}); session {sid} starts when one "
                                "ends.", work_id=work.id, session_id=sid)
            return True
        if await self._ack(work.id, token):
            await self._spawn(work, secret)
        return True

    async def _adopt_redispatch(self, rec: SessionRecord, work: WorkItem, token: str) -> None:
        """A re-dispatch of a session we host: a token update, never a second agent (FLOWS.md §5)."""
        rec.work_id, rec.token = work.id, token
        rec.host.set_token(token)
        self._awaiting_redispatch.discard(rec.key)
        self._schedule_refresh(rec)
        await self._ack(work.id, token)
        self.sink.event("token_refreshed", f"Session {rec.session_id} has a fresh token (work {work.id}).",
                        session_id=rec.session_id, work_id=work.id)

    async def _start_held(self) -> None:
        while self._held and self.active_count < self.max_sessions:
            work_id = next(iter(self._held))
            work, secret = self._held.pop(work_id)
            key = id_body(work.data_id)
            if key in self._sessions:
                await self._adopt_redispatch(self._sessions[key], work, secret.session_ingress_token)
            elif await self._ack(work.id, secret.session_ingress_token):
                await self._spawn(work, secret)

    async def _ack(self, work_id: str, token: str) -> bool:
        """E3. False when the item is gone (superseded / stopped); other failures are not fatal."""
        assert self.environment_id is not None
        try:
            await self.api.acknowledge_work(self.environment_id, work_id, token)
        except BridgeFatalError as exc:
            self.sink.event("warning", f"Work {work_id} is gone ({exc.message}); skipping it.", work_id=work_id)
            self._completed_work.add(work_id)
            return False
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            log.warning("ack of %s failed (%s); going on (the server re-delivers un-acked work)", work_id, exc)
        return True

    async def _spawn(self, work: WorkItem, secret: WorkSecret) -> None:
        o = self.options
        sid = work.data_id
        initial = self.initial_session_id is not None and same_session_id(sid, self.initial_session_id)
        worktree = None
        cwd = o.directory
        if self.spawn_mode == "worktree" and not initial:
            try:
                worktree = await create_worktree(o.directory, to_compat_session_id(sid))
            except WorktreeError as exc:
                await self._refuse(work, sid, f"could not create its worktree: {exc.message}")
                return
            cwd = worktree.path
        try:
            transport = await self._transport_factory(secret, base_url=self.server, session_id=sid,
                                                      hybrid_config=self._hybrid_config,
                                                      v2_config=self._v2_config)
        except (TetherError, ValueError) as exc:
            if worktree is not None:
                await self._remove_worktree(worktree)
            await self._refuse(work, sid, exc.message if isinstance(exc, TetherError) else str(exc))
            return
        spec = AgentSpec(command=o.agent.with_debug_file(o.debug_file, sid), cwd=str(cwd),
                         include_partial_messages=o.include_partial_messages, permission_mode=o.permission_mode,
                         env=o.agent_env)
        host = SessionHost(sid, transport, spec, self._host_config)
        loop = asyncio.get_running_loop()
        rec = SessionRecord(sid, work.id, secret.session_ingress_token, host, str(cwd), loop.time(), self._wall(),
                            initial=initial, worktree=worktree)
        self._sessions[rec.key] = rec
        self._to_archive.setdefault(rec.key, to_compat_session_id(sid))
        self._schedule_refresh(rec)
        self._idle_state()
        assert self._sessions_tg is not None
        rec.task = self._sessions_tg.create_task(self._session(rec), name=f"session-{rec.key}")
        self._session_tasks.add(rec.task)
        rec.task.add_done_callback(self._session_tasks.discard)
        self.sink.event("session_started", f"Session {sid} started in {cwd} "
                        f"({self.active_count}/{self.max_sessions}).", session_id=sid, work_id=work.id,
                        cwd=str(cwd), worktree=str(worktree.path) if worktree else None,
                        branch=worktree.branch if worktree else None, url=session_url(self.server, sid),
                        active=self.active_count)

    async def _refuse(self, work: WorkItem, sid: str, why: str) -> None:
        self._completed_work.add(work.id)
        self.sink.event("session_failed", f"Session {sid} cannot start: {why}", session_id=sid, reason=why)
        await self._stop_work(work.id, force=False)

    async def _session(self, rec: SessionRecord) -> None:
        """One session from start to clean-up (runs in the sessions task group)."""
        async with asyncio.TaskGroup() as tg:
            title = tg.create_task(self._fetch_title(rec), name=f"title-{rec.key}")
            end = await run_session(rec, self.options.session_timeout_s)
            title.cancel()
        try:
            await self._session_ended(rec, end)
        except Exception:
            log.exception("clean-up of session %s failed", rec.session_id)

    async def _fetch_title(self, rec: SessionRecord) -> None:
        with contextlib.suppress(TetherError, ValueError):
            session = await self.api.get_session(rec.session_id)
            title = session.get("title")
            if isinstance(title, str) and title:
                rec.server_title = title

    async def _session_ended(self, rec: SessionRecord, end: SessionEnd) -> None:
        key = rec.key
        self._sessions.pop(key, None)
        self._refresh.cancel(key)
        self._awaiting_redispatch.discard(key)
        self._wake.set()  # capacity wake: a queued session starts now, not after the next interval
        self._idle_state()
        fields: dict[str, Any] = dict(session_id=rec.session_id, work_id=rec.work_id, status=end.status,
                                      exit_code=end.exit_code, reason=end.reason,
                                      stderr_tail=list(end.stderr_tail), activities=list(end.activities),
                                      title=end.title, active=self.active_count)
        why = f": {end.reason}" if end.reason else ""
        self.sink.event("session_ended", f"Session {rec.session_id} {end.status}{why}.", **fields)
        if self._tearing_down:
            return  # the teardown stops the work, removes the worktree and archives, in its order
        self._closing.add(key)
        try:
            await self._stop_work(rec.work_id, force=False)
            self._completed_work.add(rec.work_id)
            if rec.worktree is not None:
                await self._remove_worktree(rec.worktree)
            if self.options.multi_session:
                if await self._archive(self._to_archive.pop(key, to_compat_session_id(rec.session_id))):
                    self.sink.event("session_archived", f"Session {rec.session_id} archived.",
                                    session_id=rec.session_id)
            else:
                self.request_shutdown("the session ended")
        finally:
            self._closing.discard(key)

    # ---- heartbeats, token refresh, pointer ---------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = heartbeat_interval_s(self.config.poll.config, self.config.lease_ttl_seconds)
        while True:
            await asyncio.sleep(interval)
            records = list(self._sessions.values())
            if records:
                await asyncio.gather(*(self._heartbeat(rec) for rec in records))

    async def _heartbeat(self, rec: SessionRecord) -> None:
        assert self.environment_id is not None
        work_id = rec.work_id
        try:
            await self.api.heartbeat_work(self.environment_id, work_id, rec.token)
        except BridgeFatalError as exc:
            if exc.status in (401, 403):  # the worker token expired: ask for a fresh one now
                self.sink.event("warning", f"Heartbeat of {rec.session_id} refused ({exc.message}); "
                                "asking for a fresh token.", session_id=rec.session_id)
                self._refresh.schedule(rec.key, self._wall(), self._wall())
                self._refresh_changed.set()
            else:  # superseded by a re-dispatch (the new item is on its way) or gone
                log.info("heartbeat of %s (%s): %s", rec.session_id, work_id, exc.message)
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            log.info("heartbeat of %s failed: %s", rec.session_id, exc.message)

    def _schedule_refresh(self, rec: SessionRecord) -> None:
        self._refresh.schedule(rec.key, jwt_expiry(rec.token), self._wall())
        self._refresh_changed.set()

    async def _refresh_loop(self) -> None:
        assert self.environment_id is not None
        while True:
            self._refresh_changed.clear()
            now = self._wall()
            for key in self._refresh.due(now):
                rec = self._sessions.get(key)
                if rec is None:
                    self._refresh.cancel(key)
                    continue
                try:
                    await self.api.reconnect_session(self.environment_id, rec.session_id)
                except TetherError as exc:
                    self._refresh.failed(key, self._wall())
                    self.sink.event("warning", f"Token refresh for {rec.session_id} failed ({exc.message}); "
                                    "retrying in a minute.", session_id=rec.session_id)
                    continue
                self._refresh.requested(key, self._wall())
                self._awaiting_redispatch.add(key)
                self._wake.set()
                self.sink.event("token_refresh", f"Asked for a fresh token for {rec.session_id}.",
                                session_id=rec.session_id)
            nxt = self._refresh.next_due()
            timeout = 60.0 if nxt is None else min(60.0, max(0.0, nxt - self._wall()))
            await _wait_event(self._refresh_changed, timeout)

    async def _pointer_loop(self) -> None:
        while True:
            await asyncio.sleep(pointers.REFRESH_INTERVAL_S)
            if self._pointer_written:
                pointers.refresh_pointer(self.options.directory, self.options.home)

    # ---- calls with retry -----------------------------------------------------------------------

    async def _stop_work(self, work_id: str, *, force: bool) -> bool:
        """E4 with retry (3 attempts, 1 s / 2 s); fatal answers are not retried."""
        assert self.environment_id is not None
        retry = stop_work_retry()
        while True:
            try:
                await self.api.stop_work(self.environment_id, work_id, force=force)
                return True
            except BridgeFatalError as exc:
                log.info("stop of %s: %s", work_id, exc.message)
                return exc.status in (404, 410)
            except (ApiError, ApiUnavailable, ProtocolError) as exc:
                decision = retry.failure(self._clock(), self._rnd)
                if decision.delay is None:
                    self.sink.event("warning", f"Could not stop work {work_id}: {exc.message}", work_id=work_id)
                    return False
                await asyncio.sleep(decision.delay)

    async def _archive(self, session_id: str) -> bool:
        try:
            await self.api.archive_session(session_id)  # 409 (already archived) counts as done
            return True
        except TetherError as exc:
            self.sink.event("warning", f"Could not archive {session_id}: {exc.message}", session_id=session_id)
            return False

    async def _remove_worktree(self, worktree: Any) -> None:
        try:
            await remove_worktree(worktree)
            self.sink.event("worktree_removed", f"Removed worktree {worktree.path}.", path=str(worktree.path),
                            branch=worktree.branch)
        except WorktreeError as exc:
            self.sink.event("warning", f"Could not remove worktree {worktree.path}: {exc.message}")

    # ---- teardown ------------------------------------------------------------------------------

    async def _teardown(self) -> None:
        self._tearing_down = True
        if self.state != "failed":
            self.state = "stopping"
        records = list(self._sessions.values())
        self._teardown_records = records
        archive = [*(to_compat_session_id(r.session_id) for r in records), *self._to_archive.values()]
        plan = plan_teardown(
            active=[ActiveWork(r.session_id, r.work_id, str(r.worktree.path) if r.worktree else None)
                    for r in records],
            archive=archive, environment_id=self.environment_id, pointer=self._pointer_written,
            grace_s=self.options.shutdown_grace_s, keep_resumable=self._keep_resumable)
        for step in plan:
            self.sink.event("teardown", _step_words(step), step=step.action, targets=list(step.targets))
            await self._run_step(step, records)
        if self._keep_resumable and self.initial_session_id:
            self.sink.event("resumable", "Resume this session with `tether remote-control --continue`.",
                            session_id=self.initial_session_id)

    async def _run_step(self, step: TeardownStep, records: list[SessionRecord]) -> None:
        if step.action == "terminate_agents":
            for rec in records:
                rec.host.stop()
            tasks = set(self._session_tasks)  # also sessions that ended a moment ago and are cleaning up
            if tasks:
                deadline = (step.deadline_s or SHUTDOWN_GRACE_S) + 15.0  # the host's own SIGKILL + flush
                _, pending = await asyncio.wait(tasks, timeout=deadline)
                for rec in records:
                    if rec.task in pending:
                        _kill_group(rec.host.pid)
                if pending:
                    await asyncio.wait(pending, timeout=10.0)
        elif step.action == "remove_worktrees":
            for rec in records:
                if rec.worktree is not None:
                    await self._remove_worktree(rec.worktree)
        elif step.action == "stop_work":
            await asyncio.gather(*(self._stop_work(w, force=True) for w in step.targets))
        elif step.action == "archive":
            results = await asyncio.gather(*(self._archive(s) for s in step.targets))
            for sid, ok in zip(step.targets, results, strict=True):
                if ok:
                    self.sink.event("session_archived", f"Session {sid} archived.", session_id=sid)
        elif step.action == "deregister":
            assert self.environment_id is not None
            try:
                await self.api.deregister_environment(self.environment_id)
                self.sink.event("deregistered", f"Environment {self.environment_id} deregistered.",
                                environment_id=self.environment_id)
            except TetherError as exc:
                self.sink.event("warning", f"Could not deregister {self.environment_id}: {exc.message}")
        elif step.action == "clear_pointer":
            pointers.clear_pointer(self.options.directory, self.options.home)


def _step_words(step: TeardownStep) -> str:
    n = len(step.targets)
    return {
        "stop_polling": "Stopping: no more polling.",
        "terminate_agents": f"Stopping {n} agent{'s' if n != 1 else ''} (SIGTERM, then SIGKILL after "
                            f"{step.deadline_s or SHUTDOWN_GRACE_S:g} s).",
        "remove_worktrees": f"Removing {n} worktree{'s' if n != 1 else ''}.",
        "stop_work": f"Stopping {n} work item{'s' if n != 1 else ''}.",
        "archive": f"Archiving {n} session{'s' if n != 1 else ''}.",
        "deregister": "Deregistering the environment.",
        "clear_pointer": "Clearing the crash-recovery pointer.",
    }[step.action]


def _fatal_poll_message(exc: BridgeFatalError) -> str:
    if exc.status == 401:
        return f"The server no longer accepts this bridge ({exc.message}). Run `tether login` and start again."
    if exc.status in (404, 410):
        return f"The environment is gone ({exc.message}). Start `tether remote-control` again."
    return exc.message


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds (None: no limit); True if it was set."""
    if event.is_set():
        return True
    if timeout is None:
        await event.wait()
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    return event.is_set()
