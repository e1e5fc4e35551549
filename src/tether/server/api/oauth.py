"""OAuth 2.0 Device Authorization Grant (RFC 8628), refresh-token rotation, revocation.

Errors use Tether's one JSON shape; ``error.type`` carries the RFC error code
(``authorization_pending``, ``slow_down``, ``expired_token``, ``access_denied``, ``invalid_grant``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import InvalidRequest, PayloadTooLarge, RateLimited, TetherError
from tether.server.api.common import (
    JSONResponse,
    close_streams_after_commit,
    ctx_of,
    declared_length,
    read_json,
)
from tether.server.auth import secrets as sec
from tether.server.clock import now
from tether.server.context import ServerContext

router = APIRouter()
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


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


async def _form_or_json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raw = await read_limited(request, 64 * 1024)
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    body = await read_json(request, allow_empty=True, max_bytes=64 * 1024)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _oauth_error(code: str, message: str, status: int = 400) -> TetherError:
    return TetherError(message, error_type=code, status=status)


@router.post("/oauth/device/code")
async def device_code(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await _form_or_json(request)
    client = str(body.get("client_id") or "tether-cli")[:100]
    wait = ctx.login_limiter.check(f"device:{request.client.host if request.client else '?'}", now())
    if wait:
        raise RateLimited("Too many device codes requested; wait and try again.", retry_after=wait)
    code = sec.user_code()
    async with ctx.store.write() as tx:
        issued = await ctx.auth.issue(tx, "device_code", {}, ttl=ctx.config.device_code_ttl_s,
                                      extra={"status": "pending", "client_id": client, "last_poll": 0},
                                      lookup=code.replace("-", ""))
    base = ctx.config.url
    return JSONResponse({
        "device_code": issued.secret,
        "user_code": code,
        "verification_uri": f"{base}/device",
        "verification_uri_complete": f"{base}/device?user_code={code}",
        "expires_in": int(ctx.config.device_code_ttl_s),
        "interval": ctx.config.limits.device_poll_interval_s,
    })


@router.post("/oauth/token")
async def token(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await _form_or_json(request)
    grant = body.get("grant_type")
    if grant == DEVICE_GRANT:
        return JSONResponse(await _device_grant(ctx, body))
    if grant == "refresh_token":
        return JSONResponse(await _refresh_grant(ctx, body))
    raise _oauth_error("unsupported_grant_type", "grant_type must be the device_code grant or refresh_token.")


async def _device_grant(ctx: ServerContext, body: dict[str, Any]) -> dict[str, Any]:
    code = body.get("device_code")
    if not isinstance(code, str) or sec.kind_of(code) != "device_code":
        raise _oauth_error("invalid_grant", "Unknown device_code.")
    t = now()
    async with ctx.store.write() as tx:
        row = await tx.token_by_hash(sec.hash_secret(code))
        if row is None or row["kind"] != "device_code" or row["revoked"]:
            raise _oauth_error("invalid_grant", "Unknown or used device_code.")
        if row["expires_at"] is not None and row["expires_at"] <= t:
            raise _oauth_error("expired_token", "The device code expired; start `tether login` again.")
        extra = dict(row["extra"] or {})
        interval = ctx.config.limits.device_poll_interval_s
        too_fast = False
        if extra.get("status") == "pending":
            too_fast = t - float(extra.get("last_poll", 0)) < interval * 0.8
            extra["last_poll"] = t
            await tx.update_token(row["id"], extra=extra)
    # raised after the commit: an exception inside the transaction would roll back last_poll
    if too_fast:
        raise _oauth_error("slow_down", f"Poll at most every {interval} s.")
    status = extra.get("status")
    if status == "pending":
        raise _oauth_error("authorization_pending", "Waiting for approval in the browser.")
    if status == "denied":
        raise _oauth_error("access_denied", "The request was denied.")
    async with ctx.store.write() as tx:
        row = await tx.token_by_hash(sec.hash_secret(code))
        if row is None or row["revoked"]:
            raise _oauth_error("invalid_grant", "The device_code was already used.")
        await tx.update_token(row["id"], revoked=True)
        user = await tx.get_user(extra["user_id"])
        if user is None:
            raise _oauth_error("invalid_grant", "The approving user no longer exists.")
        return await ctx.auth.issue_session_pair(tx, user)


async def _refresh_grant(ctx: ServerContext, body: dict[str, Any]) -> dict[str, Any]:
    refresh = body.get("refresh_token")
    if not isinstance(refresh, str) or sec.kind_of(refresh) != "refresh":
        raise _oauth_error("invalid_grant", "Unknown refresh_token.")
    async with ctx.store.write() as tx:
        row = await tx.token_by_hash(sec.hash_secret(refresh))
        if row is None or row["kind"] != "refresh":
            raise _oauth_error("invalid_grant", "Unknown refresh_token.")
        family = (row["extra"] or {}).get("family")
        reused = bool(row["revoked"])
        rotated = row["last_used_at"] is not None  # revoked by rotation, not by /oauth/revoke
        if reused:
            # A rotated refresh token used again: someone copied it. Revoke the whole family
            # (and commit that: the error is raised after the transaction, not inside it).
            if family:
                close_streams_after_commit(ctx, tx, await tx.revoke_token_family(family),
                                           "The login was revoked (a refresh token was reused).")
        else:
            if row["expires_at"] is not None and row["expires_at"] <= now():
                raise _oauth_error("invalid_grant", "The refresh token expired; log in again.")
            await tx.update_token(row["id"], revoked=True, last_used_at=now())
            user = await tx.get_user(row["user_id"])
            if user is None:
                raise _oauth_error("invalid_grant", "The user no longer exists.")
            return await ctx.auth.issue_session_pair(tx, user, family=family)
    if rotated:
        raise _oauth_error("invalid_grant", "The refresh token was already used; log in again.")
    raise _oauth_error("invalid_grant", "The refresh token was revoked; log in again.")


@router.post("/oauth/revoke")
async def revoke(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await _form_or_json(request)
    value = body.get("token")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'token' is required.")
    async with ctx.store.write() as tx:
        row = await tx.token_by_hash(sec.hash_secret(value))
        if row is not None and row["kind"] in ("access", "refresh", "personal"):
            family = (row["extra"] or {}).get("family")
            revoked = await tx.revoke_token_family(family) if family else []
            await tx.update_token(row["id"], revoked=True)
            close_streams_after_commit(ctx, tx, [*revoked, row["id"]], "The token was revoked.")
    # RFC 7009: 200 whether or not the token was known.
    return JSONResponse({})


async def approve_device(ctx: ServerContext, user_id: str, code: str, approve: bool) -> None:
    lookup = code.strip().upper().replace("-", "").replace(" ", "")
    async with ctx.store.write() as tx:
        row = await tx.token_by_lookup("device_code", lookup)
        if row is None or row["revoked"] or (row["expires_at"] or 0) <= now():
            raise InvalidRequest("That code is unknown or expired; run `tether login` again.")
        extra = dict(row["extra"] or {})
        if extra.get("status") != "pending":
            raise InvalidRequest("That code was already used.")
        extra.update(status="approved" if approve else "denied", user_id=user_id)
        await tx.update_token(row["id"], extra=extra)
        user = await tx.get_user(user_id)
        if user:
            await tx.insert_audit(user["org_id"], user_id, "device.approve" if approve else "device.deny",
                                  None, {"client_id": extra.get("client_id")}, now())


