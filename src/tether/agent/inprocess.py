"""``tether agent``'s loop running inside another program's event loop, behind the interface the
session host drives an agent process with (``tether agent --sdk-url``: the host and the agent
in one process, docs/protocol.md §5).

Instead of stdin/stdout pipes, two in-memory queues: :meth:`InProcessAgent.send` feeds the
:class:`~tether.agent.session.AgentSession` the same numbered lines it would read from stdin,
and :meth:`InProcessAgent.stdout_lines` yields the lines it would print. The session's exit
code is the "process" return code; :meth:`InProcessAgent.terminate` stops it like a SIGTERM
(the turn is interrupted, queued prompts are dropped) and cancels it after ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import orjson

from tether.agent.backends.base import ModelBackend
from tether.agent.options import AgentOptions
from tether.agent.stdio import Framed, Line, Output
from tether.agent.tools import default_tools

log = logging.getLogger("tether.agent.inprocess")

STDERR_TAIL: Final = 10


class _QueueOutput(Output):
    """An :class:`Output` whose writer hands each encoded line to a queue instead of stdout."""

    def __init__(self, sink: asyncio.Queue[bytes | None], maxsize: int) -> None:
        # never written (run() hands lines to the sink); not sys.stdout, which a host may have replaced
        super().__init__(stream=io.BytesIO(), maxsize=maxsize)
        self._sink = sink

    async def run(self) -> None:
        try:
            while (data := await self._queue.get()) is not None:
                await self._sink.put(data.rstrip(b"\n"))
        finally:
            self._closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self._sink.put_nowait(None)


class InProcessAgent:
    """One agent session in this process; implements the session host's ``AgentHandle``."""

    def __init__(self, opts: AgentOptions, backend: ModelBackend, version: str, *,
                 stdin_capacity: int = 1000, output_capacity: int = 1000) -> None:
        self.opts = opts
        self.backend = backend
        self.version = version
        self._stdin: asyncio.Queue[Framed | None] = asyncio.Queue(stdin_capacity)
        self._stdout: asyncio.Queue[bytes | None] = asyncio.Queue(output_capacity + 1)
        self._output_capacity = output_capacity
        self._line = 0
        self._input_open = False
        self._task: asyncio.Task[int] | None = None
        self._returncode: int | None = None
        self._session: Any = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.killed_by_host = False

    @property
    def pid(self) -> int | None:
        return os.getpid() if self._task is not None else None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def accepting_input(self) -> bool:
        return self._input_open

    async def start(self) -> None:
        from tether.agent.session import AgentSession

        if self._task is not None:
            raise RuntimeError("the agent was already started")
        output = _QueueOutput(self._stdout, self._output_capacity)
        self._session = AgentSession(self.opts, self.backend, default_tools(), output, self.version)
        self._input_open = True
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tether-agent")

    async def _frames(self) -> AsyncIterator[Framed]:
        while (frame := await self._stdin.get()) is not None:
            yield frame

    async def _run(self) -> int:
        code = 1
        try:
            code = int(await self._session.run(self._frames()))
        except asyncio.CancelledError:
            code = 128 + signal.SIGKILL
            raise
        except Exception as exc:  # the loop failed: reported like a crashed process
            self.stderr_tail.append(f"internal error: {exc!r}")
            log.exception("the agent loop failed")
        finally:
            self._input_open = False
            self._returncode = code
            with contextlib.suppress(asyncio.QueueFull):
                self._stdout.put_nowait(None)
        return code

    # -- stdin ---------------------------------------------------------------------------

    async def send(self, message: Mapping[str, Any]) -> bool:
        if not self._input_open:
            return False
        self._line += 1
        await self._stdin.put(Line(self._line, orjson.dumps(message)))
        return True

    def end_input(self) -> None:
        if not self._input_open:
            return
        self._input_open = False
        try:
            self._stdin.put_nowait(None)
        except asyncio.QueueFull:
            asyncio.get_running_loop().create_task(self._stdin.put(None))

    async def write_loop(self) -> None:
        """Nothing to pump: :meth:`send` hands lines over directly."""

    async def stderr_loop(self) -> None:
        """The loop writes its warnings to this process's stderr."""

    # -- stdout ----------------------------------------------------------------------------

    async def stdout_lines(self) -> AsyncIterator[bytes]:
        while (line := await self._stdout.get()) is not None:
            yield line
        self._stdout.put_nowait(None)  # later readers end too

    # -- exit --------------------------------------------------------------------------------

    async def wait(self, timeout: float | None = None) -> int | None:
        if self._task is None:
            raise RuntimeError("the agent was not started")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._task)
        return self._returncode

    async def terminate(self, grace: float) -> int | None:
        """Stop like SIGTERM; cancel the loop if it has not ended after ``grace`` seconds."""
        if self._task is None or self._task.done():
            return self._returncode
        self.killed_by_host = True
        self._session.stop(128 + signal.SIGTERM)
        code = await self.wait(grace)
        if code is not None:
            return code
        log.warning("the agent loop did not stop within %.0f s; cancelling it", grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        return self._returncode
