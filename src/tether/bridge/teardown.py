"""The standalone bridge's ordered shutdown (docs/protocol.md §11.8).

:func:`~tether.protocol.bridge_policy.plan_teardown` decides the steps (stop polling → SIGTERM the
agents, SIGKILL after the grace → remove worktrees → ``stopWork(force)`` → archive → deregister →
clear the pointer; a crash-like end keeps the session resumable, a requested stop keeps the
directory's session for ``--continue``); :class:`Teardown` carries them out, saying each one.
"""

from __future__ import annotations

import asyncio

from tether.bridge import pointer as pointers
from tether.bridge.agent_process import kill_group
from tether.bridge.context import BridgeContext, ServerCalls
from tether.bridge.hosting import Hosting
from tether.bridge.spawner import SessionRecord
from tether.bridge.status import session_url
from tether.errors import TetherError
from tether.protocol.bridge_policy import SHUTDOWN_GRACE_S, ActiveWork, TeardownStep, plan_teardown
from tether.protocol.ids import id_body, to_compat_session_id

__all__ = ["KILL_FLUSH_S", "Teardown", "step_words"]

KILL_FLUSH_S = 15.0
"""Beyond the SIGTERM grace: the host's own SIGKILL and the flush of the agent's last output."""
KILLED_WAIT_S = 10.0
"""How long sessions whose agents were killed get to finish their clean-up."""


class Teardown:
    def __init__(self, ctx: BridgeContext, calls: ServerCalls, hosting: Hosting) -> None:
        self._ctx = ctx
        self._calls = calls
        self._hosting = hosting

    async def run(self) -> None:
        """Plan the teardown for what runs now and carry it out step by step."""
        ctx = self._ctx
        ctx.tearing_down = True
        if ctx.state != "failed":
            ctx.state = "stopping"
        records = list(ctx.sessions.values())
        ctx.teardown_records = records
        keep = self._session_to_keep()
        plan = plan_teardown(
            active=[ActiveWork(r.session_id, r.work_id, str(r.worktree.path) if r.worktree else
                               str(r.workspace.path) if r.workspace else None) for r in records],
            archive=[*(to_compat_session_id(r.session_id) for r in records), *ctx.to_archive.values()],
            environment_id=ctx.environment_id, pointer=ctx.pointer_written,
            grace_s=ctx.options.shutdown_grace_s, keep_resumable=ctx.keep_resumable, keep_session=keep,
            superseded=ctx.superseded)
        for step in plan:
            ctx.sink.event("teardown", step_words(step), step=step.action, targets=list(step.targets))
            await self._run_step(step, records)
        if (ctx.keep_resumable or keep) and ctx.initial_session_id:
            ctx.sink.event("resumable", f"Session {ctx.initial_session_id} stays open: resume it with "
                           f"`{ctx.options.resume_command}`.", session_id=ctx.initial_session_id,
                           url=session_url(ctx.server, ctx.initial_session_id))

    def _session_to_keep(self) -> str | None:
        """On a requested stop (Ctrl-C, SIGTERM, Ctrl-D), the session this directory's pointer
        names stays open for ``--continue`` (issue #10 item 3); when the session ended, or the
        bridge failed, it is archived as usual."""
        ctx = self._ctx
        initial = ctx.initial_session_id
        if (initial is None or not ctx.pointer_written or ctx.state == "failed"
                or ctx.shutdown_reason in ("the session ended", "failed")):
            return None
        return initial if id_body(initial) in ctx.to_archive else None

    async def _run_step(self, step: TeardownStep, records: list[SessionRecord]) -> None:
        match step.action:
            case "terminate_agents":
                await self._terminate(step, records)
            case "remove_worktrees":
                for rec in records:
                    await self._calls.remove_work_dirs(rec)
            case "stop_work":
                await asyncio.gather(*(self._calls.stop_work(w, force=True) for w in step.targets))
            case "archive":
                await self._archive(step.targets)
            case "deregister":
                await self._deregister()
            case "clear_pointer":
                pointers.clear_pointer(self._ctx.options.directory, self._ctx.options.home)

    async def _terminate(self, step: TeardownStep, records: list[SessionRecord]) -> None:
        """SIGTERM every agent; one still running after the grace (and the host's own SIGKILL) is
        killed here. Sessions that ended a moment ago and are cleaning up are waited for too."""
        for rec in records:
            rec.host.stop()
        tasks = set(self._hosting.tasks)
        if not tasks:
            return
        deadline = (step.deadline_s or SHUTDOWN_GRACE_S) + KILL_FLUSH_S
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for rec in records:
            if rec.task in pending:
                kill_group(rec.host.pid)
        if pending:
            await asyncio.wait(pending, timeout=KILLED_WAIT_S)

    async def _archive(self, session_ids: tuple[str, ...]) -> None:
        ctx = self._ctx
        reason = ("bridge_failed" if ctx.state == "failed" else
                  "session_ended" if ctx.shutdown_reason == "the session ended" else "bridge_stopped")
        results = await asyncio.gather(*(self._calls.archive(s, reason) for s in session_ids))
        for sid, ok in zip(session_ids, results, strict=True):
            if ok:
                self._calls.archived(sid)

    async def _deregister(self) -> None:
        ctx = self._ctx
        assert ctx.environment_id is not None
        try:
            await ctx.api.deregister_environment(ctx.environment_id)
            ctx.sink.event("deregistered", f"Environment {ctx.environment_id} deregistered.",
                           environment_id=ctx.environment_id)
        except TetherError as exc:
            ctx.sink.event("warning", f"Could not deregister {ctx.environment_id}: {exc.message}")


def step_words(step: TeardownStep) -> str:
    """What the terminal says as the step begins."""
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
