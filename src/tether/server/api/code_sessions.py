"""Code sessions (CCR v2, env-less): C1 create, C2 /bridge, C3 teleport events (docs/protocol.md §3.4)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import InvalidRequest
from tether.server.api.common import (
    JSONResponse,
    ctx_of,
    parse_count,
    parse_session_id,
    query_int,
    read_object,
    user,
)
from tether.server.clock import iso, now
from tether.server.service.sessions import NewSession
from tether.server.views import session_json

router = APIRouter()


@router.post("/v1/code/sessions")
async def create_code_session(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_writer()
    principal.require_policy()
    body = await read_object(request, allow_empty=False)
    bridge = body.get("bridge")
    if not isinstance(bridge, dict):
        raise InvalidRequest("'bridge' is required and must be an object ({} for a bridge-run session).")
    if "environment_id" in bridge and not bridge["environment_id"]:
        raise InvalidRequest("'bridge.environment_id' must not be empty.")
    fields = {"title": body.get("title"), "tags": body.get("tags"), "source": "remote-control"}
    new = NewSession.from_body(fields, ctx.config.limits.max_event_bytes)
    row = await ctx.sessions.create(principal, new, kind="code")
    return JSONResponse({"session": session_json(row, at=now(), heartbeat_ttl_s=ctx.config.worker_heartbeat_ttl_s,
                                                 prefix="cse_")})


@router.post("/v1/code/sessions/{session_id}/bridge")
async def bridge(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    body = parse_session_id(session_id)
    principal = await user(request, write=True)
    await read_object(request)
    token, epoch = await ctx.workers.bridge(body, principal)
    return JSONResponse({"worker_jwt": token, "api_base_url": ctx.config.url,
                         "expires_in": int(ctx.config.worker_token_ttl_s), "worker_epoch": epoch})


@router.get("/v1/code/sessions/{session_id}/teleport-events")
async def teleport_events(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    body = parse_session_id(session_id)
    principal = await user(request)
    cursor = parse_count(request.query_params.get("cursor"), "cursor") or 0
    limit = query_int(request, "limit", 500, lo=1, hi=1000) or 500
    page, more = await ctx.sessions.transcript(body, principal.org_id, cursor, limit)
    out: dict[str, object] = {"data": [{
        "event_id": r.event_id, "event_type": r.event_type, "is_compaction": r.is_compaction,
        "payload": orjson.loads(r.payload), "created_at": iso(r.created_at)} for r in page]}
    if more:
        out["next_cursor"] = str(page[-1].pk)
    return JSONResponse(out)
