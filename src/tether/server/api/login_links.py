"""``POST /v1/login-links``: a short-lived one-time login link for the caller (docs/protocol.md §3).

A running client that holds the person's credential (the bridge's QR code, for a phone that
is not logged in yet) asks for a link that logs a browser in as that same person and then
opens ``next``. Any user credential may ask — a link grants no more than the credential that
minted it, and it works once, for ``shared_login_link_ttl_s`` (10 minutes by default).
``next`` must be a same-origin path (:func:`tether.protocol.redirects.safe_next_path`);
anything else is refused with 400 rather than silently replaced.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import InvalidRequest
from tether.protocol.redirects import DEFAULT_NEXT, MAX_NEXT_LEN, safe_next_path
from tether.server.api.common import JSONResponse, ctx_of, read_object, user
from tether.server.auth.service import login_path
from tether.server.clock import iso

router = APIRouter()


@router.post("/v1/login-links")
async def create_login_link(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    body = await read_object(request, max_bytes=4 * MAX_NEXT_LEN)
    raw = body.get("next", DEFAULT_NEXT)
    next_path = safe_next_path(raw)
    if next_path is None:
        raise InvalidRequest("'next' must be a path on this server, like /code?bridge=env_… "
                             f"(a leading '/', printable ASCII, no '//' or backslash, at most {MAX_NEXT_LEN} "
                             "characters).")
    ttl = ctx.config.shared_login_link_ttl_s
    issued = await ctx.accounts.create_login_link(principal, next_path)
    path = login_path(issued.secret, next_path)
    return JSONResponse({"url": f"{ctx.config.url}{path}", "path": path, "next": next_path,
                         "expires_in": int(ttl), "expires_at": iso(issued.row.expires_at)})
