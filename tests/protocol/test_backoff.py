from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import backoff as b
from tether.protocol.backoff import Backoff


def test_exponential_without_jitter() -> None:
    bo = Backoff(1.0, 30.0)
    delays = [bo.failure(float(i), 0.5).delay for i in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert bo.attempts == 8


def test_success_resets_streak() -> None:
    bo = Backoff(1.0, 30.0)
    bo.failure(0.0, 0.0)
    bo.failure(1.0, 0.0)
    bo.success(2.0)
    assert bo.attempts == 0 and bo.failing_since is None
    d = bo.failure(3.0, 0.0)
    assert d.delay == 1.0 and d.attempt == 1 and d.elapsed == 0.0


def test_symmetric_jitter_extremes() -> None:
    bo = Backoff(1.0, 30.0, 0.25)
    assert bo.failure(0.0, 0.0).delay == pytest.approx(0.75)
    bo.reset()
    assert bo.failure(0.0, 0.5).delay == pytest.approx(1.0)
    bo.reset()
    assert bo.failure(0.0, 0.999999).delay == pytest.approx(1.25, abs=1e-5)


def test_additive_jitter() -> None:
    bo = b.hybrid_post()
    assert bo.failure(0.0, 0.0).delay == 0.5
    assert bo.failure(0.0, 0.5).delay == pytest.approx(1.0 + 0.5)
    for _ in range(10):
        d = bo.failure(0.0, 0.0)
    assert d.delay == 8.0 and not d.give_up


def test_random_object_is_accepted(rnd: random.Random) -> None:
    bo = b.ws_reconnect()
    d = bo.failure(0.0, rnd)
    assert d.delay is not None and 0.75 <= d.delay <= 1.25


def test_random_source_outside_unit_interval_is_rejected() -> None:
    bo = Backoff(1.0, 2.0, 0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        bo.failure(0.0, 1.0)


def test_no_draw_without_jitter() -> None:
    class Exploding:
        def random(self) -> float:
            raise AssertionError("should not draw")

    assert Backoff(1.0, 2.0).failure(0.0, Exploding()).delay == 1.0


def test_gives_up_after_budget_exactly() -> None:
    bo = Backoff(1.0, 30.0, give_up_after=600.0)
    assert bo.failure(100.0, 0.0).delay is not None
    assert bo.failure(699.9, 0.0).delay is not None
    d = bo.failure(700.0, 0.0)
    assert d.give_up and d.reason == "gave_up_budget" and d.elapsed == 600.0
    assert bo.failure(701.0, 0.0).give_up  # stays given up until success/reset


def test_max_attempts() -> None:
    bo = b.subscribe_reconnect()
    results = [bo.failure(float(i), 0.0) for i in range(6)]
    assert [r.delay for r in results[:5]] == [2.0] * 5
    assert results[5].give_up and results[5].reason == "gave_up_attempts"


def test_sleep_detection_resets_budget() -> None:
    bo = b.ws_reconnect()
    bo.failure(0.0, 0.5)
    bo.failure(30.0, 0.5)
    d = bo.failure(30.0 + 60.0, 0.5)  # exactly the threshold: not a sleep
    assert not d.slept and d.attempt == 3
    d = bo.failure(90.0 + 60.5, 0.5)
    assert d.slept and d.attempt == 1 and d.delay == pytest.approx(1.0) and d.elapsed == 0.0


def test_sleep_rescues_an_exhausted_budget() -> None:
    bo = Backoff(1.0, 30.0, give_up_after=100.0, sleep_threshold=60.0)
    for t in range(0, 100, 30):
        bo.failure(float(t), 0.0)
    assert bo.failure(100.0, 0.0).give_up
    d = bo.failure(500.0, 0.0)
    assert d.slept and not d.give_up


def test_retry_after_is_clamped_and_jittered() -> None:
    bo = Backoff(1.0, 30.0)
    assert bo.failure(0.0, 0.5, retry_after=5.0) == b.BackoffDecision(5.0, "retry_after", 1, 0.0)
    assert bo.failure(0.0, 0.5, retry_after=0.0).delay == 1.0
    assert bo.failure(0.0, 0.5, retry_after=999.0).delay == 30.0
    assert bo.failure(0.0, 0.5, retry_after=math.nan).reason == "backoff"
    jittered = Backoff(1.0, 30.0, 0.25).failure(0.0, 0.0, retry_after=10.0)
    assert jittered.delay == pytest.approx(7.5)


def test_huge_streak_does_not_overflow() -> None:
    bo = Backoff(0.5, 30.0)
    for _ in range(5000):
        d = bo.failure(0.0, 0.0)
    assert d.delay == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0, "cap": 1.0},
        {"base": 2.0, "cap": 1.0},
        {"base": 1.0, "cap": 2.0, "jitter_fraction": 1.0},
        {"base": 1.0, "cap": 2.0, "give_up_after": 0.0},
        {"base": 1.0, "cap": 2.0, "sleep_threshold": -1.0},
        {"base": 1.0, "cap": 2.0, "additive_jitter": -1.0},
        {"base": 1.0, "cap": 2.0, "max_attempts": 0},
    ],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_presets_match_reference_numbers() -> None:
    ws = b.ws_reconnect()
    assert (ws.base, ws.cap, ws.jitter_fraction, ws.give_up_after, ws.sleep_threshold) == (
        1,
        30,
        0.25,
        600,
        60,
    )
    sse = b.sse_reconnect()
    assert (sse.base, sse.cap, sse.jitter_fraction, sse.give_up_after) == (1, 30, 0.25, 600)
    hp = b.hybrid_post()
    assert (hp.base, hp.cap, hp.additive_jitter, hp.give_up_after, hp.jitter_fraction) == (
        0.5,
        8,
        1.0,
        None,
        0,
    )
    ccr = b.ccr_uploader()
    assert (ccr.base, ccr.cap, ccr.additive_jitter, ccr.give_up_after) == (0.5, 30, 0.5, None)
    conn = b.bridge_connection()
    assert (conn.base, conn.cap, conn.jitter_fraction, conn.give_up_after, conn.sleep_threshold) == (
        2,
        120,
        0.25,
        600,
        240,
    )
    gen = b.bridge_general()
    assert (gen.base, gen.cap, gen.jitter_fraction, gen.give_up_after, gen.sleep_threshold) == (
        0.5,
        30,
        0.25,
        600,
        240,
    )
    # Sleep thresholds sit above the largest possible delay, so a normal wait is never mistaken for a sleep.
    for preset in (ws, sse, conn, gen):
        assert preset.sleep_threshold is not None and preset.max_delay < preset.sleep_threshold


