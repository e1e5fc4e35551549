"""The loop-stall monitor in a real event loop: it sees a blocked loop, and where it was blocked."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time

import pytest
from tests.support.waiting import eventually

from tether.server.loopwatch import LoopWatch
from tether.server.metrics import Metrics

pytestmark = pytest.mark.anyio


def block_the_loop_for(seconds: float) -> None:
    """What a stall is: the loop thread busy with work and not returning to the loop (counted
    in the thread's CPU time, so the same stall on a loaded machine as on an idle one)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(1000))


async def test_a_blocked_loop_is_measured_and_located(tmp_path: pathlib.Path) -> None:
    report = tmp_path / "stalls.jsonl"
    metrics = Metrics()
    watch = LoopWatch(0.01, 0.1, metrics, report)
    task = asyncio.create_task(watch.run())
    try:
        await eventually(lambda: watch._due is not None, 5, message="the monitor to arm")
        block_the_loop_for(0.3)
        await eventually(lambda: watch.meter.stalls >= 1, 5, message="the stall to be recorded")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [line] = report.read_text().splitlines()
    stall = json.loads(line)
    assert stall["stall_ms"] >= 150 and stall["late_ms"] >= stall["stall_ms"]
    assert "block_the_loop_for" in (stall["stack"] or ""), stall["stack"]
    assert "tether_loop_stalls_total 1" in metrics.render()
    assert watch.meter.worst_s >= 0.15


async def test_an_idle_loop_has_no_stall(tmp_path: pathlib.Path) -> None:
    watch = LoopWatch(0.01, 0.1, Metrics(), tmp_path / "stalls.jsonl")
    task = asyncio.create_task(watch.run())
    ticks = 0

    def counted() -> bool:
        nonlocal ticks
        ticks += 1
        return ticks > 20

    try:
        await eventually(counted, 5, interval=0.01, message="twenty ticks")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert watch.meter.stalls == 0 and not (tmp_path / "stalls.jsonl").exists()
