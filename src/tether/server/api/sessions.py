"""Sessions API: S1–S7 (docs/protocol.md §3.3) and the permission list (docs/protocol.md §3)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import InvalidRequest
from tether.protocol.archive import ARCHIVE_REASONS
from tether.server.api.common import (
    JSONResponse,
    bearer,
    ctx_of,
    parse_session_id,
    query_int,
    read_object,
    user,
)
from tether.server.api.direct import frames_first
from tether.server.auth.secrets import kind_of
from tether.server.clock import now
from tether.server.context import ServerContext
from tether.server.service.sessions import NewSession, parse_title
from tether.server.views import permission_json, session_json

router = APIRouter()
STATUSES = ("idle", "running", "requires_action", "archived")


def _initial_events(body: dict[str, Any]) -> list[Any]:
    events = [] if body.get("events") is None else body["events"]
    if not isinstance(events, list):
        raise InvalidRequest("'events' must be a list.")
    return [item["data"] if isinstance(item, dict) and item.get("type") == "event" and "data" in item else item
            for item in events]


async def session_response(ctx: ServerContext, body: str, org_id: str, *, prefix: str = "session_") -> Response:
    session, online = await ctx.sessions.get(body, org_id)
    return JSONResponse(session_json(session, at=now(), heartbeat_ttl_s=ctx.config.worker_heartbeat_ttl_s,
                                     online=online, prefix=prefix))


@router.post("/v1/sessions")
async def create_session(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_writer()
    principal.require_policy()
    body = await read_object(request)
    items = ctx.log.client_items(_initial_events(body))  # checked before anything is created
    new = NewSession.from_body(body, ctx.config.limits.max_event_bytes)
    row = await ctx.sessions.create(principal, new, kind="env", initial=items)
    return await session_response(ctx, row.id, principal.org_id)


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> Response:
    body = parse_session_id(session_id)
    principal = await user(request)
    return await session_response(ctx_of(request), body, principal.org_id)


@router.patch("/v1/sessions/{session_id}")
async def patch_session(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request, write=True)
    await ctx.sessions.require_writer_of(sbody, principal)
    body = await read_object(request, allow_empty=False)
    title = parse_title(body)
    if title is None:
        raise InvalidRequest("'title' is required.")
    explicit = body.get("explicit", True)
    if not isinstance(explicit, bool):
        raise InvalidRequest("'explicit' must be a boolean.")
    await ctx.sessions.rename(sbody, principal, title, explicit)
    return await session_response(ctx, sbody, principal.org_id)


@router.post("/v1/sessions/{session_id}/archive")
async def archive(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request, write=True)
    await ctx.sessions.require_writer_of(sbody, principal)
    body = await read_object(request)
    reason = body.get("reason")
    if reason is not None and reason not in ARCHIVE_REASONS:
        raise InvalidRequest(f"'reason' must be one of {', '.join(ARCHIVE_REASONS)}.")
    await ctx.sessions.archive(sbody, principal, reason)
    return await session_response(ctx, sbody, principal.org_id)


@router.post("/v1/sessions/{session_id}/events")
async def post_events(session_id: str, request: Request) -> Response:
    """S5 (user credential) and E9 (worker token answering a permission)."""
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    token = bearer(request)
    if token is not None and kind_of(token) == "jwt":
        claims = ctx.auth.worker_for_session(token, sbody)
        await ctx.dispatcher.check_worker_write(claims)
        body = await read_object(request, allow_empty=False)
        events = _events_list(body, ctx.config.limits.max_v1_batch)
        for event in events:
            if not isinstance(event, dict) or event.get("type") != "control_response":
                raise InvalidRequest("A worker token may only post control_response events here.")
            await ctx.permissions.answer(sbody, None, "worker", event)
        return JSONResponse({})
    principal = await user(request, write=True)
    if not principal.can_write:  # 404 for another organisation's session, else 403
        await ctx.sessions.require_writer_of(sbody, principal)
    # a writer's session is checked in the append's own transaction (another organisation's is 404
    # there too): a prompt is one transaction, not a read and a write
    body = await read_object(request, allow_empty=False)
    events = _events_list(body, ctx.config.limits.max_v1_batch)
    result = await ctx.log.post_client_events(sbody, principal.org_id, principal.user_id, events)
    await frames_first(len(events))  # a prompt's frames (SSE, subscribers) before this answer
    return JSONResponse({
        "events": [{"uuid": e.uuid, "event_id": e.event_id, "sequence_num": e.seq} for e in result.stored],
    })


def _events_list(body: dict[str, Any], limit: int) -> list[Any]:
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidRequest("'events' must be a non-empty list.")
    if len(events) > limit:
        raise InvalidRequest(f"At most {limit} events per request.", error_type="payload_too_large",
                             status=413)
    return events


@router.get("/v1/sessions/{session_id}/events")
async def list_events(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000) or 100
    q = request.query_params
    page, has_more = await ctx.sessions.events_page(sbody, principal.org_id, limit=limit,
                                                    before_id=q.get("before_id"), after_id=q.get("after_id"))
    return JSONResponse({
        "data": [orjson.loads(ev.client_frame) for ev in page], "has_more": has_more,
        "first_id": page[0].event_id if page else None, "last_id": page[-1].event_id if page else None,
    })


@router.get("/v1/sessions")
async def list_sessions(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000) or 100
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest("'status' must be idle, running, requires_action or archived.")
    rows = await ctx.sessions.of_org(principal.org_id, limit=limit + 1,
                                   environment_id=request.query_params.get("environment_id"), status=status)
    t, ttl = now(), ctx.config.worker_heartbeat_ttl_s
    data = [session_json(row, at=t, heartbeat_ttl_s=ttl, online=online) for row, online in rows[:limit]]
    return JSONResponse({
        "data": data, "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    })


@router.get("/v1/sessions/{session_id}/permissions")
async def list_permissions(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request)
    rows = await ctx.permissions.of_session(sbody, principal.org_id, request.query_params.get("status"))
    return JSONResponse({"data": [permission_json(r) for r in rows]})
