"""Reconnect rules of the remote client's subscribe socket (docs/protocol.md §8.4), as tables."""

from __future__ import annotations

import pytest

from tether.protocol.subscribe_policy import (
    Reconnect,
    ResponseWatchdog,
    Stop,
    SubscribeReconnectPolicy,
    stop_message,
    viewer_delay,
)

# Each step: ("open" | "frame" | close code | None = no close frame | "force"), expected outcome.
# Outcomes: (delay, attempt) for a reconnect, or a stop reason.
ORDINARY_DROPS = [
    ("open", None), (1006, (2.0, 1)), (None, (2.0, 2)), (1012, (2.0, 3)), (1011, (2.0, 4)), (1006, (2.0, 5)),
    (1006, "gave_up"),
]
SERVER_RESTART_WAITS_LONGER = ([("open", None), (1012, (2.0, 1))] + [(None, (2.0, n)) for n in range(2, 31)]
                               + [(None, "gave_up")])
RESTART_BUDGET_ENDS_WITH_THE_STREAK = [("open", None), (1012, (2.0, 1)), ("open", None), (1006, (2.0, 1)),
                                       (1006, (2.0, 2)), (1006, (2.0, 3)), (1006, (2.0, 4)), (1006, (2.0, 5)),
                                       (1006, "gave_up")]
OPEN_RESETS_THE_STREAK = [
    ("open", None), (1006, (2.0, 1)), (1006, (2.0, 2)), ("open", None), (1006, (2.0, 1)),
]
UNAUTHORIZED_STOPS_AT_ONCE = [("open", None), (4003, "unauthorized")]
NOT_FOUND_LINEAR = [("open", None), (4001, (2.0, 1)), ("open", None), (4001, (4.0, 2)), ("open", None),
                    (4001, (6.0, 3)), ("open", None), (4001, "not_found")]
NOT_FOUND_RESET_BY_A_FRAME = [("open", None), (4001, (2.0, 1)), ("open", None), ("frame", None),
                              (4001, (2.0, 1))]
NOT_FOUND_BEFORE_ANY_OPEN = [(4001, (2.0, 1)), (4001, (4.0, 2)), (4001, (6.0, 3)), (4001, "not_found")]
NEVER_CONNECTED = [(None, "never_connected")]
FORCED = [("open", None), (1006, (2.0, 1)), (1006, (2.0, 2)), ("force", (0.5, 0)), ("open", None),
          (1006, (2.0, 1))]
VIEWER_FOREVER = [("open", None)] + [(1006, (viewer_delay(n), n)) for n in range(1, 40)]
VIEWER_STILL_STOPS_ON_4003 = [("open", None), (1006, (2.0, 1)), (4003, "unauthorized")]


def run(policy: SubscribeReconnectPolicy, steps: list[tuple[object, object]]) -> None:
    for i, (event, expected) in enumerate(steps):
        if event == "open":
            policy.opened()
            continue
        if event == "frame":
            policy.frame_received()
            continue
        decision = policy.forced() if event == "force" else policy.closed(event)  # type: ignore[arg-type]
        if isinstance(expected, str):
            assert isinstance(decision, Stop) and decision.reason == expected, (i, decision)
        else:
            assert isinstance(decision, Reconnect), (i, decision)
            assert (decision.delay, decision.attempt) == expected, (i, decision)


@pytest.mark.parametrize(("steps", "viewer"), [
    (ORDINARY_DROPS, False), (SERVER_RESTART_WAITS_LONGER, False), (RESTART_BUDGET_ENDS_WITH_THE_STREAK, False),
    (OPEN_RESETS_THE_STREAK, False), (UNAUTHORIZED_STOPS_AT_ONCE, False),
    (NOT_FOUND_LINEAR, False), (NOT_FOUND_RESET_BY_A_FRAME, False), (NOT_FOUND_BEFORE_ANY_OPEN, False),
    (NEVER_CONNECTED, False), (FORCED, False), (VIEWER_FOREVER, True), (VIEWER_STILL_STOPS_ON_4003, True),
    (UNAUTHORIZED_STOPS_AT_ONCE, True), (NOT_FOUND_LINEAR, True),
], ids=["ordinary-2s-x5", "1012-x30", "1012-budget-per-streak", "open-resets", "4003", "4001-linear", "4001-reset-by-frame", "4001-before-open",
        "never-connected", "forced", "viewer-forever", "viewer-4003", "viewer-4003-first", "viewer-4001"])
def test_reconnect_rules(steps: list[tuple[object, object]], viewer: bool) -> None:
    run(SubscribeReconnectPolicy(viewer=viewer), steps)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 2.0), (5, 2.0), (6, 4.0), (7, 8.0), (8, 16.0), (9, 30.0),
                                                (1000, 30.0)])
def test_viewer_delays(attempt: int, delay: float) -> None:
    assert viewer_delay(attempt) == delay


def test_after_stop_nothing_reconnects() -> None:
    policy = SubscribeReconnectPolicy(viewer=True)
    policy.opened()
    policy.stop()
    decision = policy.closed(1006)
    assert isinstance(decision, Stop) and decision.reason == "stopped"
    assert stop_message(decision) == "Detached."


@pytest.mark.parametrize(("reason", "words"), [
    ("unauthorized", "4003"), ("not_found", "4001"), ("gave_up", "reconnecting failed"), ("never_connected", "server URL"),
])
def test_stop_messages_say_what_happened(reason: str, words: str) -> None:
    assert words in stop_message(Stop(reason, None))  # type: ignore[arg-type]


def test_watchdog_fires_once_60s_after_a_send_without_any_answer() -> None:
    dog = ResponseWatchdog()
    assert not dog.check(1000.0)
    dog.sent(10.0)
    dog.sent(50.0)  # a later send does not push the deadline
    assert dog.deadline() == 70.0
    assert not dog.check(69.9)
    assert dog.check(70.0)
    assert not dog.check(200.0) and not dog.armed


def test_watchdog_any_frame_disarms_and_compaction_waits_longer() -> None:
    dog = ResponseWatchdog()
    dog.sent(0.0)
    dog.received()
    assert not dog.check(1000.0)
    dog.compacting = True
    dog.sent(0.0)
    assert not dog.check(179.0) and dog.check(180.0)


def test_viewer_has_no_watchdog() -> None:
    dog = ResponseWatchdog(enabled=False)
    dog.sent(0.0)
    assert not dog.armed and not dog.check(10_000.0)
