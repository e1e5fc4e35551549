"""The asyncio helpers both bridges share (tether.bridge.aio)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tether.bridge.aio import guarded, wait_event

pytestmark = pytest.mark.anyio


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, None) is True  # no limit: returns when it is set
    assert await wait_event(event, 0.0) is True  # already set: at once


async def test_a_broken_loop_fails_its_bridge_and_cancellation_passes() -> None:
    failures: list[str] = []

    async def broken() -> None:
        raise RuntimeError("boom")

    await guarded(broken(), "poll loop", failures.append, logging.getLogger("test"))
    assert failures == ["internal error in the poll loop: RuntimeError('boom')"]

    running = asyncio.Event()

    async def forever() -> None:
        running.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(guarded(forever(), "heartbeats", failures.append, logging.getLogger("test")))
    await asyncio.wait_for(running.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(failures) == 1
