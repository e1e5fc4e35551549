"""Which agent runs a session, and one running session of the bridge (docs/protocol.md §5, §11.3).

* :func:`choose_agent` turns ``--agent claude|tether|<command>`` into an :class:`AgentChoice`
  (default: the stock ``claude`` when it is on PATH, else ``tether agent``).
* :class:`SessionRecord` is one session the bridge hosts: its current work id and worker token,
  the :class:`~tether.bridge.session_host.SessionHost`, the worktree, the watchdog deadline.
* :func:`run_session` runs the host with the per-session timeout watchdog and returns the
  outcome (never raises for the session's own trouble).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tether.bridge.session_host import SessionHost, SessionOutcome
from tether.bridge.status import SessionView, session_url
from tether.bridge.workspace import Workspace
from tether.bridge.worktree import Worktree
from tether.protocol.bridge_policy import session_deadline
from tether.protocol.ids import id_body

log = logging.getLogger("tether.bridge.spawner")

TETHER_AGENT: Final = (sys.executable, "-m", "tether.cli.main", "agent")
UNTITLED: Final = "Untitled session"  # as the web client says


class AgentNotFound(Exception):
    pass


@dataclass(frozen=True)
class AgentChoice:
    command: tuple[str, ...]
    kind: str
    """``claude`` (the stock CLI), ``tether`` (``tether agent``) or ``custom``."""
    description: str

    @property
    def worker_type(self) -> str:
        """``metadata.worker_type`` at registration."""
        return {"claude": "claude_code", "tether": "tether_agent"}.get(self.kind, "custom")

    def with_debug_file(self, debug_file: pathlib.Path | None, session_id: str) -> tuple[str, ...]:
        """The stock CLI gets ``--debug-file <stem>-<session><ext>`` when the bridge has one."""
        if debug_file is None or self.kind != "claude":
            return self.command
        name = f"{debug_file.stem}-{id_body(session_id)}{debug_file.suffix}"
        return (*self.command, "--debug-file", str(debug_file.with_name(name)))


def choose_agent(spec: str | None, *, which: Callable[[str], str | None] = shutil.which) -> AgentChoice:
    """``None`` → ``claude`` when on PATH, else ``tether agent``; ``claude``; ``tether``; or a
    command line (split like a shell would) whose first word must be an executable."""
    if spec is None:
        found = which("claude")
        if found:
            return AgentChoice((found,), "claude", f"the stock claude CLI ({found})")
        return AgentChoice(TETHER_AGENT, "tether", "tether agent")
    if spec == "claude":
        found = which("claude")
        if not found:
            raise AgentNotFound("`claude` is not on PATH. Install Claude Code, or pass --agent tether.")
        return AgentChoice((found,), "claude", f"the stock claude CLI ({found})")
    if spec == "tether":
        return AgentChoice(TETHER_AGENT, "tether", "tether agent")
    words = shlex.split(spec)
    if not words:
        raise AgentNotFound("--agent is empty.")
    if words[:2] == ["tether", "agent"]:
        return AgentChoice((*TETHER_AGENT, *words[2:]), "tether", f"tether agent {shlex.join(words[2:])}".strip())
    exe = words[0]
    found = exe if os.sep in exe and os.access(exe, os.X_OK) else which(exe)
    if not found:
        raise AgentNotFound(f"The agent command {exe!r} was not found (or is not executable).")
    kind = "claude" if os.path.basename(exe) in ("claude", "claude.exe") else "custom"
    return AgentChoice((found, *words[1:]), kind, shlex.join([found, *words[1:]]))


@dataclass
class SessionRecord:
    session_id: str
    """As the work item named it (``session_…`` for v1, ``cse_…`` for v2)."""
    work_id: str
    token: str
    host: SessionHost
    cwd: str
    started_at: float
    """Event-loop time (the watchdog's clock)."""
    started_wall: float
    initial: bool = False
    worktree: Worktree | None = None
    workspace: Workspace | None = None
    server_title: str | None = None
    timed_out: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return id_body(self.session_id)

    def view(self, server: str) -> SessionView:
        host = self.host
        activities = host.activities
        last = activities[-1] if activities else None
        # a finished turn leaves a live session idle (its state says so), not "completed"
        activity = last.summary if last is not None and last.kind != "result" else None
        # the web client's title everywhere: the server's (a --name, a rename, or derived from the
        # first prompt by the same rule as the host's) wins; the host's own until it is known
        title = self.server_title or host.title or UNTITLED
        return SessionView(
            session_id=self.session_id, url=session_url(server, self.session_id), title=title,
            activity=activity, state=host.state, started_at=self.started_wall, cwd=self.cwd,
            worktree=str(self.worktree.path) if self.worktree else str(self.workspace.path) if self.workspace
            else None, pid=host.pid,
        )


@dataclass(frozen=True)
class SessionEnd:
    status: str
    """``completed``, ``failed`` or ``interrupted`` (a watchdog timeout counts as ``failed``)."""
    exit_code: int | None
    reason: str | None
    """Why it failed: the host's error, else the agent's last stderr lines."""
    stderr_tail: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    title: str | None = None


def failure_reason(outcome: SessionOutcome, stderr_tail: Sequence[str], timed_out: bool,
                   timeout_s: float | None, timeout_words: str = "--session-timeout") -> str | None:
    if timed_out:
        return f"the session ran longer than {timeout_words} ({timeout_s:g} s) and was stopped"
    if outcome.status != "failed":
        return None
    if stderr_tail:
        return " | ".join(stderr_tail[-3:])
    return outcome.error or f"the agent exited with status {outcome.exit_code}"


async def run_session(rec: SessionRecord, timeout_s: float | None,
                      timeout_words: str = "--session-timeout") -> SessionEnd:
    """Run the host until the session ends; a watchdog stops it after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = session_deadline(rec.started_at, timeout_s)

    async def watchdog() -> None:
        assert deadline is not None
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        log.warning("session %s: timed out after %g s; stopping it", rec.session_id, timeout_s)
        rec.timed_out = True
        rec.host.stop(notice=f"Stopped: the session ran longer than {timeout_words} ({timeout_s:g} s).")

    async with asyncio.TaskGroup() as tg:  # the watchdog lives exactly as long as the host runs
        dog = tg.create_task(watchdog(), name=f"watchdog-{rec.key}") if deadline is not None else None
        try:
            outcome = await rec.host.run()
        except Exception as exc:  # a bug in the host must not take the other sessions down
            log.exception("session %s: the session host failed", rec.session_id)
            outcome = SessionOutcome("failed", None, f"internal error in the session host: {exc!r}")
        if dog is not None:
            dog.cancel()
    tail = rec.host.stderr_tail
    status = "failed" if rec.timed_out else outcome.status
    return SessionEnd(
        status=status, exit_code=outcome.exit_code,
        reason=failure_reason(outcome, tail, rec.timed_out, timeout_s, timeout_words),
        stderr_tail=tail, activities=tuple(a.summary for a in rec.host.activities), title=rec.host.title,
    )
