"""The pure decisions under the API client and `tether login`: status mapping (reference §1.8),
poll config validation and fallback (§5.8), access-token refresh timing, server URLs, and the
device-flow poll steps. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.access_token import expires_at_from, is_expired, refresh_due, refresh_margin
from tether.protocol.api_status import (
    ENVIRONMENTS_SUCCESS,
    GENERAL_SUCCESS,
    ErrorDetail,
    classify_status,
    extract_error_detail,
    is_expired_error_type,
    parse_retry_after,
)
from tether.protocol.device_flow import device_poll_step, initial_interval
from tether.protocol.poll_config import (
    DEFAULT_POLL_CONFIG,
    PollConfig,
    capacity_state,
    parse_poll_config,
    poll_interval_ms,
)
from tether.protocol.server_url import (
    ServerUrlError,
    is_loopback_host,
    is_plaintext_remote,
    normalize_server_url,
)

# ---- status mapping -------------------------------------------------------------------------------


def test_error_detail_shapes() -> None:
    assert extract_error_detail({"type": "error", "error": {"type": "not_found_error", "message": "gone"}}) == \
        ErrorDetail("gone", "not_found_error")
    assert extract_error_detail({"message": "plain"}) == ErrorDetail("plain", None)
    assert extract_error_detail({"error": "invalid_grant", "error_description": "used"}) == \
        ErrorDetail("used", "invalid_grant")
    assert extract_error_detail(None) == ErrorDetail()
    assert extract_error_detail(["x"]) == ErrorDetail()
    assert extract_error_detail({"error": {"message": "  ", "type": 3}}) == ErrorDetail()
    long = extract_error_detail({"message": "x" * 1000}).message
    assert long is not None and len(long) <= 300


@pytest.mark.parametrize("status", [200, 204])
def test_success(status: int) -> None:
    assert classify_status(status).ok


def test_environments_refuse_201_but_sessions_accept_it() -> None:
    assert classify_status(201, success=ENVIRONMENTS_SUCCESS).outcome == "client_error"
    assert classify_status(201, success=GENERAL_SUCCESS).ok


@pytest.mark.parametrize(("status", "etype", "expired"), [
    (401, "authentication_error", False),
    (403, "permission_error", False),
    (404, "not_found_error", False),
    (410, "environment_expired", True),
])
def test_fatal_statuses(status: int, etype: str, expired: bool) -> None:
    verdict = classify_status(status, ErrorDetail("detail", etype))
    assert verdict.fatal and verdict.error_type == etype and verdict.expired is expired
    assert verdict.track is None


def test_fatal_messages_and_defaults() -> None:
    assert "tether login" in classify_status(401).message
    assert classify_status(410).error_type == "environment_expired"
    assert classify_status(404).message == "Remote Control may not be available for this organization."
    assert classify_status(404, ErrorDetail("No such environment.")).message == "No such environment."
    expired = classify_status(403, ErrorDetail("x", "session_lifetime_exceeded"))
    assert expired.fatal and expired.expired and "expired" in expired.message
    policy = classify_status(403, ErrorDetail(None, "policy_denied"))
    assert policy.fatal and "policy" in policy.message
    hidden = classify_status(403, ErrorDetail("missing scope environments:manage"))
    assert hidden.fatal and hidden.suppressible
    assert not classify_status(403, ErrorDetail("nope")).suppressible


def test_non_fatal_statuses_and_tracks() -> None:
    limited = classify_status(429)
    assert limited.outcome == "rate_limited" and limited.track == "general"
    assert "Rate limited" in limited.message
    bad = classify_status(400, ErrorDetail("bad body", "invalid_request_error"))
    assert bad.outcome == "client_error" and bad.track == "general" and "bad body" in bad.message
    assert classify_status(409).outcome == "client_error"
    for status in (500, 502, 503):
        verdict = classify_status(status)
        assert verdict.outcome == "server_error" and verdict.track == "connection"


@given(st.integers(min_value=100, max_value=599))
@settings(deadline=None)
def test_every_status_has_one_verdict(status: int) -> None:
    verdict = classify_status(status)
    assert verdict.fatal == (status in (401, 403, 404, 410))
    assert verdict.ok == (status in (200, 204))
    assert verdict.ok or verdict.message


def test_expired_error_types() -> None:
    assert is_expired_error_type("environment_expired")
    assert is_expired_error_type("token_lifetime_exceeded")
    assert is_expired_error_type("EXPIRED")
    assert not is_expired_error_type("not_found_error")
    assert not is_expired_error_type(None)


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("999999") == 3600.0
    for bad in (None, "", "soon", "-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert parse_retry_after(bad) is None


# ---- poll config ----------------------------------------------------------------------------------


def test_poll_config_defaults_match_reference() -> None:
    c = DEFAULT_POLL_CONFIG
    assert (c.poll_interval_ms_not_at_capacity, c.poll_interval_ms_at_capacity) == (2000, 600_000)
    assert c.non_exclusive_heartbeat_interval_ms == 0
    assert c.multisession_poll_interval_ms_partial_capacity == 2000
    assert (c.reclaim_older_than_ms, c.session_keepalive_interval_v2_ms) == (5000, 120_000)


def test_poll_config_valid_and_partial() -> None:
    parsed = parse_poll_config({"poll_interval_ms_not_at_capacity": 500, "non_exclusive_heartbeat_interval_ms": 60_000,
                                "future_key": "ignored"})
    assert not parsed.fell_back
    assert parsed.config.poll_interval_ms_not_at_capacity == 500
    assert parsed.config.non_exclusive_heartbeat_interval_ms == 60_000
    assert parsed.config.reclaim_older_than_ms == 5000  # missing keys keep their defaults
    assert parse_poll_config(None).config == DEFAULT_POLL_CONFIG and not parse_poll_config(None).fell_back
    assert parse_poll_config({"reclaim_older_than_ms": 7000.0}).config.reclaim_older_than_ms == 7000


@pytest.mark.parametrize("bad", [
    {"poll_interval_ms_not_at_capacity": 99},
    {"poll_interval_ms_not_at_capacity": 0},
    {"poll_interval_ms_at_capacity": 50},
    {"reclaim_older_than_ms": 0},
    {"non_exclusive_heartbeat_interval_ms": -1},
    {"multisession_poll_interval_ms_partial_capacity": "2000"},
    {"multisession_poll_interval_ms_not_at_capacity": True},
    {"poll_interval_ms_at_capacity": 1.5},
    {"poll_interval_ms_at_capacity": 10**12},
    # no at-capacity liveness at all
    {"poll_interval_ms_at_capacity": 0, "non_exclusive_heartbeat_interval_ms": 0},
    {"multisession_poll_interval_ms_at_capacity": 0},
    "not an object",
])
def test_poll_config_invalid_falls_back_whole(bad: object) -> None:
    parsed = parse_poll_config(bad)
    assert parsed.fell_back and parsed.config == DEFAULT_POLL_CONFIG


def test_poll_config_at_capacity_zero_is_fine_with_heartbeats() -> None:
    parsed = parse_poll_config({"poll_interval_ms_at_capacity": 0, "multisession_poll_interval_ms_at_capacity": 0,
                                "non_exclusive_heartbeat_interval_ms": 30_000})
    assert not parsed.fell_back and parsed.config.multisession_poll_interval_ms_at_capacity == 0


def test_poll_interval_by_capacity() -> None:
    c = PollConfig(poll_interval_ms_not_at_capacity=111, poll_interval_ms_at_capacity=222,
                   multisession_poll_interval_ms_not_at_capacity=333,
                   multisession_poll_interval_ms_partial_capacity=444,
                   multisession_poll_interval_ms_at_capacity=555)
    assert [capacity_state(a, 2) for a in (0, 1, 2, 3)] == ["idle", "partial", "full", "full"]
    assert poll_interval_ms(c, "idle", multi_session=True) == 333
    assert poll_interval_ms(c, "partial", multi_session=True) == 444
    assert poll_interval_ms(c, "full", multi_session=True) == 555
    assert poll_interval_ms(c, "idle", multi_session=False) == 111
    assert poll_interval_ms(c, "full", multi_session=False) == 222


# ---- access token timing --------------------------------------------------------------------------


def test_refresh_due() -> None:
    # a 1 h token: refresh in its last 5 minutes
    assert not refresh_due(now=1000.0, expires_at=4600.0, issued_at=1000.0)
    assert not refresh_due(now=4299.0, expires_at=4600.0, issued_at=1000.0)
    assert refresh_due(now=4300.0, expires_at=4600.0, issued_at=1000.0)
    assert refresh_due(now=5000.0, expires_at=4600.0)
    # a 60 s token: at most half its life ahead, not on every call
    assert refresh_margin(160.0, 100.0) == 30.0
    assert not refresh_due(now=120.0, expires_at=160.0, issued_at=100.0)
    assert refresh_due(now=130.0, expires_at=160.0, issued_at=100.0)
    # no expiry: never
    assert not refresh_due(now=1e12, expires_at=None)


def test_expiry_helpers() -> None:
    assert expires_at_from(100.0, 3600) == 3700.0
    for bad in (None, "3600", True, 0, -5, float("nan"), float("inf")):
        assert expires_at_from(100.0, bad) is None
    assert is_expired(now=10.0, expires_at=10.0) and not is_expired(now=9.0, expires_at=10.0)
    assert not is_expired(now=10.0, expires_at=None)


# ---- server URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "url"), [
    ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
    ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
    ("127.0.0.1:8787", "http://127.0.0.1:8787"),
    ("localhost:9000", "http://localhost:9000"),
    ("[::1]:8787", "http://[::1]:8787"),
    ("tether.example.com", "https://tether.example.com"),
    ("HTTPS://Tether.Example.com:8443/base/", "https://tether.example.com:8443/base"),
    ("https://intranet-box", "https://intranet-box"),
    ("intranet-box:8787", "https://intranet-box:8787"),
])
def test_normalize_server_url(raw: str, url: str) -> None:
    assert normalize_server_url(raw) == url


@pytest.mark.parametrize("raw", ["", "  ", "ftp://x", "http://", "https://h/?q=1", "https://h/#f",
                                 "https://u:p@h", "http://h:99999", "not-a-url", "not a url",
                                 "https://bad host", "https://-x.example"])
def test_bad_server_urls(raw: str) -> None:
    with pytest.raises(ServerUrlError):
        normalize_server_url(raw)


def test_plaintext_remote() -> None:
    assert is_plaintext_remote("http://192.168.1.5:8787")
    assert is_plaintext_remote("http://tether.lan")
    assert not is_plaintext_remote("http://127.0.0.1:8787")
    assert not is_plaintext_remote("http://localhost:8787")
    assert not is_plaintext_remote("http://[::1]:8787")
    assert not is_plaintext_remote("https://tether.example.com")
    assert is_loopback_host("app.localhost") and not is_loopback_host("example.com")


# ---- device flow ----------------------------------------------------------------------------------


def test_device_poll_steps() -> None:
    assert device_poll_step("authorization_pending", 5.0).action == "wait"
    slow = device_poll_step("slow_down", 5.0)
    assert slow.action == "wait" and slow.interval == 10.0
    assert device_poll_step("slow_down", 58.0).interval == 60.0
    denied = device_poll_step("access_denied", 5.0)
    assert denied.action == "fail" and "denied" in denied.message
    expired = device_poll_step("expired_token", 5.0)
    assert expired.action == "fail" and "expired" in expired.message and "tether login" in expired.message
    assert device_poll_step("invalid_grant", 5.0).action == "fail"
    other = device_poll_step(None, 5.0, "boom")
    assert other.action == "fail" and "boom" in other.message


def test_initial_interval() -> None:
    assert initial_interval(5) == 5.0
    assert initial_interval(0) == 1.0
    assert initial_interval(10_000) == 60.0
    assert initial_interval(None) == 5.0
    assert initial_interval("5") == 5.0
    assert initial_interval(True) == 5.0
    assert initial_interval(float("nan")) == 5.0
