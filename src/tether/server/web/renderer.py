"""Runs ``POST /web/render`` work in a child process (issue #11: one request could freeze the server).

Rendering is CPU work in pure Python (markdown-it-py, Pygments, diff-match-patch). In a thread
it would share the GIL with the event loop, and on a loaded machine the loop then waits for the
GIL whenever the OS has not scheduled the thread holding it (measured here: 100–370 ms stalls
at a load average of 10). In a process of its own it shares nothing: the loop only writes the
request to a pipe and reads the answer. Bounded four ways:

* each item by size (render.py: over the limits it renders as "", the browser keeps its text);
* each request by a deadline the child keeps between items (``RENDER_TIME_S``; the rest → "");
* a child that does not answer within ``KILL_AFTER_S`` is killed (a new one starts on the next
  request) and the request's items come back "";
* the queue: at most ``MAX_PENDING`` requests wait or run; more get 429 with Retry-After, which
  the web client retries.

The child (``python -m tether.server.web.renderer``) reads and writes length-prefixed JSON
frames on stdin/stdout; it starts on the first render and is stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, BinaryIO, Final

import orjson

from tether.errors import RateLimited

log = logging.getLogger("tether.server.render")

RENDER_TIME_S: Final = 2.0
KILL_AFTER_S: Final = 6.0  # the deadline, the longest single item, and a margin for a loaded machine
MAX_PENDING: Final = 8
_HEADER: Final = 4  # bytes of big-endian length before each frame


class Renderer:
    def __init__(self, max_pending: int = MAX_PENDING, time_limit_s: float = RENDER_TIME_S,
                 kill_after_s: float = KILL_AFTER_S) -> None:
        self.max_pending = max_pending
        self.time_limit_s = time_limit_s
        self.kill_after_s = kill_after_s
        self.pending = 0
        self._child: asyncio.subprocess.Process | None = None
        self._turn = asyncio.Lock()  # one request at a time through the child

    async def render(self, items: Sequence[Any]) -> list[str]:
        if self.pending >= self.max_pending:
            raise RateLimited("The server is busy rendering for others; retry in a second.", retry_after=1)
        self.pending += 1
        try:
            async with self._turn:
                return await self._ask(list(items))
        finally:
            self.pending -= 1

    async def _ask(self, items: list[Any]) -> list[str]:
        request = orjson.dumps({"items": items, "time_limit_s": self.time_limit_s})
        try:
            async with asyncio.timeout(self.kill_after_s):
                child = await self._started()
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(len(request).to_bytes(_HEADER, "big") + request)
                await child.stdin.drain()
                size = int.from_bytes(await child.stdout.readexactly(_HEADER), "big")
                answer = orjson.loads(await child.stdout.readexactly(size))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, orjson.JSONDecodeError) as exc:
            log.warning("render process failed (%s); restarting it", type(exc).__name__)
            await self.close()
            return [""] * len(items)  # the browser keeps the plain text
        html = answer.get("html") if isinstance(answer, dict) else None
        if not isinstance(html, list) or len(html) != len(items):
            return [""] * len(items)
        return [h if isinstance(h, str) else "" for h in html]

    async def _started(self) -> asyncio.subprocess.Process:
        if self._child is None or self._child.returncode is not None:
            self._child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tether.server.web.renderer",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return self._child

    async def close(self) -> None:
        """Stop the child (at shutdown, or after it failed); the next render starts a new one."""
        child, self._child = self._child, None
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child.wait(), 5)


# ---- the child --------------------------------------------------------------------------------

def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    return stream.read(int.from_bytes(header, "big"))


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer render requests until the server closes the pipe."""
    from tether.server.web.render import render_items

    while (frame := _read_frame(inp)) is not None:
        request = orjson.loads(frame)
        deadline = time.monotonic() + float(request.get("time_limit_s", RENDER_TIME_S))
        answer = orjson.dumps({"html": render_items(request.get("items") or [], deadline=deadline)})
        out.write(len(answer).to_bytes(_HEADER, "big") + answer)
        out.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
