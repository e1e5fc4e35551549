"""The bridge's pure decisions (tether.protocol.bridge_policy)."""

from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.bridge_policy import (
    DEFAULT_CAPACITY,
    TEARDOWN_ORDER,
    ActiveWork,
    PollBackoff,
    RefreshSchedule,
    heartbeat_interval_s,
    jwt_expiry,
    max_sessions_for,
    plan_next_poll,
    plan_teardown,
    resolve_spawn_mode,
    session_deadline,
    stop_work_retry,
)
from tether.protocol.poll_config import PollConfig

CFG = PollConfig(multisession_poll_interval_ms_not_at_capacity=2000, multisession_poll_interval_ms_partial_capacity=1500,
                 multisession_poll_interval_ms_at_capacity=600_000, poll_interval_ms_not_at_capacity=2500,
                 poll_interval_ms_at_capacity=300_000)


# ---- spawn mode and capacity -------------------------------------------------------------------

def test_spawn_mode_precedence() -> None:
    assert resolve_spawn_mode(resuming=True, explicit="worktree", saved="worktree", multi_session=True) == "session"
    assert resolve_spawn_mode(resuming=False, explicit="session", saved="worktree", multi_session=True) == "session"
    assert resolve_spawn_mode(resuming=False, explicit=None, saved="worktree", multi_session=True) == "worktree"
    assert resolve_spawn_mode(resuming=False, explicit=None, saved="worktree", multi_session=False) == "session"
    assert resolve_spawn_mode(resuming=False, explicit=None, saved=None, multi_session=True) == "same-dir"


def test_max_sessions() -> None:
    assert max_sessions_for("session", 8) == 1
    assert max_sessions_for("same-dir", None) == DEFAULT_CAPACITY == 32
    assert max_sessions_for("worktree", 3) == 3
    with pytest.raises(ValueError):
        max_sessions_for("same-dir", 0)


# ---- polling ------------------------------------------------------------------------------------

def test_poll_intervals_by_capacity() -> None:
    idle = plan_next_poll(CFG, active=0, max_sessions=4, multi_session=True)
    assert (idle.state, idle.delay) == ("idle", 2.0)
    partial = plan_next_poll(CFG, active=2, max_sessions=4, multi_session=True)
    assert (partial.state, partial.delay) == ("partial", 1.5)
    full = plan_next_poll(CFG, active=4, max_sessions=4, multi_session=True)
    assert (full.state, full.delay, full.waits_for_capacity) == ("full", 600.0, True)
    single = plan_next_poll(CFG, active=0, max_sessions=1, multi_session=False)
    assert single.delay == 2.5
    assert plan_next_poll(CFG, active=1, max_sessions=1, multi_session=False).delay == 300.0


def test_long_poll_time_counts_and_work_polls_again_at_once() -> None:
    assert plan_next_poll(CFG, active=0, max_sessions=4, multi_session=True, poll_duration=8.0).delay == 0.0
    assert plan_next_poll(CFG, active=0, max_sessions=4, multi_session=True, poll_duration=0.5).delay == 1.5
    assert plan_next_poll(CFG, active=1, max_sessions=4, multi_session=True, got_work=True).delay == 0.0
    # at capacity, work that just arrived does not make it poll again (it waits for capacity)
    assert plan_next_poll(CFG, active=4, max_sessions=4, multi_session=True, got_work=True).delay == 600.0


def test_at_capacity_with_polling_off_waits_for_capacity_only() -> None:
    cfg = PollConfig(multisession_poll_interval_ms_at_capacity=0, non_exclusive_heartbeat_interval_ms=30_000)
    plan = plan_next_poll(cfg, active=2, max_sessions=2, multi_session=True)
    assert plan.state == "full" and plan.delay is None


def test_heartbeat_interval() -> None:
    assert heartbeat_interval_s(PollConfig(non_exclusive_heartbeat_interval_ms=60_000), 300) == 60.0
    assert heartbeat_interval_s(PollConfig(non_exclusive_heartbeat_interval_ms=60_000), 3) == 1.0
    assert heartbeat_interval_s(PollConfig(non_exclusive_heartbeat_interval_ms=60_000), 30) == 10.0
    assert heartbeat_interval_s(PollConfig(), None) == 60.0
    assert heartbeat_interval_s(PollConfig(non_exclusive_heartbeat_interval_ms=5000), 300) == 5.0


