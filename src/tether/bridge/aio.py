"""Small asyncio pieces both bridges (the standalone one and the REPL's) use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["guarded", "wait_event"]


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
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


async def guarded(work: Awaitable[None], what: str, fail: Callable[[str], None], log: logging.Logger) -> None:
    """Run a background loop of a bridge: if it breaks, the bridge fails (and tears down in
    order) instead of the error tearing the task group apart. Cancellation passes through."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("the %s failed", what)
        fail(f"internal error in the {what}: {exc!r}")
