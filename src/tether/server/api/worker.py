"""CCR v2 worker routes W1–W10 (docs/protocol.md §3.5, §8.3, §4.4–§4.5).

Served under the code-session URL ``/v1/code/sessions/{id}`` and under the session
ingress URL the stock CLI derives from ``--sdk-url`` (``/v1/session_ingress/ws/{id}``,
and ``/v2/…`` for loopback hosts).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import AuthenticationFailed, InvalidRequest, NotFound, PayloadTooLarge
from tether.protocol.epochs import EpochInvalid, parse_epoch
from tether.protocol.ids import SessionId, new_id
from tether.server import jsonio
from tether.server.api.common import (
    JSONResponse,
    bearer,
    ctx_of,
    parse_count,
    parse_session_id,
    rate_limit,
    read_object,
)
from tether.server.api.direct import frames_first
from tether.server.api.worker_stream import SseStream
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.clock import iso, now
from tether.server.context import ServerContext
from tether.server.service.workers import DELIVERY_STATES, parse_state, worker_keys
from tether.server.store.records import InternalEvent

router = APIRouter()
PREFIXES = ("/v1/code/sessions/{session_id}", "/v1/session_ingress/ws/{session_id}",
            "/v2/session_ingress/ws/{session_id}")
MAX_DELIVERY_BATCH = 64


F = TypeVar("F", bound=Callable[..., Any])


def _route(method: str, suffix: str) -> Callable[[F], F]:
    def register(fn: F) -> F:
        for prefix in PREFIXES:
            router.add_api_route(prefix + suffix, fn, methods=[method])
        return fn
    return register


def _claims(request: Request, session_id: str) -> tuple[ServerContext, str, WorkerClaims]:
    ctx = ctx_of(request)
    body = parse_session_id(session_id)
    token = bearer(request)
    if token is None:
        raise AuthenticationFailed("Worker routes need 'Authorization: Bearer <worker token>'.")
    claims = ctx.auth.worker_for_session(token, body)
    rate_limit(ctx, f"worker:{body}")
    return ctx, body, claims


def _epoch_of(payload: dict[str, Any], claims: WorkerClaims) -> int:
    try:
        return parse_epoch(payload["worker_epoch"]) if "worker_epoch" in payload else claims.epoch
    except EpochInvalid as exc:
        raise InvalidRequest(str(exc)) from None


async def _checked(request: Request, session_id: str, *,
                   check_depth: bool = True) -> tuple[ServerContext, str, int, dict[str, Any]]:
    """Authenticate, read the body, and refuse a stale epoch (409) before doing anything."""
    ctx, body, claims = _claims(request, session_id)
    payload = await read_object(request, check_depth=check_depth)
    session = await ctx.workers.session_of(body, claims)
    epoch = _epoch_of(payload, claims)
    ctx.workers.check_epoch(session, epoch)
    await ctx.dispatcher.check_worker_write(claims)  # the token's work is live (a cached look-up)
    return ctx, body, epoch, payload


@_route("POST", "/worker/register")
async def register_worker(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    await read_object(request)
    await ctx.workers.session_of(body, claims)
    await ctx.dispatcher.check_worker_write(claims)
    return JSONResponse({"worker_epoch": await ctx.workers.register(body)})


@_route("PUT", "/worker")
async def put_worker(session_id: str, request: Request) -> Response:
    ctx, body, epoch, payload = await _checked(request, session_id)
    await ctx.workers.report(body, parse_state(payload, epoch))
    return JSONResponse({})


@_route("GET", "/worker")
async def get_worker(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    session = await ctx.workers.session_of(body, claims)
    await ctx.dispatcher.check_worker_read(claims)
    return JSONResponse({"worker": {
        "external_metadata": session.external_metadata or {},
        "internal_metadata": session.internal_metadata or {},
        "worker_status": session.worker_status,
        "worker_epoch": session.worker_epoch,
        "last_heartbeat": iso(session.worker_last_seen),
    }})


@_route("POST", "/worker/heartbeat")
async def heartbeat(session_id: str, request: Request) -> Response:
    ctx, body, epoch, _ = await _checked(request, session_id)
    await ctx.workers.heartbeat(body, epoch)
    return JSONResponse({"ttl_seconds": int(ctx.config.worker_heartbeat_ttl_s)})


def _batch(payload: dict[str, Any], ctx: ServerContext) -> list[Any]:
    events = payload.get("events")
    if not isinstance(events, list):
        raise InvalidRequest("'events' must be a list.")
    if len(events) > ctx.config.limits.max_v2_batch:
        raise PayloadTooLarge(f"At most {ctx.config.limits.max_v2_batch} events per request.")
    for item in events:
        if not isinstance(item, dict) or not isinstance(item.get("payload"), dict):
            raise InvalidRequest("Each event must be an object with a 'payload' object.")
    return events


@_route("POST", "/worker/events")
async def post_events(session_id: str, request: Request) -> Response:
    ctx, body, _, payload = await _checked(request, session_id, check_depth=False)  # checked by part:
    events = _batch(payload, ctx)
    jsonio.check_batch(payload, events, "payload")
    flags = [bool(e.get("ephemeral")) for e in events]
    ctx.metrics.inc("worker_events_total", len(events))
    await ctx.log.post_worker_events(body, [e["payload"] for e in events], ephemeral_flags=flags, v1=False,
                                     depth_room=jsonio.EVENT_ROOM_V2_POST)
    await frames_first(len(events))
    return JSONResponse({})


@_route("POST", "/worker/internal-events")
async def post_internal_events(session_id: str, request: Request) -> Response:
    ctx, body, _, payload = await _checked(request, session_id)
    events = _batch(payload, ctx)
    rows = []
    t = now()
    for item in events:
        event = item["payload"]
        kind = event.get("type")
        if not isinstance(kind, str):
            raise InvalidRequest("Each payload needs a string 'type'.")
        uid = event.get("uuid") if isinstance(event.get("uuid"), str) else str(uuidlib.uuid4())
        agent = item.get("agent_id")
        raw = jsonio.check_size(event, ctx.config.limits.max_event_bytes, "An internal event")
        rows.append(InternalEvent(0, SessionId(body), new_id("evt"), uid, kind, raw.decode(), bool(item.get("is_compaction")),
                                  agent if isinstance(agent, str) else None, t))
    await ctx.workers.append_internal(rows)
    return JSONResponse({})


@_route("GET", "/worker/internal-events")
async def get_internal_events(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    await ctx.workers.session_of(body, claims)
    await ctx.dispatcher.check_worker_read(claims)
    cursor = parse_count(request.query_params.get("cursor"), "cursor") or 0
    subagents = request.query_params.get("subagents") in ("true", "1")
    page, more = await ctx.workers.internal_events(body, cursor, subagents)
    data = [{"event_id": r.event_id, "event_type": r.event_type, "payload": orjson.loads(r.payload),
             "event_metadata": None, "is_compaction": r.is_compaction, "created_at": iso(r.created_at),
             **({"agent_id": r.agent_id} if r.agent_id else {})} for r in page]
    out: dict[str, Any] = {"data": data}
    if more:
        out["next_cursor"] = str(page[-1].pk)
    return JSONResponse(out)


@_route("POST", "/worker/events/delivery")
async def delivery(session_id: str, request: Request) -> Response:
    ctx, body, _, payload = await _checked(request, session_id)
    updates = payload.get("updates")
    if not isinstance(updates, list) or len(updates) > MAX_DELIVERY_BATCH:
        raise InvalidRequest(f"'updates' must be a list of at most {MAX_DELIVERY_BATCH}.")
    by_status: dict[str, list[str]] = {}
    for update in updates:
        if (not isinstance(update, dict) or not isinstance(update.get("event_id"), str)
                or update.get("status") not in DELIVERY_STATES):
            raise InvalidRequest("Each update needs 'event_id' and a 'status' of received/processing/processed.")
        by_status.setdefault(update["status"], []).append(update["event_id"])
    await ctx.workers.deliveries(body, by_status)
    return JSONResponse({})


def _resume_point(request: Request) -> int | None:
    raw = request.query_params.get("from_sequence_num") or request.headers.get("last-event-id")
    return parse_count(raw, "from_sequence_num")


@_route("GET", "/worker/events/stream")
async def stream(session_id: str, request: Request) -> Response:
    """W10: the SSE read stream (api/worker_stream.py). Served on the fast path (fastpath.py),
    so its response writes to the connection itself."""
    ctx, body, claims = _claims(request, session_id)
    session = await ctx.workers.session_of(body, claims)
    if session.archived_at:
        raise NotFound("The session is archived.")
    await ctx.dispatcher.check_worker_read(claims)
    return SseStream(ctx, body, _resume_point(request), worker_keys(claims))
