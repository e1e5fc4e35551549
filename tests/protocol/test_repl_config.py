"""Start gates, core choice, the env-less config (docs/protocol.md §12.1, §12.3) and the v1 poll-loop rules."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tether.protocol import repl_config as rc
from tether.protocol.versions import version_ok, version_tuple


def test_env_less_config_defaults_bounds_and_fallback() -> None:
    assert rc.parse_env_less_config(None).config == rc.DEFAULT_ENV_LESS_CONFIG
    parsed = rc.parse_env_less_config({"heartbeat_interval_ms": 5000, "token_refresh_buffer_ms": 60_000,
                                       "heartbeat_jitter_fraction": 0.2, "min_version": "0.2.0", "future": 1})
    assert not parsed.fell_back
    cfg = parsed.config
    assert (cfg.heartbeat_interval_ms, cfg.token_refresh_buffer_ms, cfg.heartbeat_jitter_fraction) == (5000, 60_000, 0.2)
    assert cfg.min_version == "0.2.0" and cfg.uuid_dedup_buffer_size == 2000
    for bad in ({"heartbeat_interval_ms": 4999}, {"uuid_dedup_buffer_size": 50_001}, {"init_retry_max_attempts": 0},
                {"token_refresh_buffer_ms": 1.5}, {"heartbeat_jitter_fraction": 0.6}, {"http_timeout_ms": True},
                {"min_version": ""}, {"should_show_app_upgrade_message": "yes"}):
        out = rc.parse_env_less_config({"heartbeat_interval_ms": 6000, **bad})
        assert out.fell_back and out.config == rc.DEFAULT_ENV_LESS_CONFIG, bad
    assert rc.parse_env_less_config([1]).fell_back



@pytest.mark.parametrize("value", [True, False])
def test_env_less_config_takes_the_upgrade_message_flag(value: bool) -> None:
    parsed = rc.parse_env_less_config({"should_show_app_upgrade_message": value})
    assert not parsed.fell_back and parsed.config.should_show_app_upgrade_message is value


def test_init_retry_makes_the_configured_number_of_attempts() -> None:
    b = rc.init_retry(rc.DEFAULT_ENV_LESS_CONFIG)
    delays = [b.failure(float(i), 0.5).delay for i in range(3)]
    assert delays[0] == pytest.approx(0.5) and delays[1] == pytest.approx(1.0) and delays[2] is None


def test_refresh_delay() -> None:
    assert rc.refresh_delay(4 * 3600, 300) == 4 * 3600 - 300
    assert rc.refresh_delay(200, 300) == 30.0  # never sooner than the floor


def test_core_choice() -> None:
    assert rc.choose_core(repl_v2=True, perpetual=False, mirror=False) == "v2"
    assert rc.choose_core(repl_v2=True, perpetual=True, mirror=False) == "v1"
    assert rc.choose_core(repl_v2=False, perpetual=False, mirror=False) == "v1"
    assert rc.choose_core(repl_v2=False, perpetual=True, mirror=True) == "v2"


def gates(**overrides: Any) -> rc.Gate:
    args: dict[str, Any] = dict(logged_in=True, policy_allows=True, role="owner", token_expired=False,
                                dead_token=None, token_expires_at=100.0, repl_v2=False, perpetual=False,
                                mirror=False, version="0.1.0", min_version="0.1.0", v2_min_version="0.1.0")
    args.update(overrides)
    return rc.check_gates(**args)


def test_gates_in_order() -> None:
    assert gates() == rc.Gate("ok", None, "v1")
    assert gates(repl_v2=True).core == "v2"
    assert gates(logged_in=False, policy_allows=False).detail == "not logged in · run `tether login`"
    assert gates(policy_allows=False, token_expired=True).detail == "disabled by your organisation's policy"
    assert gates(role="viewer").verdict == "failed"
    dead = rc.DeadToken(100.0, 3)
    assert gates(dead_token=dead, token_expired=True).verdict == "skip"
    assert gates(dead_token=dead, token_expires_at=200.0).ok  # a new login is tried again
    assert gates(token_expired=True).detail == "your login has expired · run `tether login`"
    assert gates(min_version="9.0").verdict == "failed" and gates(min_version="9.0", repl_v2=True).ok
    assert "9.1" in (gates(v2_min_version="9.1", repl_v2=True).detail or "")


def test_dead_token_counts_failures_of_one_login() -> None:
    record = rc.DeadToken(None).after_failure(100.0)
    assert record == rc.DeadToken(100.0, 1)
    record = record.after_failure(100.0).after_failure(100.0)
    assert record.blocks(100.0) and not record.blocks(101.0)
    assert record.after_failure(101.0) == rc.DeadToken(101.0, 1)


def test_poll_backoff_and_oversleep() -> None:
    b = rc.repl_poll_backoff()
    rnd = random.Random(1)
    first = b.failure(0.0, rnd)
    assert first.delay is not None and 1.5 <= first.delay <= 2.5
    assert b.failure(60.0, rnd).delay is not None
    assert b.failure(900.0, rnd).slept  # more than 120 s since the last error: the machine slept
    assert b.failure(1000.0, rnd).delay is not None
    assert b.failure(1100.0, rnd).delay is not None and b.failure(1200.0, rnd).delay is not None
    assert b.failure(1300.0, rnd).delay is not None
    late = rc.repl_poll_backoff()
    for t in range(0, 901, 100):
        decision = late.failure(float(t), rnd)
    assert decision.give_up  # 15 minutes of continuous failure
    assert rc.overslept(600.0, 661.0) and not rc.overslept(600.0, 659.0)


def test_versions() -> None:
    assert version_tuple("1.2.3rc1") == (1, 2, 3) and version_tuple("x.4") == (0, 4)
    assert version_ok(None, "0.1.0") and version_ok("", "0.1.0") and version_ok("0.1", "0.1.0")
    assert not version_ok("0.2.0", "0.1.9") and version_ok("0.1.10", "0.1.10")
