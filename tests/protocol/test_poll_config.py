"""The standalone bridge's poll configuration (docs/protocol.md §11.5): defaults, partial configs, the
whole-config fallback on one bad value or on no at-capacity liveness, and the interval for each
capacity state."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.poll_config import (
    DEFAULT_POLL_CONFIG,
    PollConfig,
    capacity_state,
    parse_poll_config,
    poll_interval_ms,
)


def test_defaults_match_reference() -> None:
    c = DEFAULT_POLL_CONFIG
    assert (c.poll_interval_ms_not_at_capacity, c.poll_interval_ms_at_capacity) == (2000, 600_000)
    assert c.non_exclusive_heartbeat_interval_ms == 0
    assert c.multisession_poll_interval_ms_partial_capacity == 2000
    assert (c.reclaim_older_than_ms, c.session_keepalive_interval_v2_ms) == (5000, 120_000)


def test_absent_config_is_the_defaults_without_complaint() -> None:
    parsed = parse_poll_config(None)
    assert parsed.config == DEFAULT_POLL_CONFIG and not parsed.fell_back and parsed.problems == ()
    assert parse_poll_config({}).config == DEFAULT_POLL_CONFIG and not parse_poll_config({}).fell_back


def test_valid_partial_config_keeps_defaults_for_missing_keys() -> None:
    parsed = parse_poll_config({"poll_interval_ms_not_at_capacity": 500, "non_exclusive_heartbeat_interval_ms": 60_000,
                                "future_key": "ignored"})
    assert not parsed.fell_back
    assert parsed.config.poll_interval_ms_not_at_capacity == 500
    assert parsed.config.non_exclusive_heartbeat_interval_ms == 60_000
    assert parsed.config.reclaim_older_than_ms == 5000
    assert parse_poll_config({"reclaim_older_than_ms": 7000.0}).config.reclaim_older_than_ms == 7000


@pytest.mark.parametrize(("bad", "problem"), [
    ({"poll_interval_ms_not_at_capacity": 99}, "poll_interval_ms_not_at_capacity must be ≥ 100"),
    ({"poll_interval_ms_not_at_capacity": 0}, "poll_interval_ms_not_at_capacity must be ≥ 100"),
    ({"poll_interval_ms_at_capacity": 50}, "poll_interval_ms_at_capacity must be 0 or ≥ 100"),
    ({"reclaim_older_than_ms": 0}, "reclaim_older_than_ms must be ≥ 1"),
    ({"non_exclusive_heartbeat_interval_ms": -1}, "non_exclusive_heartbeat_interval_ms must be ≥ 0"),
    ({"multisession_poll_interval_ms_partial_capacity": "2000"},
     "multisession_poll_interval_ms_partial_capacity is not an integer"),
    ({"multisession_poll_interval_ms_not_at_capacity": True},
     "multisession_poll_interval_ms_not_at_capacity is not an integer"),
    ({"poll_interval_ms_at_capacity": 1.5}, "poll_interval_ms_at_capacity is not an integer"),
    ({"poll_interval_ms_at_capacity": 10**12}, "poll_interval_ms_at_capacity is larger than 24 h"),
    ({"poll_interval_ms_at_capacity": 0, "non_exclusive_heartbeat_interval_ms": 0},
     "no at-capacity liveness: heartbeat and at-capacity poll are both off"),
    ({"multisession_poll_interval_ms_at_capacity": 0},
     "no at-capacity liveness: heartbeat and at-capacity poll are both off"),
    ("not an object", "poll_config is not an object"),
    ([], "poll_config is not an object"),
])
def test_invalid_config_falls_back_whole_and_says_why(bad: object, problem: str) -> None:
    parsed = parse_poll_config(bad)
    assert parsed.fell_back and parsed.config == DEFAULT_POLL_CONFIG
    assert parsed.problems == (problem,)


def test_every_bad_value_is_reported_and_good_ones_are_not_kept() -> None:
    parsed = parse_poll_config({"poll_interval_ms_not_at_capacity": 1, "reclaim_older_than_ms": "x",
                                "session_keepalive_interval_v2_ms": 1000})
    assert parsed.config == DEFAULT_POLL_CONFIG
    assert len(parsed.problems) == 2


def test_at_capacity_zero_is_fine_with_heartbeats() -> None:
    parsed = parse_poll_config({"poll_interval_ms_at_capacity": 0, "multisession_poll_interval_ms_at_capacity": 0,
                                "non_exclusive_heartbeat_interval_ms": 30_000})
    assert not parsed.fell_back and parsed.config.multisession_poll_interval_ms_at_capacity == 0


@given(st.dictionaries(st.sampled_from([f.name for f in fields(PollConfig)]),
                       st.one_of(st.integers(-10, 10**9), st.floats(allow_nan=True), st.text(max_size=3),
                                 st.booleans(), st.none())))
@settings(deadline=None)
def test_any_config_is_all_or_nothing(raw: dict[str, object]) -> None:
    parsed = parse_poll_config(raw)
    if parsed.fell_back:
        assert parsed.config == DEFAULT_POLL_CONFIG
    else:
        for name, value in raw.items():
            assert getattr(parsed.config, name) == value


@pytest.mark.parametrize(("active", "state"), [(-1, "idle"), (0, "idle"), (1, "partial"), (2, "full"), (3, "full")])
def test_capacity_state(active: int, state: str) -> None:
    assert capacity_state(active, 2) == state


def test_single_session_bridge_has_no_partial_capacity() -> None:
    assert capacity_state(1, 1) == "full"


def test_poll_interval_by_capacity() -> None:
    c = PollConfig(poll_interval_ms_not_at_capacity=111, poll_interval_ms_at_capacity=222,
                   multisession_poll_interval_ms_not_at_capacity=333,
                   multisession_poll_interval_ms_partial_capacity=444,
                   multisession_poll_interval_ms_at_capacity=555)
    assert poll_interval_ms(c, "idle", multi_session=True) == 333
    assert poll_interval_ms(c, "partial", multi_session=True) == 444
    assert poll_interval_ms(c, "full", multi_session=True) == 555
    assert poll_interval_ms(c, "idle", multi_session=False) == 111
    assert poll_interval_ms(c, "partial", multi_session=False) == 111
    assert poll_interval_ms(c, "full", multi_session=False) == 222
