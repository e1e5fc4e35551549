"""When a user access token should be refreshed (docs/protocol.md §1; pure, time passed in).

Access tokens are short-lived (default 1 h) and come with a rotating refresh token. A client
refreshes *before* expiry: ``margin`` seconds ahead (default 5 min), but never more than
half the token's lifetime ahead, so short-lived tokens are not refreshed on every call.
A token without an expiry (a personal API token) never needs a refresh.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "DEFAULT_REFRESH_MARGIN_S",
    "expires_at_from",
    "is_expired",
    "refresh_due",
    "refresh_margin",
]

DEFAULT_REFRESH_MARGIN_S: Final = 300.0


def expires_at_from(now: float, expires_in: object) -> float | None:
    """``expires_in`` seconds of an OAuth token response → an absolute time (None if absent/invalid)."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return None
    if not math.isfinite(expires_in) or expires_in <= 0:
        return None
    return now + float(expires_in)


def refresh_margin(expires_at: float, issued_at: float | None, margin: float = DEFAULT_REFRESH_MARGIN_S) -> float:
    if issued_at is None or issued_at >= expires_at:
        return margin
    return min(margin, (expires_at - issued_at) / 2)


def refresh_due(*, now: float, expires_at: float | None, issued_at: float | None = None,
                margin: float = DEFAULT_REFRESH_MARGIN_S) -> bool:
    """True when a token expiring at ``expires_at`` should be refreshed at ``now``."""
    if expires_at is None:
        return False
    return now >= expires_at - refresh_margin(expires_at, issued_at, margin)


def is_expired(*, now: float, expires_at: float | None) -> bool:
    return expires_at is not None and now >= expires_at
