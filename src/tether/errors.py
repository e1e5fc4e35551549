"""The one small exception tree of Tether.

Library exceptions are translated into these at the boundary; the server renders
every :class:`TetherError` as the single JSON error shape of docs/protocol.md §3.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ApiUnavailable",
    "AuthenticationFailed",
    "BridgeFatalError",
    "Conflict",
    "Gone",
    "InvalidRequest",
    "NotFound",
    "NotLoggedIn",
    "PayloadTooLarge",
    "PermissionDenied",
    "PolicyDenied",
    "ProtocolError",
    "RateLimited",
    "TetherError",
]


class TetherError(Exception):
    """Base of every error Tether raises on purpose."""

    status: int = 500
    error_type: str = "api_error"

    def __init__(self, message: str, *, error_type: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_type is not None:
            self.error_type = error_type
        if status is not None:
            self.status = status

    def to_body(self) -> dict[str, object]:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


class InvalidRequest(TetherError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(TetherError):
    status = 401
    error_type = "authentication_error"


class PermissionDenied(TetherError):
    status = 403
    error_type = "permission_error"


class PolicyDenied(PermissionDenied):
    error_type = "policy_denied"


class NotFound(TetherError):
    status = 404
    error_type = "not_found_error"


class Conflict(TetherError):
    status = 409
    error_type = "conflict_error"


class Gone(TetherError):
    status = 410
    error_type = "environment_expired"


class PayloadTooLarge(TetherError):
    status = 413
    error_type = "payload_too_large"


class RateLimited(TetherError):
    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class ProtocolError(TetherError):
    """A peer broke the wire protocol (bad frame, bad message)."""

    status = 400
    error_type = "invalid_request_error"


# ---- the client side of the wire (tether.client.api) -------------------------------------------

class ApiError(TetherError):
    """A Tether API answered a client's request with an error that is not fatal by itself
    (429, or a 4xx other than 401/403/404/410): retry on the "general" backoff track.

    ``status`` is the HTTP status received, ``error_type`` the body's ``error.type``,
    ``retry_after`` the ``Retry-After`` seconds when the server sent one.
    """

    error_type = "api_error"

    def __init__(self, message: str, *, status: int, error_type: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, error_type=error_type, status=status)
        self.retry_after = retry_after

    @property
    def fatal(self) -> bool:
        return False


class BridgeFatalError(ApiError):
    """401, 403, 404 or 410 (after one token refresh where that applies): the caller must stop
    (reference ``BridgeFatalError``). ``expired`` marks an expired credential or environment,
    ``suppressible`` a 403 not worth showing to the user."""

    def __init__(self, message: str, *, status: int, error_type: str | None = None,
                 expired: bool = False, suppressible: bool = False) -> None:
        super().__init__(message, status=status, error_type=error_type)
        self.expired = expired
        self.suppressible = suppressible

    @property
    def fatal(self) -> bool:
        return True


class ApiUnavailable(TetherError):
    """The server could not be reached (``kind="connection"``: refused, reset, timed out) or
    answered 5xx (``kind="server"``): retry on the "connection" backoff track."""

    status = 503
    error_type = "api_unavailable"

    def __init__(self, message: str, *, kind: str = "connection", http_status: int | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status
        self.reason = reason or message
        """The cause alone ("All connection attempts failed"), for messages that name the server themselves."""


class NotLoggedIn(TetherError):
    """No credentials for the server (run `tether login`, or set TETHER_TOKEN)."""

    status = 401
    error_type = "not_logged_in"
