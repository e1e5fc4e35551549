"""CCR v2 worker routes W1–W10 (reference §1.5, §2.3; PROTOCOL.md §4.4–4.5).

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

from tether.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, PayloadTooLarge
from tether.protocol.epochs import EpochInvalid, EpochSuperseded, check_epoch, parse_epoch
from tether.protocol.ids import new_id
from tether.protocol.merge_patch import merge_one_level
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
from tether.server.store import StoredEvent
from tether.server.streams import work_key

router = APIRouter()
PREFIXES = ("/v1/code/sessions/{session_id}", "/v1/session_ingress/ws/{session_id}",
            "/v2/session_ingress/ws/{session_id}")
WORKER_STATES = ("idle", "running", "requires_action")
DELIVERY_STATES = ("received", "processing", "processed")
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


async def _session(ctx: ServerContext, body: str, claims: WorkerClaims) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        session = await tx.get_session(body)
    if session is None or session["org_id"] != claims.org_id:
        raise NotFound("No such session.")
    return session


def _epoch_of(payload: dict[str, Any], claims: WorkerClaims) -> int:
    try:
        return parse_epoch(payload["worker_epoch"]) if "worker_epoch" in payload else claims.epoch
    except EpochInvalid as exc:
        raise InvalidRequest(str(exc)) from None


def _check(session: dict[str, Any], epoch: int) -> None:
    try:
        check_epoch(int(session["worker_epoch"]), epoch)
    except EpochSuperseded as exc:
        raise Conflict(f"A newer worker (epoch {exc.current}) superseded epoch {exc.presented}.",
                       error_type="epoch_superseded") from None
    if session["archived_at"]:
        raise Conflict("The session is archived.", error_type="already_archived")


async def _checked(request: Request, session_id: str, *,
                   check_depth: bool = True) -> tuple[ServerContext, str, dict[str, Any], dict[str, Any]]:
    """Authenticate, read the body, and refuse a stale epoch (409) before doing anything."""
    ctx, body, claims = _claims(request, session_id)
    payload = await read_object(request, check_depth=check_depth)
    session = await _session(ctx, body, claims)
    payload["worker_epoch"] = _epoch_of(payload, claims)
    _check(session, payload["worker_epoch"])
    await ctx.dispatcher.check_worker_write(claims)  # the token's work is live (a cached look-up)
    return ctx, body, session, payload


async def bump_epoch(ctx: ServerContext, body: str) -> int:
    async with ctx.store.write() as tx:
        session = await tx.get_session(body, for_update=True)
        if session is None:
            raise NotFound("No such session.")
        if session["archived_at"]:
            raise Conflict("The session is archived.", error_type="already_archived")
        epoch = int(session["worker_epoch"]) + 1
        await tx.update_session(body, worker_epoch=epoch, worker_last_seen=now(), worker_status="idle")
        session.update(worker_epoch=epoch, worker_status="idle")
        frame = ctx.hub.session_update_frame(session)
        tx.after_commit(lambda: ctx.hub.publish_frames(body, [frame]))
    return epoch


@_route("POST", "/worker/register")
async def register_worker(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    await read_object(request)
    await _session(ctx, body, claims)
    await ctx.dispatcher.check_worker_write(claims)
    return JSONResponse({"worker_epoch": await bump_epoch(ctx, body)})


@_route("PUT", "/worker")
async def put_worker(session_id: str, request: Request) -> Response:
    ctx, body, session, payload = await _checked(request, session_id)
    status = payload.get("worker_status")
    if status is not None and status not in WORKER_STATES:
        raise InvalidRequest(f"'worker_status' must be one of {', '.join(WORKER_STATES)}.")
    updates: dict[str, Any] = {"worker_last_seen": now()}
    for key in ("external_metadata", "internal_metadata"):
        if key in payload:
            patch = payload[key]
            if not isinstance(patch, dict):
                raise InvalidRequest(f"'{key}' must be an object.")
            updates[key] = merge_one_level(session[key], patch)
            jsonio.check_size(updates[key], ctx.config.limits.max_event_bytes, f"'{key}' (merged)")
    if payload.get("connection_status") == "disconnected":
        updates["worker_status"] = "disconnected"
    elif status is not None:
        updates["worker_status"] = status
    elif session["worker_status"] in (None, "disconnected"):
        updates["worker_status"] = "idle"
    if status is not None and not session["archived_at"]:
        updates["status"] = status
    details = payload.get("requires_action_details")
    if details is not None and not isinstance(details, dict):
        raise InvalidRequest("'requires_action_details' must be an object or null.")
    async with ctx.store.write() as tx:
        current = await tx.get_session(body, for_update=True)
        assert current is not None
        _check(current, payload["worker_epoch"])  # again, under the write lock
        await tx.update_session(body, **updates, updated_at=now())
        changed = any(current.get(k) != updates.get(k, current.get(k)) for k in ("status", "worker_status"))
        current.update(updates)
        if changed:
            frame = ctx.hub.session_update_frame(current)
            tx.after_commit(lambda: ctx.hub.publish_frames(body, [frame]))
    return JSONResponse({})


@_route("GET", "/worker")
async def get_worker(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    session = await _session(ctx, body, claims)
    await ctx.dispatcher.check_worker_read(claims)
    return JSONResponse({"worker": {
        "external_metadata": session["external_metadata"] or {},
        "internal_metadata": session["internal_metadata"] or {},
        "worker_status": session["worker_status"],
        "worker_epoch": session["worker_epoch"],
        "last_heartbeat": iso(session["worker_last_seen"]),
    }})


@_route("POST", "/worker/heartbeat")
async def heartbeat(session_id: str, request: Request) -> Response:
    ctx, body, session, _ = await _checked(request, session_id)
    async with ctx.store.write() as tx:
        values: dict[str, Any] = {"worker_last_seen": now()}
        if session["worker_status"] in (None, "disconnected"):
            values["worker_status"] = "idle"
        await tx.update_session(body, **values)
        if "worker_status" in values:
            session.update(values)
            frame = ctx.hub.session_update_frame(session)
            tx.after_commit(lambda: ctx.hub.publish_frames(body, [frame]))
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
    await ctx.hub.post_worker_events(body, [e["payload"] for e in events], ephemeral_flags=flags, v1=False,
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
        rows.append({"session_id": body, "event_id": new_id("evt"), "uuid": uid, "event_type": kind,
                     "payload": raw.decode(), "is_compaction": bool(item.get("is_compaction")),
                     "agent_id": agent if isinstance(agent, str) else None, "created_at": t})
    async with ctx.store.write() as tx:
        await tx.append_internal_events(body, rows)
    return JSONResponse({})


@_route("GET", "/worker/internal-events")
async def get_internal_events(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    await _session(ctx, body, claims)
    await ctx.dispatcher.check_worker_read(claims)
    cursor = parse_count(request.query_params.get("cursor"), "cursor") or 0
    subagents = request.query_params.get("subagents") in ("true", "1")
    async with ctx.store.read() as tx:
        page, more = await tx.internal_events_after(body, cursor, 500, subagents, ctx.config.limits.max_page_bytes)
    data = [{"event_id": r["event_id"], "event_type": r["event_type"], "payload": orjson.loads(r["payload"]),
             "event_metadata": None, "is_compaction": r["is_compaction"], "created_at": iso(r["created_at"]),
             **({"agent_id": r["agent_id"]} if r["agent_id"] else {})} for r in page]
    out: dict[str, Any] = {"data": data}
    if more:
        out["next_cursor"] = str(page[-1]["pk"])
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
    async with ctx.store.write() as tx:
        moved: list[StoredEvent] = []
        for status in DELIVERY_STATES:  # in order, so a batch may carry received then processed
            ids = by_status.get(status)
            if ids:
                moved += await tx.set_delivery(body, uuids=ids, event_ids=ids, status=status)
        # written before the answer (the worker acknowledged them); subscribers hear of a move
        # once, though a stream may have told them already (server/delivery.py)
        tx.after_commit(lambda: ctx.hub.publish_frames(body, ctx.deliveries.saved(moved)))
    return JSONResponse({})


def _resume_point(request: Request) -> int | None:
    raw = request.query_params.get("from_sequence_num") or request.headers.get("last-event-id")
    return parse_count(raw, "from_sequence_num")


@_route("GET", "/worker/events/stream")
async def stream(session_id: str, request: Request) -> Response:
    """W10: the SSE read stream (api/worker_stream.py). Served on the fast path (fastpath.py),
    so its response writes to the connection itself."""
    ctx, body, claims = _claims(request, session_id)
    session = await _session(ctx, body, claims)
    if session["archived_at"]:
        raise NotFound("The session is archived.")
    await ctx.dispatcher.check_worker_read(claims)
    keys = [work_key(claims.work_id)] if claims.work_id else []
    return SseStream(ctx, body, _resume_point(request), keys)