# ---- backoff ------------------------------------------------------------------------------------

def test_connection_track_doubles_to_its_cap_and_gives_up_after_ten_minutes() -> None:
    b = PollBackoff()
    t, delays = 0.0, []
    while True:
        d = b.failure("connection", t, 0.5)  # 0.5 = no jitter
        if d.delay is None:
            break
        delays.append(d.delay)
        t += d.delay
    assert delays[:7] == [2, 4, 8, 16, 32, 64, 120]
    assert set(delays[7:]) == {120}
    assert 600 <= t < 720
    assert d.reason == "gave_up_budget"


def test_general_track_is_separate_and_a_success_resets_both() -> None:
    b = PollBackoff()
    assert b.failure("general", 0.0, 0.5).delay == 0.5
    assert b.failure("general", 0.5, 0.5).delay == 1.0
    assert b.failure("connection", 1.5, 0.5).delay == 2.0
    assert b.failing_since == 0.0
    assert b.success(3.0) is True
    assert b.failing_since is None
    assert b.failure("general", 4.0, 0.5).delay == 0.5
    assert b.success(5.0) is True and b.success(6.0) is False


@given(st.floats(min_value=0.0, max_value=0.999999), st.integers(min_value=1, max_value=12))
def test_jitter_is_within_25_percent(r: float, n: int) -> None:
    b = PollBackoff()
    for i in range(n):
        d = b.failure("connection", float(i), r)
    nominal = min(2.0 * 2 ** (n - 1), 120.0)
    assert d.delay is not None and 0.75 * nominal <= d.delay <= 1.25 * nominal


def test_sleep_detection_resets_both_tracks_and_the_budget() -> None:
    b = PollBackoff()
    t = 0.0
    for _ in range(6):
        t += b.failure("connection", t, 0.5).delay or 0
    b.failure("general", t, 0.5)
    t += 590.0  # the laptop slept for ten minutes between two failures
    d = b.failure("connection", t, 0.5)
    assert d.slept and d.delay == 2.0 and d.attempt == 1
    assert b.general.attempts == 0 and b.sleeps_detected == 1
    assert b.failing_since == t  # the outage is counted from the wake-up
    assert b.failure("connection", t + 2.0, 0.5).delay == 4.0  # and the budget starts over


def test_no_sleep_detected_within_the_threshold() -> None:
    b = PollBackoff()
    b.failure("connection", 0.0, 0.5)
    d = b.failure("connection", 239.0, 0.5)
    assert not d.slept and d.attempt == 2


def test_stop_work_retry_is_three_attempts() -> None:
    r = stop_work_retry()
    first, second, third = (r.failure(float(i), 0.5) for i in range(3))
    assert (first.delay, second.delay, third.delay) == (1.0, 2.0, None)
    rnd = random.Random(7)
    r = stop_work_retry()
    d = r.failure(0.0, rnd).delay
    assert d is not None and 0.75 <= d <= 1.25


# ---- token refresh ------------------------------------------------------------------------------

def _jwt(claims: dict[str, object], prefix: str = "") -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return prefix + f"{enc({'alg': 'HS256'})}.{enc(claims)}.sig"


def test_jwt_expiry() -> None:
    assert jwt_expiry(_jwt({"exp": 1_700_000_000})) == 1_700_000_000.0
    assert jwt_expiry(_jwt({"exp": 12.5}, "sk-ant-si-")) == 12.5
    for bad in ("", "abc", "a.b", _jwt({"sub": "x"}), _jwt({"exp": "soon"}), _jwt({"exp": True}), "a.!!!.c"):
        assert jwt_expiry(bad) is None


def test_refresh_five_minutes_before_expiry() -> None:
    s: RefreshSchedule[str] = RefreshSchedule()
    assert s.schedule("a", 10_000.0, now=0.0) == 9_700.0
    assert s.due(9_699.0) == [] and s.due(9_700.0) == ["a"]
    assert s.next_due() == 9_700.0


