"""The sessions the standalone bridge hosts: start one, run it, clean up after it (docs/protocol.md §5, §11.3).

:meth:`Hosting.spawn` prepares where the agent runs (the directory, a fresh worktree, or a
runner's workspace), opens the session's transport (:func:`tether.client.factory.make_transport`)
and starts a :class:`~tether.bridge.session_host.SessionHost` in the sessions task group, with its
watchdog (:func:`~tether.bridge.spawner.run_session`) and its title refresh. When it ends, its work
is stopped, its worktree or workspace removed, and the session archived (multi-session) or the
bridge stopped (single session). A session that cannot start is refused: its work is stopped (and
for a runner, which would fail the same way again, the session is told why and archived).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tether.bridge.agent_process import AgentSpec
from tether.bridge.attachments import AttachmentFetcher
from tether.bridge.context import BridgeContext, ServerCalls
from tether.bridge.maintenance import Maintenance
from tether.bridge.session_host import HostConfig, SessionHost
from tether.bridge.spawner import SessionEnd, SessionRecord, run_session
from tether.bridge.status import session_url, shown_id
from tether.bridge.workspace import Workspace, WorkspaceError
from tether.bridge.worktree import Worktree, WorktreeError, create_worktree
from tether.client.api import WorkItem
from tether.client.hybrid import HybridConfig
from tether.client.transport import SessionTransport
from tether.client.v2 import V2Config
from tether.errors import TetherError
from tether.protocol.ids import to_compat_session_id
from tether.protocol.work_intake import Placement
from tether.protocol.work_secret import WorkSecret

__all__ = ["Hosting", "TransportFactory", "report_failure"]

log = logging.getLogger("tether.bridge")

TransportFactory = Callable[..., Awaitable[SessionTransport]]


@dataclass(frozen=True)
class _WorkDir:
    cwd: pathlib.Path
    worktree: Worktree | None = None
    workspace: Workspace | None = None


class Hosting:
    def __init__(self, ctx: BridgeContext, calls: ServerCalls, maintenance: Maintenance, *,
                 transport_factory: TransportFactory, hybrid_config: HybridConfig | None,
                 v2_config: V2Config | None = None, host_config: HostConfig) -> None:
        self._ctx = ctx
        self._calls = calls
        self._maintenance = maintenance
        self._transport_factory = transport_factory
        self._hybrid_config = hybrid_config
        self._v2_config = v2_config
        self._host_config = host_config
        self.task_group: asyncio.TaskGroup | None = None
        """The sessions task group (the bridge sets it while it runs)."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Every session task, running or cleaning up after its end."""

    # ---- start ------------------------------------------------------------------------------------

    async def spawn(self, work: WorkItem, secret: WorkSecret, placement: Placement, *, initial: bool) -> None:
        """Start the session of ``work`` (acknowledged already), or refuse it."""
        sid = work.data_id
        where = await self._work_dir(work, secret, placement)
        if where is None:
            return
        try:
            transport = await self._transport(secret, sid)
        except (TetherError, ValueError) as exc:
            await self._remove_work_dir(where)
            await self.refuse(work, sid, exc.message if isinstance(exc, TetherError) else str(exc))
            return
        host = self._host(sid, secret, transport, where)
        rec = SessionRecord(sid, work.id, secret.session_ingress_token, host, str(where.cwd),
                            asyncio.get_running_loop().time(), self._ctx.wall(), initial=initial,
                            worktree=where.worktree, workspace=where.workspace)
        self._start(rec)

    async def _work_dir(self, work: WorkItem, secret: WorkSecret, placement: Placement) -> _WorkDir | None:
        """Where the agent runs; None when the session was refused (it could not be prepared)."""
        o, sid = self._ctx.options, work.data_id
        if placement == "workspace":
            assert o.workspaces is not None
            try:
                workspace = await o.workspaces.prepare(sid, secret)
            except WorkspaceError as exc:
                await self.refuse_for_good(work, secret, sid, exc.message)
                return None
            return _WorkDir(workspace.cwd, workspace=workspace)
        if placement == "worktree":
            try:
                worktree = await create_worktree(o.directory, to_compat_session_id(sid))
            except WorktreeError as exc:
                await self.refuse(work, sid, f"could not create its worktree: {exc.message}")
                return None
            return _WorkDir(worktree.path, worktree=worktree)
        return _WorkDir(o.directory)

    async def _remove_work_dir(self, where: _WorkDir) -> None:
        if where.worktree is not None:
            await self._calls.remove_worktree(where.worktree)
        if where.workspace is not None:
            await self._calls.remove_workspace(where.workspace)

    async def _transport(self, secret: WorkSecret, sid: str) -> SessionTransport:
        return await self._transport_factory(secret, base_url=self._ctx.server, session_id=sid,
                                             hybrid_config=self._hybrid_config, v2_config=self._v2_config)

    def _host(self, sid: str, secret: WorkSecret, transport: SessionTransport, where: _WorkDir) -> SessionHost:
        o, workspace = self._ctx.options, where.workspace
        spec = AgentSpec(command=o.agent.with_debug_file(o.debug_file, sid), cwd=str(where.cwd),
                         include_partial_messages=o.include_partial_messages, permission_mode=o.permission_mode,
                         env={**o.agent_env, **(workspace.env if workspace else {})},
                         extra_args=(*o.agent_args, *(workspace.args if workspace else ())),
                         wrapper=o.workspaces.wrapper(workspace) if o.workspaces and workspace else None,
                         preexec=o.workspaces.preexec() if o.workspaces else None)
        fetcher = AttachmentFetcher(self._ctx.server, secret.session_ingress_token, str(where.cwd),
                                    to_compat_session_id(sid))
        return SessionHost(sid, transport, spec, self._host_config, attachments=fetcher)

    def _start(self, rec: SessionRecord) -> None:
        ctx, sid = self._ctx, rec.session_id
        ctx.sessions[rec.key] = rec
        ctx.to_archive.setdefault(rec.key, to_compat_session_id(sid))
        self._maintenance.schedule_refresh(rec)
        ctx.idle_state()
        assert self.task_group is not None
        rec.task = self.task_group.create_task(self._run(rec), name=f"session-{rec.key}")
        self.tasks.add(rec.task)
        rec.task.add_done_callback(self.tasks.discard)
        worktree = rec.worktree
        ctx.sink.event("session_started", f"Session {shown_id(sid)} started in {rec.cwd} "
                       f"({ctx.active_count}/{ctx.max_sessions}).", session_id=sid, work_id=rec.work_id,
                       cwd=rec.cwd, worktree=str(worktree.path) if worktree else None,
                       branch=worktree.branch if worktree else None, url=session_url(ctx.server, sid),
                       active=ctx.active_count)
        if rec.workspace is not None:
            for warning in rec.workspace.warnings:
                ctx.sink.event("warning", f"Session {shown_id(sid)}: {warning}", session_id=sid)

    # ---- refusing ---------------------------------------------------------------------------------

    async def refuse(self, work: WorkItem, sid: str, why: str) -> None:
        self._ctx.sink.event("session_failed", f"Session {shown_id(sid)} cannot start: {why}", session_id=sid,
                             reason=why)
        await self._calls.release(work.id)

    async def refuse_for_good(self, work: WorkItem, secret: WorkSecret, sid: str, why: str) -> None:
        """A runner cannot prepare the session (a refused source, a failed clone): retrying would
        fail the same way, so tell the session why, stop its work for good and archive it."""
        self._ctx.completed_work.add(work.id)
        self._ctx.sink.event("session_failed", f"Session {shown_id(sid)} cannot start: {why}", session_id=sid,
                             reason=why)
        with contextlib.suppress(TetherError, ValueError):
            transport = await self._transport(secret, sid)
            await report_failure(transport, f"The runner could not start this session: {why}")
        await self._calls.stop_work(work.id, force=True)
        if await self._calls.archive(to_compat_session_id(sid), "start_failed"):
            self._calls.archived(sid)

    # ---- run and end ------------------------------------------------------------------------------

    async def _run(self, rec: SessionRecord) -> None:
        """One session from start to clean-up (runs in the sessions task group)."""
        o = self._ctx.options
        async with asyncio.TaskGroup() as tg:
            title = tg.create_task(self._maintenance.title_loop(rec), name=f"title-{rec.key}")
            end = await run_session(rec, o.session_timeout_s, o.timeout_words)
            title.cancel()
        try:
            await self._ended(rec, end)
        except Exception:
            log.exception("clean-up of session %s failed", rec.session_id)

    async def _ended(self, rec: SessionRecord, end: SessionEnd) -> None:
        ctx, key = self._ctx, rec.key
        ctx.sessions.pop(key, None)
        self._maintenance.forget(key)
        ctx.awaiting_redispatch.discard(key)
        ctx.wake.set()  # capacity wake: a queued session starts now, not after the next interval
        ctx.idle_state()
        _report_end(ctx, rec, end)
        if ctx.tearing_down:
            return  # the teardown stops the work, removes the worktree and archives, in its order
        ctx.closing.add(key)
        try:
            await self._calls.stop_work(rec.work_id, force=False)
            ctx.completed_work.add(rec.work_id)
            await self._calls.remove_work_dirs(rec)
            if ctx.options.multi_session:
                reason = "session_timeout" if rec.timed_out else "session_ended"
                if await self._calls.archive(ctx.to_archive.pop(key, to_compat_session_id(rec.session_id)), reason):
                    self._calls.archived(rec.session_id)
            else:
                ctx.request_shutdown("the session ended")
        finally:
            ctx.closing.discard(key)


def _report_end(ctx: BridgeContext, rec: SessionRecord, end: SessionEnd) -> None:
    fields: dict[str, Any] = dict(session_id=rec.session_id, work_id=rec.work_id, status=end.status,
                                  exit_code=end.exit_code, reason=end.reason, stderr_tail=list(end.stderr_tail),
                                  activities=list(end.activities), title=end.title, active=ctx.active_count)
    why = f": {end.reason}" if end.reason else ""
    ctx.sink.event("session_ended", f"Session {shown_id(rec.session_id)} {end.status}{why}.", **fields)


async def report_failure(transport: SessionTransport, message: str) -> None:
    """Write one error ``result`` to the session (what a client shows as the turn's failure), then
    close the transport."""
    runner = asyncio.create_task(transport.run(), name="report-failure")
    try:
        if await transport.wait_connected(15.0):
            transport.write({"type": "result", "subtype": "error_during_execution", "is_error": True,
                             "errors": [message], "result": message, "duration_ms": 0, "num_turns": 0,
                             "session_id": "", "uuid": str(uuid.uuid4())})
            await transport.flush(10.0)
    finally:
        await transport.close(2.0)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
