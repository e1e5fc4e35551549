"""The loop-stall monitor: how long the event loop was ever blocked while serving.

Off by default (``Config.loop_monitor_s = 0``); the test suite turns it on for every server it
starts and fails a test during which the loop was blocked longer than the threshold
(tests/conftest.py). It starts once the server is ready — imports, migrations and
``gc.freeze`` are behind it — and stops when shutdown begins.

Each wake-up of a small task is compared with when it was due (:class:`~tether.protocol.loop_lag.LagMeter`
decides, minus the time the OS kept the ready thread off the CPU). A stall above the threshold
is logged, counted in /metrics (``tether_loop_stalls_total``, ``tether_loop_stall_max_seconds``)
and appended to ``loop-stalls.jsonl`` in the data directory with the loop thread's stack as a
timer signal caught it during the stall (what was running), so a test failure says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import signal
import threading
import time
import traceback
from types import FrameType

from tether.protocol.loop_lag import LagMeter, Stall
from tether.server.metrics import Metrics

log = logging.getLogger("tether.server.loop")
REPORT_NAME = "loop-stalls.jsonl"
MAX_REPORTS = 200  # lines written per process: a stuck loop must not fill the disk


class LoopWatch:
    def __init__(self, interval_s: float, threshold_s: float, metrics: Metrics,
                 report: pathlib.Path | None = None) -> None:
        self.meter = LagMeter(interval_s, threshold_s)
        self.metrics = metrics
        self.report = report
        self._schedstat: int | None = None
        self._due: float | None = None  # when the monitor should wake next (loop clock = monotonic)
        self._stack: tuple[float, str] | None = None  # (due, stack) seen by the sampler during a stall
        self._written = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._open_schedstat()
        sampling = self._start_sampling()
        try:
            while True:
                self._due = self.meter.arm(loop.time(), self._runnable_s())
                await asyncio.sleep(self.meter.interval_s)
                due = self._due
                stall = self.meter.woke(loop.time(), self._runnable_s())
                if stall is not None:
                    self._record(stall, due)
        finally:
            self._due = None
            if sampling:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
            if self._schedstat is not None:
                os.close(self._schedstat)
                self._schedstat = None

    # ---- the loop thread's run-queue wait (Linux; elsewhere nothing is subtracted) ---------------
    def _open_schedstat(self) -> None:
        with contextlib.suppress(OSError):
            self._schedstat = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)

    def _runnable_s(self) -> float:
        if self._schedstat is None:
            return 0.0
        try:
            fields = os.pread(self._schedstat, 128, 0).split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    # ---- what was running: sampled by a timer signal while the loop is late -------------------
    # Not from another thread: a thread must take the GIL to look, and on a loaded machine a
    # thread holding the GIL while the OS has not scheduled it stalls the loop it is watching.
    # A signal handler runs in the loop's own thread, between two bytecodes of whatever it is
    # doing: during Python work that is the culprit itself, after a blocking call its caller.
    def _start_sampling(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        period = self.meter.threshold_s / 2
        signal.signal(signal.SIGALRM, self._sample)
        signal.setitimer(signal.ITIMER_REAL, period, period)
        return True

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        due = self._due
        if due is None or frame is None or time.monotonic() - due < self.meter.threshold_s / 2:
            return
        if self._stack is None or self._stack[0] != due:
            self._stack = (due, "".join(traceback.format_stack(frame)[-15:]))

    def _record(self, stall: Stall, due: float | None) -> None:
        self.metrics.inc("loop_stalls_total")
        self.metrics.gauge("loop_stall_max_seconds", round(self.meter.worst_s, 4))
        stack = self._stack[1] if self._stack is not None and self._stack[0] == due else None
        log.warning("event loop blocked for %.0f ms (%.0f ms late, %.0f ms waiting for a CPU)",
                    stall.stall_s * 1000, stall.late_s * 1000, stall.runnable_s * 1000)
        if self.report is None or self._written >= MAX_REPORTS:
            return
        self._written += 1
        line = json.dumps({"at": time.time(), "stall_ms": round(stall.stall_s * 1000, 1),
                           "late_ms": round(stall.late_s * 1000, 1),
                           "runnable_ms": round(stall.runnable_s * 1000, 1), "stack": stack})
        with contextlib.suppress(OSError), open(self.report, "a", encoding="utf-8") as out:
            out.write(line + "\n")
