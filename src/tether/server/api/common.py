"""Request helpers shared by the routers: JSON bodies, credentials, rate limits."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request, WebSocket
from fastapi.responses import Response

from tether.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TetherError,
)
from tether.protocol.ids import is_valid_id, prefixed_body, session_body
from tether.server import jsonio
from tether.server.auth.secrets import csrf_token
from tether.server.auth.service import USER_KINDS, Principal
from tether.server.clock import now
from tether.server.context import ServerContext

SESSION_COOKIE = "tether_session"
CSRF_HEADER = "x-csrf-token"


def ctx_of(request: Request | WebSocket) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)  # a row stored before the depth limit is served, not a 500


def error_response(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one error shape: ``{"type": "error", "error": {"type": …, "message": …}}``."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def tether_error_response(exc: TetherError) -> Response:
    headers = {"retry-after": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return error_response(exc.status, exc.error_type, exc.message, headers)


def internal_error_response() -> Response:
    """For an exception nobody meant (logged by the caller, never shown to the client)."""
    return error_response(500, "api_error", "Internal server error (this is a bug; see the server log).")


async def read_json(request: Request, *, max_bytes: int | None = None, allow_empty: bool = False,
                    check_depth: bool = True) -> Any:
    ctx = ctx_of(request)
    chunks = await read_limited(request, max_bytes or ctx.config.limits.max_body_bytes)
    if not chunks.strip():
        if allow_empty:
            return {}
        raise InvalidRequest("The request body must be JSON.")
    return jsonio.parse(chunks, check=check_depth)


async def read_limited(request: Request, cap: int) -> bytes:
    """The raw body, streamed: 413 as soon as it (or its Content-Length) passes ``cap`` bytes."""
    declared = declared_length(request)
    if declared is not None and declared > cap:
        raise PayloadTooLarge(f"The request body is larger than {cap} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise PayloadTooLarge(f"The request body is larger than {cap} bytes.")
    return bytes(body)


async def read_object(request: Request, *, allow_empty: bool = True, max_bytes: int | None = None,
                      check_depth: bool = True) -> dict[str, Any]:
    """The body as a JSON object; ``check_depth=False`` only where the caller checks the depth of
    every part itself (a worker's event batch: jsonio.check_batch)."""
    body = await read_json(request, allow_empty=allow_empty, max_bytes=max_bytes, check_depth=check_depth)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def bearer(request: Request | WebSocket) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        return value.strip()
    return None


def rate_limit(ctx: ServerContext, key: str) -> None:
    wait = ctx.limiter.check(key, now())
    if wait:
        raise RateLimited(f"Too many requests; retry in {wait} s.", retry_after=wait)


def user_credential(request: Request | WebSocket) -> tuple[str, tuple[str, ...]]:
    """The secret a person authenticates with and the credential kinds it may be: a Bearer
    user token, else the web session cookie."""
    token = bearer(request)
    if token is not None:
        return token, USER_KINDS
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise AuthenticationFailed("Log in first: send 'Authorization: Bearer <token>'.")
    return cookie, ("web_session",)


async def user(request: Request | WebSocket, *, write: bool = False) -> Principal:
    """The calling person: a Bearer user token, or the web session cookie (+ CSRF on writes)."""
    ctx = ctx_of(request)
    secret, kinds = user_credential(request)
    principal = await ctx.auth.principal(secret, kinds=kinds)
    if kinds == ("web_session",):
        cookie = secret
        if write and isinstance(request, Request):
            sent = request.headers.get(CSRF_HEADER, "")
            if sent != csrf_token(cookie, ctx.auth.csrf_key):
                raise AuthenticationFailed("Missing or wrong CSRF token (X-CSRF-Token).",
                                           error_type="permission_error", status=403)
    rate_limit(ctx, principal.token_id)
    return principal


def parse_session_id(value: str) -> str:
    """Either costume (session_/cse_) → the body; anything else is a 404."""
    if not is_valid_id(value):
        raise NotFound("No such session.")
    body = session_body(value)
    if body is None:
        raise NotFound("No such session.")
    return body


def parse_prefixed(value: str, prefix: str, what: str) -> str:
    if not is_valid_id(value) or prefixed_body(value, prefix) is None:
        raise NotFound(f"No such {what}.")
    return value


_DIGITS = re.compile(r"[0-9]{1,18}")
MAX_CURSOR = 2**62


def parse_count(raw: str | None, name: str, *, hi: int = MAX_CURSOR) -> int | None:
    """A non-negative decimal integer from a query/header value, or None when absent.

    ``str.isdigit()`` alone admits '²' (which ``int()`` refuses) and values SQLite cannot bind.
    """
    if raw is None or raw == "":
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > hi:
        raise InvalidRequest(f"'{name}' must be a non-negative integer up to {hi}.")
    return int(raw)


def declared_length(request: Request | WebSocket) -> int | None:
    declared = request.headers.get("content-length")
    return int(declared) if declared and _DIGITS.fullmatch(declared) else None


def query_int(request: Request, name: str, default: int | None, *, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"Query parameter '{name}' must be an integer.") from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"Query parameter '{name}' must be between {lo} and {hi}.")
    return value
