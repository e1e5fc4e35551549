from __future__ import annotations

import random

import pytest

from tether.protocol.backoff import Backoff
from tether.protocol.reconnect import PingLiveness, ReconnectBudget, ReconnectPolicy, is_permanent_close


def test_ping_pong_cycle() -> None:
    lv = PingLiveness(interval=10, sleep_threshold=60)
    lv.start(100.0)
    assert lv.next_tick() == 110.0
    assert lv.tick(110.0) == "ping" and lv.awaiting_pong
    lv.pong(110.2)
    assert lv.rtt == pytest.approx(0.2) and not lv.awaiting_pong
    assert lv.tick(120.0) == "ping"


def test_missing_pong_means_dead() -> None:
    lv = PingLiveness(interval=10, sleep_threshold=60)
    lv.start(0.0)
    assert lv.tick(10.0) == "ping"
    assert lv.tick(20.0) == "dead"


def test_a_late_timer_means_the_machine_slept() -> None:
    lv = PingLiveness(interval=10, sleep_threshold=60)
    lv.start(0.0)
    assert lv.tick(10.0) == "ping"
    assert lv.tick(80.5) == "slept", "sleep wins over the missing pong"
    assert lv.tick(90.0) == "ping"


def test_start_resets_an_outstanding_ping() -> None:
    lv = PingLiveness()
    lv.start(0.0)
    lv.tick(10.0)
    lv.start(12.0)
    assert not lv.awaiting_pong and lv.tick(22.0) == "ping"


def test_a_pong_without_an_outstanding_ping_measures_nothing() -> None:
    lv = PingLiveness(interval=10, sleep_threshold=60)
    lv.start(0.0)
    lv.tick(10.0)
    lv.start(12.0)  # reconnected: the old socket's pong is late
    lv.pong(12.5)
    assert lv.rtt is None and not lv.awaiting_pong


def test_tick_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        PingLiveness().tick(0.0)
    with pytest.raises(RuntimeError):
        PingLiveness().next_tick()


@pytest.mark.parametrize(("interval", "sleep_threshold"), [(0, 60), (10, 0), (-1, 60)])
def test_bad_intervals_are_refused(interval: float, sleep_threshold: float) -> None:
    with pytest.raises(ValueError):
        PingLiveness(interval, sleep_threshold)


def test_the_budget_itself_is_abstract() -> None:
    with pytest.raises(TypeError):
        ReconnectBudget()  # type: ignore[abstract]


@pytest.mark.parametrize("code", [1002, 4001, 4003])
def test_permanent_codes_stop_at_once(code: int) -> None:
    pol = ReconnectPolicy()
    d = pol.closed(code, 0.0, 0.5)
    assert d.give_up and d.reason == "permanent" and d.code == code


def test_4003_is_retried_when_the_token_changed() -> None:
    assert not is_permanent_close(4003, token_changed=True)
    assert is_permanent_close(4001, token_changed=True)
    d = ReconnectPolicy().closed(4003, 0.0, 0.5, token_changed=True)
    assert not d.give_up and d.delay == pytest.approx(1.0)


@pytest.mark.parametrize("code", [None, 1000, 1001, 1006, 1011, 1012])
def test_transient_codes_back_off(code: int | None) -> None:
    d = ReconnectPolicy().closed(code, 0.0, 0.5)
    assert d.reason == "backoff" and d.delay == pytest.approx(1.0)


def test_reference_schedule_with_jitter_bounds() -> None:
    pol = ReconnectPolicy()
    rnd = random.Random(7)
    now = 0.0
    for n in range(1, 12):
        d = pol.closed(1006, now, rnd)
        assert d.delay is not None
        nominal = min(2 ** (n - 1), 30)
        assert 0.75 * nominal <= d.delay <= 1.25 * nominal
        now += d.delay


def test_gives_up_after_ten_minutes_of_failure() -> None:
    pol = ReconnectPolicy()
    now, d = 0.0, pol.closed(1006, 0.0, 0.5)
    while not d.give_up:
        assert d.delay is not None
        now += d.delay
        d = pol.closed(1006, now, 0.5)
    assert d.reason == "gave_up" and now >= 600
    assert now < 600 + 31


def test_an_open_socket_resets_the_budget() -> None:
    pol = ReconnectPolicy(Backoff(1.0, 30.0, give_up_after=10.0))
    pol.closed(1006, 0.0, 0.5)
    pol.closed(1006, 9.0, 0.5)
    pol.opened(9.5)
    d = pol.closed(1006, 30.0, 0.5)
    assert not d.give_up and d.delay == 1.0 and pol.connects == 1


def test_sleep_resets_the_budget() -> None:
    pol = ReconnectPolicy()
    now = 0.0
    for _ in range(5):
        d = pol.closed(1006, now, 0.5)
        now += d.delay or 0
    d = pol.closed(1006, now + 3600, 0.5)
    assert d.slept and d.delay == pytest.approx(1.0) and not d.give_up
