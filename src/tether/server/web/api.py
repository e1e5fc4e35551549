"""Server-side hooks of the web client: static files, rich rendering, members.

* ``GET /static/{name}``: the client's ES modules, CSS and icon (see :mod:`.assets`).
* ``POST /web/render``: ``{"items": [{"type": "markdown"|"code"|"diff", …}]}`` →
  ``{"html": [...]}``, sanitised HTML from :mod:`.render` (any logged-in user; CSRF on
  cookie requests like every other POST), rendered off the event loop (:mod:`.renderer`),
  "" for an item too large to render.
* ``GET /web/sessions/{id}/undelivered``: the session's inbound events that the worker
  has not processed yet, with their delivery state (every other prompt is processed), so
  a page that (re)loads shows queued / delivered / processed truthfully.
* ``GET /web/members``: the organisation's people and roles; owners may add a person
  (``POST``: a one-time login link is returned, once) and change roles (``PATCH``).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import InvalidRequest, NotFound
from tether.server.api.common import (
    JSONResponse,
    ctx_of,
    parse_session_id,
    read_object,
    user,
)
from tether.server.views import member_json
from tether.server.web.assets import load

router = APIRouter()

MAX_RENDER_BODY = 1 << 20  # the web client sends batches well under this (common.js)
MAX_RENDER_ITEMS = 300
ROLES = ("owner", "member", "viewer")
_EMAIL = re.compile(r"[^@\s]{1,200}@[^@\s]{1,200}")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str, request: Request) -> Response:
    asset = load(name)
    if asset is None:
        raise NotFound(f"No static file {name!r}.")
    headers = {"etag": asset.etag, "cache-control": "no-cache", "x-content-type-options": "nosniff"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


@router.post("/web/render")
async def render(request: Request) -> Response:
    await user(request, write=True)
    body = await read_object(request, allow_empty=False, max_bytes=MAX_RENDER_BODY)
    items = body.get("items")
    if not isinstance(items, list) or len(items) > MAX_RENDER_ITEMS:
        raise InvalidRequest(f"'items' must be a list of at most {MAX_RENDER_ITEMS} items.")
    return JSONResponse({"html": await ctx_of(request).renderer.render(items)})


@router.get("/web/sessions/{session_id}/undelivered")
async def undelivered(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    body = parse_session_id(session_id)
    principal = await user(request)
    rows = await ctx.sessions.undelivered(body, principal.org_id, 1000)
    return JSONResponse({"data": [{"uuid": r.uuid, "sequence_num": r.seq, "status": r.delivery}
                                  for r in rows]})


@router.get("/web/members")
async def members(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    rows = await ctx.accounts.members(principal.org_id)
    return JSONResponse({"data": [member_json(r, principal.user_id) for r in rows]})


@router.post("/web/members")
async def add_member(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_owner()
    body = await read_object(request, allow_empty=False)
    email, role = body.get("email"), body.get("role", "member")
    if not isinstance(email, str) or not _EMAIL.fullmatch(email.strip()):
        raise InvalidRequest("'email' must be an email address.")
    if role not in ROLES:
        raise InvalidRequest(f"'role' must be one of {', '.join(ROLES)}.")
    row, link = await ctx.accounts.add_member(principal, email.strip(), role)
    return JSONResponse({**member_json(row, principal.user_id), "login_link": link})


@router.patch("/web/members/{user_id}")
async def set_role(user_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_owner()
    body = await read_object(request, allow_empty=False)
    role = body.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"'role' must be one of {', '.join(ROLES)}.")
    target = await ctx.accounts.set_role(principal, user_id, role)
    return JSONResponse(member_json(target, principal.user_id))
