"""The polling side of the OAuth device flow (RFC 8628 §3.5; docs/protocol.md §1): what each
token-endpoint error means for the next poll, and the interval bounds."""

from __future__ import annotations

import pytest

from tether.protocol.device_flow import (
    MAX_INTERVAL_S,
    DeviceStep,
    device_poll_step,
    initial_interval,
    out_of_time,
)


def test_pending_keeps_the_interval() -> None:
    assert device_poll_step("authorization_pending", 5.0) == DeviceStep("wait", 5.0)


@pytest.mark.parametrize(("interval", "after"), [(5.0, 10.0), (58.0, MAX_INTERVAL_S), (60.0, MAX_INTERVAL_S)])
def test_slow_down_adds_five_seconds_up_to_the_cap(interval: float, after: float) -> None:
    assert device_poll_step("slow_down", interval) == DeviceStep("wait", after)


@pytest.mark.parametrize(("error_type", "words"), [
    ("access_denied", ("denied",)),
    ("expired_token", ("expired", "tether login")),
    ("invalid_grant", ("no longer knows", "tether login")),
])
def test_terminal_errors_stop_with_a_message_for_a_person(error_type: str, words: tuple[str, ...]) -> None:
    step = device_poll_step(error_type, 5.0)
    assert step.action == "fail" and step.error_type == error_type and step.interval == 5.0
    assert all(word in step.message for word in words)


@pytest.mark.parametrize(("error_type", "detail", "message"), [
    (None, "boom", "The login failed (unexpected answer): boom"),
    (None, None, "The login failed (unexpected answer)"),
    ("server_error", None, "The login failed (server_error)"),
    ("server_error", "try later", "The login failed (server_error): try later"),
])
def test_unknown_answers_stop_and_say_what_came_back(error_type: str | None, detail: str | None, message: str) -> None:
    step = device_poll_step(error_type, 5.0, detail)
    assert step == DeviceStep("fail", 5.0, message, error_type)


@pytest.mark.parametrize(("value", "interval"), [
    (5, 5.0), (2.5, 2.5), (0, 1.0), (-3, 1.0), (10_000, 60.0),
    (None, 5.0), ("5", 5.0), (True, 5.0), (float("nan"), 5.0),
])
def test_initial_interval_is_clamped_or_defaulted(value: object, interval: float) -> None:
    assert initial_interval(value) == interval


def test_initial_interval_default_is_a_parameter() -> None:
    assert initial_interval(None, default=7.0) == 7.0


def test_out_of_time_at_the_deadline() -> None:
    assert not out_of_time(99.9, 100.0)
    assert out_of_time(100.0, 100.0) and out_of_time(100.1, 100.0)
