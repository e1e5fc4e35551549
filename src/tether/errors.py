"""The one small exception tree of Tether.

Library exceptions are translated into these at the boundary; the server renders
every :class:`TetherError` as the single JSON error shape of PROTOCOL.md §3.
"""

from __future__ import annotations


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
