"""When a user access token is refreshed (docs/protocol.md §1): ``margin`` seconds before expiry,
but never more than half the token's life ahead; tokens without an expiry never are."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.access_token import (
    DEFAULT_REFRESH_MARGIN_S,
    expires_at_from,
    is_expired,
    refresh_due,
    refresh_margin,
)


def test_an_hour_token_is_refreshed_in_its_last_five_minutes() -> None:
    assert not refresh_due(now=1000.0, expires_at=4600.0, issued_at=1000.0)
    assert not refresh_due(now=4299.0, expires_at=4600.0, issued_at=1000.0)
    assert refresh_due(now=4300.0, expires_at=4600.0, issued_at=1000.0)
    assert refresh_due(now=5000.0, expires_at=4600.0)


def test_a_short_token_is_refreshed_at_half_its_life_not_on_every_call() -> None:
    assert refresh_margin(160.0, 100.0) == 30.0
    assert not refresh_due(now=120.0, expires_at=160.0, issued_at=100.0)
    assert refresh_due(now=130.0, expires_at=160.0, issued_at=100.0)


@pytest.mark.parametrize("issued_at", [None, 160.0, 200.0])
def test_unknown_or_nonsensical_issue_time_uses_the_full_margin(issued_at: float | None) -> None:
    assert refresh_margin(160.0, issued_at) == DEFAULT_REFRESH_MARGIN_S
    assert refresh_margin(160.0, issued_at, margin=10.0) == 10.0


def test_a_token_without_expiry_is_never_refreshed_nor_expired() -> None:
    assert not refresh_due(now=1e12, expires_at=None)
    assert not is_expired(now=1e12, expires_at=None)


def test_expiry_is_inclusive() -> None:
    assert is_expired(now=10.0, expires_at=10.0) and not is_expired(now=9.0, expires_at=10.0)


@pytest.mark.parametrize(("expires_in", "at"), [(3600, 3700.0), (0.5, 100.5)])
def test_expires_in_becomes_an_absolute_time(expires_in: float, at: float) -> None:
    assert expires_at_from(100.0, expires_in) == at


@pytest.mark.parametrize("bad", [None, "3600", True, False, 0, -5, float("nan"), float("inf")])
def test_invalid_expires_in_means_no_expiry(bad: object) -> None:
    assert expires_at_from(100.0, bad) is None


@given(issued=st.floats(0, 1e9), life=st.floats(1e-3, 1e7), now=st.floats(0, 2e9))
@settings(deadline=None)
def test_refresh_is_due_before_expiry_and_never_in_the_first_half(issued: float, life: float, now: float) -> None:
    expires = issued + life
    due = refresh_due(now=now, expires_at=expires, issued_at=issued)
    if now >= expires:
        assert due
    if now < issued + life / 2 and now < expires - DEFAULT_REFRESH_MARGIN_S:
        assert not due
