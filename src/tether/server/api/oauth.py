"""OAuth 2.0 Device Authorization Grant (RFC 8628), refresh-token rotation, revocation.

Errors use Tether's one JSON shape; ``error.type`` carries the RFC error code
(``authorization_pending``, ``slow_down``, ``expired_token``, ``access_denied``, ``invalid_grant``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import InvalidRequest, RateLimited
from tether.server.api.common import JSONResponse, ctx_of, read_json, read_limited
from tether.server.clock import now
from tether.server.service.accounts import oauth_error

router = APIRouter()
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


async def _form_or_json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raw = await read_limited(request, 64 * 1024)
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    body = await read_json(request, allow_empty=True, max_bytes=64 * 1024)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


@router.post("/oauth/device/code")
async def device_code(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await _form_or_json(request)
    client = str(body.get("client_id") or "tether-cli")[:100]
    wait = ctx.login_limiter.check(f"device:{request.client.host if request.client else '?'}", now())
    if wait:
        raise RateLimited("Too many device codes requested; wait and try again.", retry_after=wait)
    grant = await ctx.accounts.device_code(client)
    base = ctx.config.url
    return JSONResponse({
        "device_code": grant.device_code,
        "user_code": grant.user_code,
        "verification_uri": f"{base}/device",
        "verification_uri_complete": f"{base}/device?user_code={grant.user_code}",
        "expires_in": int(ctx.config.device_code_ttl_s),
        "interval": ctx.config.limits.device_poll_interval_s,
    })


@router.post("/oauth/token")
async def token(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await _form_or_json(request)
    grant = body.get("grant_type")
    if grant == DEVICE_GRANT:
        code = body.get("device_code")
        if not isinstance(code, str):
            raise oauth_error("invalid_grant", "Unknown device_code.")
        return JSONResponse(await ctx.accounts.device_grant(code))
    if grant == "refresh_token":
        refresh = body.get("refresh_token")
        if not isinstance(refresh, str):
            raise oauth_error("invalid_grant", "Unknown refresh_token.")
        return JSONResponse(await ctx.accounts.refresh_grant(refresh))
    raise oauth_error("unsupported_grant_type", "grant_type must be the device_code grant or refresh_token.")


@router.post("/oauth/revoke")
async def revoke(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await _form_or_json(request)
    value = body.get("token")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'token' is required.")
    await ctx.accounts.revoke(value)
    # RFC 7009: 200 whether or not the token was known.
    return JSONResponse({})