def test_refresh_inside_the_buffer_is_immediate_but_never_spins() -> None:
    s: RefreshSchedule[str] = RefreshSchedule()
    assert s.schedule("a", 100.0, now=50.0) == 50.0  # already inside the buffer
    s.requested("a", 50.0)
    assert s.due_at("a") == 50.0 + 30 * 60  # follow-up if no fresh token arrives
    # the fresh token is just as short-lived: at most one request per min_gap
    assert s.schedule("a", 350.0, now=51.0) == 80.0
    assert s.due(79.0) == [] and s.due(80.0) == ["a"]


def test_refresh_failure_retries_and_undecodable_tokens_keep_the_timer() -> None:
    s: RefreshSchedule[str] = RefreshSchedule()
    s.schedule("a", 10_000.0, now=0.0)
    assert s.schedule("a", None, now=1.0) == 9_700.0
    s.failed("a", 9_700.0)
    assert s.due_at("a") == 9_760.0
    s.cancel("a")
    assert "a" not in s and s.next_due() is None and len(s) == 0


def test_session_deadline() -> None:
    assert session_deadline(10.0, 86_400.0) == 86_410.0
    assert session_deadline(10.0, 0) is None and session_deadline(10.0, None) is None


# ---- teardown -----------------------------------------------------------------------------------

def test_teardown_order() -> None:
    plan = plan_teardown(active=[ActiveWork("session_a", "work_a", "/r/.tether/worktrees/bridge-a"),
                                 ActiveWork("session_b", "work_b")],
                         archive=["session_a", "session_b", "session_init", "session_a"],
                         environment_id="env_x", pointer=True, grace_s=30.0)
    assert [s.action for s in plan] == list(TEARDOWN_ORDER)
    by = {s.action: s for s in plan}
    assert by["terminate_agents"].targets == ("session_a", "session_b") and by["terminate_agents"].deadline_s == 30
    assert by["remove_worktrees"].targets == ("/r/.tether/worktrees/bridge-a",)
    assert by["stop_work"].targets == ("work_a", "work_b")
    assert by["archive"].targets == ("session_a", "session_b", "session_init")
    assert by["deregister"].targets == ("env_x",)


def test_teardown_without_sessions_and_resumable() -> None:
    plan = plan_teardown(active=[], archive=[], environment_id="env_x", pointer=False)
    assert [s.action for s in plan] == ["stop_polling", "terminate_agents", "deregister"]
    plan = plan_teardown(active=[ActiveWork("session_a", "work_a")], archive=["session_a"], environment_id="env_x",
                         pointer=True, keep_resumable=True)
    assert [s.action for s in plan] == ["stop_polling", "terminate_agents", "stop_work"]


def test_teardown_keeping_the_directory_session() -> None:
    plan = plan_teardown(active=[ActiveWork("cse_01a", "work_a"), ActiveWork("session_01b", "work_b")],
                         archive=["session_01a", "session_01b"], environment_id="env_x", pointer=True,
                         keep_session="session_01a")
    assert [s.action for s in plan] == ["stop_polling", "terminate_agents", "stop_work", "archive", "deregister"]
    by = {s.action: s for s in plan}
    assert by["stop_work"].targets == ("work_a", "work_b") and by["archive"].targets == ("session_01b",)
    only = plan_teardown(active=[], archive=["session_01a"], environment_id="env_x", pointer=True,
                         keep_session="cse_01a")
    assert [s.action for s in only] == ["stop_polling", "terminate_agents", "deregister"]


def test_teardown_of_a_superseded_bridge_leaves_the_server_alone() -> None:
    """Another bridge registered the environment again: it owns the sessions and their work now."""
    plan = plan_teardown(active=[ActiveWork("session_a", "work_a", "/r/.tether/worktrees/bridge-a")],
                         archive=["session_a", "session_init"], environment_id="env_x", pointer=True,
                         superseded=True)
    assert [s.action for s in plan] == ["stop_polling", "terminate_agents", "remove_worktrees", "clear_pointer"]
    plan = plan_teardown(active=[], archive=["session_init"], environment_id="env_x", pointer=False, superseded=True)
    assert [s.action for s in plan] == ["stop_polling", "terminate_agents"]


def test_teardown_before_registration_has_nothing_to_deregister() -> None:
    plan = plan_teardown(active=[], archive=["session_init"], environment_id=None, pointer=True)
    assert [s.action for s in plan] == ["stop_polling", "terminate_agents", "archive", "clear_pointer"]