PRESETS = st.sampled_from(
    [b.ws_reconnect, b.sse_reconnect, b.hybrid_post, b.ccr_uploader, b.bridge_connection, b.bridge_general]
)


@settings(deadline=None)
@given(
    PRESETS,
    st.lists(st.floats(min_value=0.0, max_value=0.999999), min_size=1, max_size=60),
    st.floats(min_value=0.0, max_value=1e6),
)
def test_delays_always_within_bounds(make: object, draws: list[float], start: float) -> None:
    bo: Backoff = make()  # type: ignore[operator]
    now = start
    for r in draws:
        d = bo.failure(now, r)
        if d.give_up:
            break
        assert d.delay is not None
        assert bo.min_delay - 1e-9 <= d.delay <= bo.max_delay + 1e-9
        now += d.delay


@settings(deadline=None)
@given(
    st.floats(min_value=1.0, max_value=1000.0),
    st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=1, max_size=80),
)
def test_give_up_exactly_when_budget_spent(budget: float, gaps: list[float]) -> None:
    bo = Backoff(0.5, 30.0, 0.25, give_up_after=budget)  # no sleep detection: every gap counts
    now, first = 0.0, gaps[0]
    for gap in gaps:
        now += gap
        d = bo.failure(now, 0.3)
        assert d.give_up == (now - first >= budget)
        assert d.elapsed == pytest.approx(now - first)
