"""Async condition waits for adapter tests (poll a predicate; never sleep for a fixed time)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
                     message: str = "condition") -> T:
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(interval)


async def eventually_awaited(probe: Callable[[], Awaitable[T]], timeout: float = 15.0, interval: float = 0.05) -> T:
    """Return the first truthy value of ``await probe()`` (a request to a server, say); fail
    (TimeoutError) after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(interval)
