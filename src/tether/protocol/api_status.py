"""How a client reads an API answer (docs/protocol.md §3.1, ``handleErrorStatus`` in ``bridgeApi.ts``).

Pure decisions, no I/O: given a status code and the parsed error body, say whether the call
succeeded, must stop the caller (*fatal*: 401, 403, 404, 410), should be retried on the
"general" backoff track (429 and other 4xx) or on the "connection" track (5xx and network
errors), and which message a person should see.

Error bodies understood: ``{"message": "..."}`` and ``{"error": {"message": "...", "type": "..."}}``.
An ``error.type`` containing ``expired`` or ``lifetime`` means the credential or environment
expired. 403s that mention ``external_poll_sessions`` or ``environments:manage`` are fatal
but *suppressible* (not worth showing to the user).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ENVIRONMENTS_SUCCESS",
    "FATAL_STATUSES",
    "GENERAL_SUCCESS",
    "BackoffTrack",
    "ErrorDetail",
    "Outcome",
    "StatusVerdict",
    "backoff_track",
    "classify_status",
    "extract_error_detail",
    "is_expired_error_type",
    "is_suppressible_403",
    "parse_retry_after",
    "refused_login",
]

Outcome = Literal["ok", "fatal", "rate_limited", "client_error", "server_error"]
BackoffTrack = Literal["connection", "general"]

ENVIRONMENTS_SUCCESS: Final = frozenset({200, 204})
"""The environments client accepts only these (201 is *not* success there)."""
GENERAL_SUCCESS: Final = frozenset({200, 201, 204})
"""Sessions and code-session creates accept 200 or 201."""

FATAL_STATUSES: Final = frozenset({401, 403, 404, 410})
_SUPPRESSIBLE_403_MARKERS: Final = ("external_poll_sessions", "environments:manage")
_MAX_DETAIL: Final = 300


@dataclass(frozen=True)
class ErrorDetail:
    """What an error body says (either may be missing)."""

    message: str | None = None
    error_type: str | None = None


@dataclass(frozen=True)
class StatusVerdict:
    status: int
    outcome: Outcome
    message: str
    """A sentence for a person (empty for success)."""
    error_type: str | None = None
    expired: bool = False
    suppressible: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def fatal(self) -> bool:
        return self.outcome == "fatal"

    @property
    def track(self) -> BackoffTrack | None:
        return backoff_track(self.outcome)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def extract_error_detail(body: object) -> ErrorDetail:
    """``{"error": {"message", "type"}}`` or ``{"message"}``; anything else gives an empty detail."""
    if not isinstance(body, dict):
        return ErrorDetail()
    message: str | None = None
    error_type: str | None = None
    error = body.get("error")
    if isinstance(error, dict):
        raw_message = error.get("message")
        raw_type = error.get("type")
        if isinstance(raw_message, str) and raw_message.strip():
            message = _clip(raw_message)
        if isinstance(raw_type, str) and raw_type:
            error_type = raw_type[:100]
    elif isinstance(error, str) and error:
        # RFC 6749 style {"error": "invalid_grant", "error_description": "..."}
        error_type = error[:100]
        description = body.get("error_description")
        if isinstance(description, str) and description.strip():
            message = _clip(description)
    if message is None:
        raw_message = body.get("message")
        if isinstance(raw_message, str) and raw_message.strip():
            message = _clip(raw_message)
    return ErrorDetail(message, error_type)


def is_expired_error_type(error_type: str | None) -> bool:
    """Reference: any error type containing ``expired`` or ``lifetime`` is an expiry."""
    if not error_type:
        return False
    lowered = error_type.lower()
    return "expired" in lowered or "lifetime" in lowered


def is_suppressible_403(message: str | None) -> bool:
    return bool(message) and any(marker in (message or "") for marker in _SUPPRESSIBLE_403_MARKERS)


def backoff_track(outcome: Outcome) -> BackoffTrack | None:
    """Connection/5xx trouble → ``connection`` track; 429 and other 4xx → ``general``; fatal/ok → None."""
    if outcome == "server_error":
        return "connection"
    if outcome in ("rate_limited", "client_error"):
        return "general"
    return None


def classify_status(status: int, detail: ErrorDetail | None = None, *,
                    success: frozenset[int] = ENVIRONMENTS_SUCCESS) -> StatusVerdict:
    """The verdict for one HTTP answer."""
    detail = detail or ErrorDetail()
    text = detail.message
    etype = detail.error_type
    if status in success:
        return StatusVerdict(status, "ok", "")
    if status == 401:
        return StatusVerdict(status, "fatal",
                             f"Authentication failed ({text or 'the credential was not accepted'}). "
                             "Run `tether login` to log in again.",
                             etype or "authentication_error", expired=is_expired_error_type(etype))
    if status == 403:
        if is_expired_error_type(etype):
            return StatusVerdict(status, "fatal",
                                 "Remote Control session has expired. Please restart `tether remote-control`.",
                                 etype, expired=True)
        if etype == "policy_denied":
            return StatusVerdict(status, "fatal",
                                 text or "Remote Control is turned off by your organisation's policy.",
                                 etype)
        return StatusVerdict(status, "fatal", f"Access denied: {text or 'no permission for this action'}.",
                             etype or "permission_error", suppressible=is_suppressible_403(text))
    if status == 404:
        return StatusVerdict(status, "fatal",
                             text or "Remote Control may not be available for this organization.",
                             etype or "not_found_error")
    if status == 410:
        return StatusVerdict(status, "fatal",
                             text or "The environment expired; register again.",
                             etype or "environment_expired", expired=True)
    if status == 429:
        return StatusVerdict(status, "rate_limited", "Rate limited (429). Polling too frequently.",
                             etype or "rate_limit_error")
    if status < 500:
        # any other answer below 500 that is not success for this route (incl. a 201 on
        # an environments route) is a non-fatal error
        what = f": {text}" if text else ""
        return StatusVerdict(status, "client_error", f"Request failed with status {status}{what}", etype)
    return StatusVerdict(status, "server_error", f"Server error {status}" + (f": {text}" if text else ""),
                         etype)


def parse_retry_after(value: str | None, *, cap: float = 3600.0) -> float | None:
    """``Retry-After`` in integer/decimal seconds (HTTP dates are not used by Tether) → seconds, or None."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def refused_login(url: str, *, from_env: bool) -> str:
    """What a command says when ``url`` answers 401 to its credential: the stored login (``tether
    login``) or ``TETHER_TOKEN`` (``from_env``), and what to do about it."""
    if from_env:
        return (f"{url} does not accept TETHER_TOKEN. Set it to a valid personal API token (`tether admin token "
                "create` on the server's machine), or unset it and run `tether login`.")
    return f"{url} no longer accepts this machine's login. Run `tether login --server {url}` to log in again."
