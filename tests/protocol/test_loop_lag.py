from __future__ import annotations

import pytest

from tether.protocol.loop_lag import LagMeter, Stall


def test_on_time_wake_ups_are_no_stall() -> None:
    meter = LagMeter(0.02, 0.1)
    due = meter.arm(10.0, 0.0)
    assert due == pytest.approx(10.02)
    assert meter.woke(10.021, 0.0) is None
    assert meter.worst_s == pytest.approx(0.001) and meter.stalls == 0


def test_a_late_wake_up_over_the_threshold_is_a_stall() -> None:
    meter = LagMeter(0.02, 0.1)
    meter.arm(0.0, 5.0)
    stall = meter.woke(0.27, 5.0)
    assert stall == Stall(at=0.27, late_s=pytest.approx(0.25), runnable_s=0.0, stall_s=pytest.approx(0.25))
    assert meter.stalls == 1 and meter.worst_s == pytest.approx(0.25)


def test_time_the_os_kept_the_thread_waiting_is_not_the_servers() -> None:
    meter = LagMeter(0.02, 0.1)
    meter.arm(0.0, 1.0)
    # 300 ms late, of which 250 ms the thread was ready but not scheduled
    assert meter.woke(0.32, 1.25) is None
    assert meter.worst_late_s == pytest.approx(0.3) and meter.worst_s == pytest.approx(0.05)
    meter.arm(1.0, 1.25)
    stall = meter.woke(1.42, 1.30)  # 400 ms late, 50 ms of it runnable: a 350 ms stall
    assert stall is not None and stall.stall_s == pytest.approx(0.35) and stall.runnable_s == pytest.approx(0.05)


def test_runnable_time_never_exceeds_the_lateness() -> None:
    meter = LagMeter(0.02, 0.1)
    meter.arm(0.0, 0.0)
    assert meter.woke(0.03, 9.0) is None  # waits before the due time do not make a stall negative
    assert meter.worst_s == 0.0


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        LagMeter(0, 0.1)
    with pytest.raises(RuntimeError):
        LagMeter(0.02, 0.1).woke(1.0, 0.0)
