"""How a client reads an API answer (docs/protocol.md §3.1): the error-body shapes it understands, one
verdict per status (ok / fatal / rate-limited / client / server error), the backoff track each
verdict retries on, expiry and suppressible 403s, and ``Retry-After``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.api_status import (
    ENVIRONMENTS_SUCCESS,
    GENERAL_SUCCESS,
    ErrorDetail,
    backoff_track,
    classify_status,
    extract_error_detail,
    is_expired_error_type,
    is_suppressible_403,
    parse_retry_after,
    refused_login,
)

# ---- error bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "detail"), [
    ({"type": "error", "error": {"type": "not_found_error", "message": "gone"}}, ErrorDetail("gone", "not_found_error")),
    ({"message": "plain"}, ErrorDetail("plain", None)),
    # RFC 6749 token-endpoint errors
    ({"error": "invalid_grant", "error_description": "used"}, ErrorDetail("used", "invalid_grant")),
    ({"error": "invalid_grant"}, ErrorDetail(None, "invalid_grant")),
    ({"error": "invalid_grant", "error_description": "  "}, ErrorDetail(None, "invalid_grant")),
    # a nested error without a message falls back to the top-level one
    ({"error": {"type": "overloaded"}, "message": "try later"}, ErrorDetail("try later", "overloaded")),
    ({"error": "", "message": "top"}, ErrorDetail("top", None)),
    # whitespace-only messages and non-string types say nothing
    ({"error": {"message": "  ", "type": 3}}, ErrorDetail()),
    ({"error": {"message": 7, "type": ""}, "message": "  "}, ErrorDetail()),
    ({"error": ["x"]}, ErrorDetail()),
    (None, ErrorDetail()),
    (["x"], ErrorDetail()),
    ("text", ErrorDetail()),
])
def test_error_body_shapes(body: object, detail: ErrorDetail) -> None:
    assert extract_error_detail(body) == detail


def test_error_detail_whitespace_is_collapsed_and_long_text_clipped() -> None:
    assert extract_error_detail({"message": " a \n\t b "}).message == "a b"
    long = extract_error_detail({"message": "x" * 1000}).message
    assert long is not None and len(long) == 300 and long.endswith("…")
    exact = extract_error_detail({"message": "y" * 300}).message
    assert exact == "y" * 300
    assert extract_error_detail({"error": {"type": "t" * 500}}).error_type == "t" * 100
    assert extract_error_detail({"error": "e" * 500}).error_type == "e" * 100


# ---- verdicts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204])
def test_success_on_every_route(status: int) -> None:
    for success in (ENVIRONMENTS_SUCCESS, GENERAL_SUCCESS):
        verdict = classify_status(status, success=success)
        assert verdict.ok and not verdict.fatal and verdict.message == "" and verdict.track is None


def test_environments_refuse_201_but_sessions_accept_it() -> None:
    refused = classify_status(201, success=ENVIRONMENTS_SUCCESS)
    assert refused.outcome == "client_error" and refused.track == "general"
    assert refused.message == "Request failed with status 201"
    assert classify_status(201, success=GENERAL_SUCCESS).ok


@pytest.mark.parametrize(("status", "etype", "expired"), [
    (401, "authentication_error", False),
    (401, "token_expired", True),
    (403, "permission_error", False),
    (404, "not_found_error", False),
    (410, "environment_expired", True),
])
def test_fatal_statuses_keep_the_servers_error_type(status: int, etype: str, expired: bool) -> None:
    verdict = classify_status(status, ErrorDetail("detail", etype))
    assert verdict.fatal and verdict.error_type == etype and verdict.expired is expired
    assert verdict.track is None


@pytest.mark.parametrize(("status", "etype", "expired"), [
    (401, "authentication_error", False),
    (403, "permission_error", False),
    (404, "not_found_error", False),
    (410, "environment_expired", True),
])
def test_fatal_statuses_without_a_body_get_a_default_type(status: int, etype: str, expired: bool) -> None:
    verdict = classify_status(status)
    assert verdict.fatal and verdict.error_type == etype and verdict.expired is expired and verdict.message


def test_fatal_messages() -> None:
    assert "tether login" in classify_status(401).message
    assert "the credential was not accepted" in classify_status(401).message
    assert "bad signature" in classify_status(401, ErrorDetail("bad signature")).message
    assert classify_status(404).message == "Remote Control may not be available for this organization."
    assert classify_status(404, ErrorDetail("No such environment.")).message == "No such environment."
    assert classify_status(410).message == "The environment expired; register again."
    assert classify_status(410, ErrorDetail("Gone for good.")).message == "Gone for good."
    assert classify_status(403).message == "Access denied: no permission for this action."
    assert classify_status(403, ErrorDetail("nope")).message == "Access denied: nope."


def test_403_expiry_and_policy() -> None:
    expired = classify_status(403, ErrorDetail("x", "session_lifetime_exceeded"))
    assert expired.fatal and expired.expired and "expired" in expired.message
    assert expired.error_type == "session_lifetime_exceeded"
    policy = classify_status(403, ErrorDetail(None, "policy_denied"))
    assert policy.fatal and not policy.expired and "policy" in policy.message
    assert classify_status(403, ErrorDetail("Org says no.", "policy_denied")).message == "Org says no."


@pytest.mark.parametrize(("message", "suppressible"), [
    ("missing scope environments:manage", True),
    ("external_poll_sessions is not enabled", True),
    ("nope", False),
    (None, False),
    ("", False),
])
def test_suppressible_403s(message: str | None, suppressible: bool) -> None:
    assert is_suppressible_403(message) is suppressible
    assert classify_status(403, ErrorDetail(message)).suppressible is suppressible


def test_non_fatal_statuses_and_tracks() -> None:
    limited = classify_status(429)
    assert limited.outcome == "rate_limited" and limited.track == "general"
    assert "Rate limited" in limited.message and limited.error_type == "rate_limit_error"
    assert classify_status(429, ErrorDetail(None, "slow_down")).error_type == "slow_down"
    bad = classify_status(400, ErrorDetail("bad body", "invalid_request_error"))
    assert bad.outcome == "client_error" and bad.track == "general"
    assert bad.message == "Request failed with status 400: bad body"
    assert classify_status(409).outcome == "client_error"
    for status in (500, 502, 503):
        verdict = classify_status(status)
        assert verdict.outcome == "server_error" and verdict.track == "connection"
        assert verdict.message == f"Server error {status}"
    assert classify_status(503, ErrorDetail("overloaded")).message == "Server error 503: overloaded"


@pytest.mark.parametrize(("outcome", "track"), [
    ("ok", None), ("fatal", None), ("rate_limited", "general"), ("client_error", "general"),
    ("server_error", "connection"),
])
def test_backoff_track_per_outcome(outcome: str, track: str | None) -> None:
    assert backoff_track(outcome) == track  # type: ignore[arg-type]


@given(st.integers(min_value=100, max_value=599))
@settings(deadline=None)
def test_every_status_has_one_verdict(status: int) -> None:
    verdict = classify_status(status)
    assert verdict.fatal == (status in (401, 403, 404, 410))
    assert verdict.ok == (status in (200, 204))
    assert verdict.ok or verdict.message
    assert (verdict.track is None) == (verdict.ok or verdict.fatal)


@pytest.mark.parametrize(("error_type", "expired"), [
    ("environment_expired", True), ("token_lifetime_exceeded", True), ("EXPIRED", True),
    ("not_found_error", False), ("", False), (None, False),
])
def test_expired_error_types(error_type: str | None, expired: bool) -> None:
    assert is_expired_error_type(error_type) is expired


# ---- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), (" 1.5 ", 1.5), ("0", 0.0), ("999999", 3600.0)])
def test_retry_after_seconds_are_capped(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_cap_is_a_parameter() -> None:
    assert parse_retry_after("90", cap=60.0) == 60.0


@pytest.mark.parametrize("bad", [None, "", "soon", "-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_retry_after_that_is_not_seconds_is_ignored(bad: str | None) -> None:
    assert parse_retry_after(bad) is None


def test_refused_login_names_the_credential_and_the_fix() -> None:
    from_env = refused_login("https://t.example", from_env=True)
    assert "TETHER_TOKEN" in from_env and "`tether admin token create`" in from_env
    stored = refused_login("https://t.example", from_env=False)
    assert stored.endswith("Run `tether login --server https://t.example` to log in again.")
