"""What every part of the standalone bridge shares: its options, its connection to the server,
the sessions it hosts, and the state it shows.

:class:`~tether.bridge.loop.Bridge` makes one :class:`BridgeContext` and hands it to its parts
(:mod:`~tether.bridge.startup`, :mod:`~tether.bridge.intake`, :mod:`~tether.bridge.hosting`,
:mod:`~tether.bridge.maintenance`, :mod:`~tether.bridge.teardown`); :class:`ServerCalls` are the
calls more than one of them makes (with their retries and their warnings).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tether.bridge.agent_process import kill_group
from tether.bridge.claim import DirectoryClaim
from tether.bridge.spawner import AgentChoice, SessionRecord
from tether.bridge.status import BridgeState, EventSink, shown_id
from tether.bridge.workspace import Workspace, WorkspaceError, Workspaces
from tether.bridge.worktree import Worktree, WorktreeError, remove_worktree
from tether.client.api import ApiClient, BridgeConfig
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, ProtocolError, TetherError
from tether.protocol.bridge_policy import SHUTDOWN_GRACE_S, SpawnMode, stop_work_retry
from tether.protocol.uuid_ring import BoundedUUIDSet

__all__ = ["BridgeContext", "BridgeOptions", "ServerCalls"]

log = logging.getLogger("tether.bridge")


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
    resume_command: str = "tether remote-control --continue"
    """What the bridge's last words tell the user to run to resume its session."""
    claim: DirectoryClaim | None = None
    """This directory's bridge lock, held by the caller; the bridge records its environment and
    session in it so that a second bridge here can say who runs it."""
    environment_kind: str = "bridge"
    """``cloud`` for a runner (E1 ``kind``)."""
    workspaces: Workspaces | None = None
    """A runner's per-session work directories (docs/protocol.md §11.9); None for a plain bridge."""
    agent_args: tuple[str, ...] = ()
    """Extra arguments for every agent (``--sandbox``: the stock CLI's sandbox settings)."""
    timeout_words: str = "--session-timeout"
    """How the session timeout is named in the reason a session was stopped."""

    @property
    def multi_session(self) -> bool:
        return self.spawn_mode != "session"


