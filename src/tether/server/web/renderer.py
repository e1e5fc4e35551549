"""Runs ``POST /web/render`` work off the event loop (issue #11: one request could freeze the server).

Rendering is CPU work in pure Python (markdown-it-py, Pygments, diff-match-patch) and nh3
(which releases the GIL). It runs in one worker thread, so the event loop keeps getting the
GIL every switch interval (5 ms) however long a render takes, and render work never takes more
than one core's share from the loop. Bounded three ways:

* each item by size (render.py: over the limits it renders as "", the browser keeps its text);
* each request by a deadline (``RENDER_TIME_S`` from when its turn comes; unrendered items → "");
* the queue: at most ``MAX_PENDING`` requests wait or run; more get 429 with Retry-After, which
  the web client retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from tether.errors import RateLimited
from tether.server.web.render import render_items

RENDER_TIME_S: Final = 2.0
MAX_PENDING: Final = 8


class Renderer:
    def __init__(self, max_pending: int = MAX_PENDING, time_limit_s: float = RENDER_TIME_S) -> None:
        self.max_pending = max_pending
        self.time_limit_s = time_limit_s
        self.pending = 0
        self._pool: ThreadPoolExecutor | None = None

    async def render(self, items: Sequence[Any]) -> list[str]:
        if self.pending >= self.max_pending:
            raise RateLimited("The server is busy rendering for others; retry in a second.", retry_after=1)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-render")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, list(items))
        finally:
            self.pending -= 1

    def _run(self, items: list[Any]) -> list[str]:
        # the deadline starts when this request's turn comes, not when it was queued
        return render_items(items, deadline=time.monotonic() + self.time_limit_s)

    def close(self) -> None:
        """At shutdown: queued renders are dropped; one in progress ends by its own deadline."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
