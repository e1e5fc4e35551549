"""The agent process of one session: spawn, stdin writer, stdout lines, stderr tail, stop.

The agent is the stock ``claude`` CLI or ``tether agent``, both started the same way
(docs/protocol.md §5)::

    <agent> -p --input-format stream-json --output-format stream-json --verbose
            --replay-user-messages --permission-prompt-tool stdio
            [--include-partial-messages] [--permission-mode M] [--model M]

The agent never sees a session credential: the variables that carry one are removed
from its environment. Its stdout is split into lines by
:class:`~tether.protocol.line_splitter.LineSplitter` (lines over ``max_line_bytes`` are skipped and
reported, never buffered); its stdin is fed from a bounded queue by one writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from tether.protocol.line_splitter import LineSplitter, Oversize, Piece

log = logging.getLogger("tether.bridge.agent")

# Variables that would hand the agent a session or bridge credential (docs/protocol.md §5).
CREDENTIAL_ENV: Final = (
    "CLAUDE_CODE_SESSION_ACCESS_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_WEBSOCKET_AUTH_FILE_DESCRIPTOR",
    "CLAUDE_SESSION_INGRESS_TOKEN_FILE",
    "TETHER_TOKEN",
)
STDERR_TAIL: Final = 10
_READ_CHUNK: Final = 1 << 16
_DRAIN_WARN_AFTER: Final = 30.0
_STDERR_LINE_BYTES: Final = 8 << 10


@dataclass(frozen=True)
class AgentSpec:
    """How to start the agent: ``command`` is the executable and its leading arguments
    (``["claude"]``, ``[sys.executable, "-m", "tether.cli.main", "agent"]``)."""

    command: Sequence[str]
    cwd: str
    include_partial_messages: bool = False
    permission_mode: str | None = None
    model: str | None = None
    env: Mapping[str, str] | None = None  # added to (a cleaned copy of) this process's environment
    extra_args: Sequence[str] = ()
    """After the bridge's own flags (a runner's ``claude_code_args``, ``--mcp-config``, ``--settings``)."""
    wrapper: Callable[[list[str]], list[str]] | None = None
    """Wraps the whole command line (a runner's bubblewrap sandbox)."""
    preexec: Callable[[], None] | None = None
    """Runs in the child before the agent does (a runner's resource limits)."""

    def argv(self) -> list[str]:
        if not self.command:
            raise ValueError("the agent command is empty")
        argv = [
            *self.command, "-p", "--input-format", "stream-json", "--output-format", "stream-json",
            "--verbose", "--replay-user-messages", "--permission-prompt-tool", "stdio",
        ]
        if self.include_partial_messages:
            argv.append("--include-partial-messages")
        if self.permission_mode:
            argv += ["--permission-mode", self.permission_mode]
        if self.model:
            argv += ["--model", self.model]
        argv += self.extra_args
        return self.wrapper(argv) if self.wrapper is not None else argv

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
        env.update(self.env or {})
        for name in CREDENTIAL_ENV:
            env.pop(name, None)
        return env


class AgentProcess:
    """One running agent. Call :meth:`start`, run :meth:`write_loop` and :meth:`stderr_loop`
    as tasks, iterate :meth:`stdout_lines`, and end with :meth:`end_input` / :meth:`terminate`."""

    def __init__(self, spec: AgentSpec, *, max_line_bytes: int = 1 << 20, stdin_capacity: int = 1000) -> None:
        self.spec = spec
        self._max_line_bytes = max_line_bytes
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue(stdin_capacity)
        self._proc: asyncio.subprocess.Process | None = None
        self._stdin_open = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.killed_by_host = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    @property
    def accepting_input(self) -> bool:
        return self._stdin_open

    async def start(self) -> None:
        """Spawn the agent; raises ``OSError`` when it cannot be started."""
        argv = self.spec.argv()
        self._proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.spec.cwd, env=self.spec.environment(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # the bridge, not the terminal, decides when the agent stops
            preexec_fn=self.spec.preexec,
        )
        self._stdin_open = True
        log.info("agent started: pid %s, %s", self._proc.pid, " ".join(argv))

    def _process(self) -> asyncio.subprocess.Process:
        if self._proc is None:
            raise RuntimeError("the agent was not started")
        return self._proc

    # -- stdin -------------------------------------------------------------------------

    async def send(self, message: Mapping[str, Any]) -> bool:
        """Queue one message for the agent's stdin (waits while the queue is full).
        False when the agent no longer takes input."""
        if not self._stdin_open:
            return False
        await self._stdin.put(orjson.dumps(message) + b"\n")
        return True

    def end_input(self) -> None:
        """Close the agent's stdin after what is queued (end of input: the agent finishes and exits)."""
        if not self._stdin_open:
            return
        self._stdin_open = False
        try:
            self._stdin.put_nowait(None)
        except asyncio.QueueFull:
            self._close_stdin()

    def _close_stdin(self) -> None:
        stdin = self._process().stdin
        if stdin is not None:
            with contextlib.suppress(Exception):
                stdin.close()

    async def write_loop(self) -> None:
        """Feed queued lines to the agent's stdin until input ends or the pipe breaks."""
        stdin = self._process().stdin
        assert stdin is not None
        try:
            while True:
                line = await self._stdin.get()
                if line is None:
                    break
                stdin.write(line)
                while True:
                    try:
                        async with asyncio.timeout(_DRAIN_WARN_AFTER):
                            await stdin.drain()
                        break
                    except TimeoutError:
                        log.warning("agent pid %s has not read its stdin for %.0f s", self.pid, _DRAIN_WARN_AFTER)
        except (BrokenPipeError, ConnectionResetError):
            log.info("agent pid %s closed its stdin", self.pid)
        finally:
            self._stdin_open = False
            self._close_stdin()

    # -- stdout / stderr -------------------------------------------------------------

    async def stdout_lines(self) -> AsyncIterator[Piece]:
        """Complete stdout lines (bytes, no newline) and :class:`Oversize` reports, until EOF."""
        stdout = self._process().stdout
        assert stdout is not None
        splitter = LineSplitter(self._max_line_bytes)
        while True:
            chunk = await stdout.read(_READ_CHUNK)
            pieces = splitter.feed(chunk) if chunk else splitter.close()
            for piece in pieces:
                yield piece
            if not chunk:
                return

    async def stderr_loop(self) -> None:
        """Keep the last lines of stderr (the failure message) and log them."""
        stderr = self._process().stderr
        assert stderr is not None
        splitter = LineSplitter(_STDERR_LINE_BYTES)
        while True:
            chunk = await stderr.read(_READ_CHUNK)
            for piece in splitter.feed(chunk) if chunk else splitter.close():
                text = (f"<a {piece.size}-byte line>" if isinstance(piece, Oversize)
                        else piece.decode("utf-8", "replace").rstrip())
                if text:
                    self.stderr_tail.append(text)
                    log.info("agent pid %s stderr: %s", self.pid, text)
            if not chunk:
                return

    # -- exit --------------------------------------------------------------------------

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, waiting at most ``timeout`` seconds (None: until it exits)."""
        proc = self._process()
        if timeout is None:
            return await proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await proc.wait()
        return proc.returncode

    async def terminate(self, grace: float) -> int | None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL the agent's process group."""
        proc = self._process()
        if proc.returncode is not None:
            return proc.returncode
        self.killed_by_host = True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        code = await self.wait(grace)
        if code is not None:
            return code
        log.warning("agent pid %s ignored SIGTERM for %.0f s; killing it", proc.pid, grace)
        kill_group(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return await self.wait(5.0)


def kill_group(pid: int | None) -> None:
    """SIGKILL the process group an agent leads (it runs in its own session); gone already is fine."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