@dataclass(eq=False)
class BridgeContext:
    api: ApiClient
    options: BridgeOptions
    config: BridgeConfig
    sink: EventSink
    clock: Callable[[], float]
    """Monotonic seconds (backoff, poll timing)."""
    wall: Callable[[], float]
    """Unix seconds (worker token expiry)."""
    rnd: random.Random
    sleep: Callable[[float], Awaitable[None]]
    """The poll loop's waits (tests pass a fake that advances their clock)."""
    spawn_mode: SpawnMode
    max_sessions: int
    environment_id: str | None = None
    environment_secret: str | None = None
    initial_session_id: str | None = None
    pointer_written: bool = False
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    """Key (the session id's body) → the session running here."""
    to_archive: dict[str, str] = field(default_factory=dict)
    """Key → session id to archive at the end, in order (the initial one first)."""
    completed_work: BoundedUUIDSet = field(default_factory=lambda: BoundedUUIDSet(1000))
    closing: set[str] = field(default_factory=set)
    """Keys of sessions that ended and are being stopped and archived."""
    awaiting_redispatch: set[str] = field(default_factory=set)
    """Keys whose fresh token was asked for (E7): the poll loop polls even at capacity."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """The capacity changed, or a re-dispatch is expected: the poll loop looks again."""
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    state: BridgeState = "connecting"
    failure: str | None = None
    exit_code: int = 0
    shutdown_reason: str | None = None
    keep_resumable: bool = False
    """A crash-like end (gave up reaching the server): the session stays for ``--continue``."""
    superseded: bool = False
    """Another bridge registered this environment again: it owns the environment and its sessions now."""
    tearing_down: bool = False
    force_kill: bool = False
    teardown_records: list[SessionRecord] = field(default_factory=list)
    """The sessions the teardown is stopping (no longer in :attr:`sessions` once they ended)."""

    @property
    def server(self) -> str:
        return self.api.server

    @property
    def active_count(self) -> int:
        return len(self.sessions)

    def set_state(self, state: BridgeState) -> None:
        if state != self.state and self.state not in ("failed", "stopping"):
            self.state = state

    def idle_state(self) -> None:
        self.set_state("connected" if self.sessions else "ready")

    def request_shutdown(self, reason: str = "requested") -> None:
        """Start the ordered teardown. A second request while tearing down kills the agents at once."""
        if self.shutdown.is_set():
            if self.tearing_down and not self.force_kill:
                self.force_kill = True
                self.sink.event("force_kill", "Stopping the agents now (second interrupt).")
                for rec in [*self.teardown_records, *self.sessions.values()]:
                    kill_group(rec.host.pid)
            return
        self.shutdown_reason = reason
        self.shutdown.set()

    def fail(self, message: str, *, resumable: bool = False, superseded: bool = False) -> None:
        self.failure = message
        self.state = "failed"
        self.exit_code = 1
        self.keep_resumable = resumable and self.initial_session_id is not None
        self.superseded = superseded
        self.sink.event("failed", message)
        self.request_shutdown("failed")


class ServerCalls:
    """The calls several parts make, each with its retry and the warning a failure leaves."""

    def __init__(self, ctx: BridgeContext) -> None:
        self._ctx = ctx

    async def ack(self, work_id: str, token: str) -> bool:
        """E3. False when the item is gone (superseded / stopped); other failures are not fatal."""
        ctx = self._ctx
        assert ctx.environment_id is not None
        try:
            await ctx.api.acknowledge_work(ctx.environment_id, work_id, token)
        except BridgeFatalError as exc:
            ctx.sink.event("warning", f"Work {work_id} is gone ({exc.message}); skipping it.", work_id=work_id)
            ctx.completed_work.add(work_id)
            return False
        except (ApiError, ApiUnavailable, ProtocolError) as exc:
            log.warning("ack of %s failed (%s); going on (the server re-delivers un-acked work)", work_id, exc)
        return True

    async def stop_work(self, work_id: str, *, force: bool) -> bool:
        """E4 with retry (3 attempts, 1 s / 2 s); fatal answers are not retried."""
        ctx = self._ctx
        assert ctx.environment_id is not None
        retry = stop_work_retry()
        while True:
            try:
                await ctx.api.stop_work(ctx.environment_id, work_id, force=force)
                return True
            except BridgeFatalError as exc:
                log.info("stop of %s: %s", work_id, exc.message)
                return exc.status in (404, 410)
            except (ApiError, ApiUnavailable, ProtocolError) as exc:
                decision = retry.failure(ctx.clock(), ctx.rnd)
                if decision.delay is None:
                    ctx.sink.event("warning", f"Could not stop work {work_id}: {exc.message}", work_id=work_id)
                    return False
                await asyncio.sleep(decision.delay)

    async def archive(self, session_id: str, reason: str) -> bool:
        """Archive with ``reason``; a 409 (already archived) counts as done. Says so when it worked."""
        try:
            await self._ctx.api.archive_session(session_id, reason)
        except TetherError as exc:
            self._ctx.sink.event("warning", f"Could not archive {session_id}: {exc.message}", session_id=session_id)
            return False
        return True

    def archived(self, session_id: str) -> None:
        self._ctx.sink.event("session_archived", f"Session {shown_id(session_id)} archived.", session_id=session_id)

    async def release(self, work_id: str) -> None:
        """A work item this bridge will not run: remember it (a re-delivery is ignored) and stop it."""
        self._ctx.completed_work.add(work_id)
        await self.stop_work(work_id, force=False)

    async def remove_worktree(self, worktree: Worktree) -> None:
        try:
            await remove_worktree(worktree)
            self._ctx.sink.event("worktree_removed", f"Removed worktree {worktree.path}.",
                                 path=str(worktree.path), branch=worktree.branch)
        except WorktreeError as exc:
            self._ctx.sink.event("warning", f"Could not remove worktree {worktree.path}: {exc.message}")

    async def remove_workspace(self, workspace: Workspace) -> None:
        workspaces = self._ctx.options.workspaces
        assert workspaces is not None
        try:
            await workspaces.remove(workspace)
            self._ctx.sink.event("workspace_removed", f"Removed {workspace.path}.", path=str(workspace.path),
                                 session_id=workspace.session_id)
        except WorkspaceError as exc:
            self._ctx.sink.event("warning", f"Could not remove {workspace.path}: {exc.message}")

    async def remove_work_dirs(self, rec: SessionRecord) -> None:
        """The session's worktree or workspace, if it has one."""
        if rec.worktree is not None:
            await self.remove_worktree(rec.worktree)
        if rec.workspace is not None:
            await self.remove_workspace(rec.workspace)
