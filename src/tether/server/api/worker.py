"""CCR v2 worker routes W1–W10 (reference §1.5, §2.3; docs/protocol.md §4.4–4.5).

Served under the code-session URL ``/v1/code/sessions/{id}`` and under the session
ingress URL the stock CLI derives from ``--sdk-url`` (``/v1/session_ingress/ws/{id}``,
and ``/v2/…`` for loopback hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

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
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.broker import Overflowed, ServerClosing
from tether.server.clock import iso, now
from tether.server.context import ServerContext
from tether.server.hub import SessionClosed, session_topic
from tether.server.service.workers import DELIVERY_STATES, parse_state
from tether.server.store import StoredEvent
from tether.server.store.records import InternalEvent
from tether.server.streams import Holder, work_key

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


def sse_frame(ev: StoredEvent) -> bytes:
    data = {"event_id": ev.event_id, "sequence_num": ev.seq, "event_type": ev.event_type, "source": ev.source,
            "payload": ev.payload, "created_at": iso(ev.created_at)}
    return b"event: client_event\nid: %d\ndata: %s\n\n" % (ev.seq, jsonio.dumps(data))


@_route("GET", "/worker/events/stream")
async def stream(session_id: str, request: Request) -> Response:
    ctx, body, claims = _claims(request, session_id)
    session = await ctx.workers.session_of(body, claims)
    if session.archived_at:
        raise NotFound("The session is archived.")
    await ctx.dispatcher.check_worker_read(claims)
    after = _resume_point(request)
    sub = ctx.broker.subscribe(session_topic(body))
    keys = [work_key(claims.work_id)] if claims.work_id else []
    return StreamingResponse(_sse(ctx, body, after, sub, keys), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


async def _backlog(ctx: ServerContext, body: str, after: int, undelivered: bool) -> AsyncIterator[StoredEvent]:
    """Inbound events after ``after`` (only those not yet processed, for a stream opened without
    a resume point), read a page at a time: a long backlog is never held in memory at once."""
    max_bytes = ctx.config.limits.max_page_bytes
    while True:
        async with ctx.store.read() as tx:
            page = await (tx.events.undelivered_inbound(body, after_seq=after, max_bytes=max_bytes) if undelivered
                          else tx.events.inbound_after(body, after, max_bytes=max_bytes))
        if not page:
            return
        for ev in page:
            yield ev
        after = page[-1].seq


class _WorkEnded:
    """Wakes a stream whose token's work ended (streams.py); the stream then ends."""


def _waker(sub: Any) -> Callable[[], None]:
    def wake() -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full queue: the flag is seen at the next item
            sub.queue.put_nowait(_WorkEnded())
    return wake


async def _sse(ctx: ServerContext, body: str, after: int | None, sub: Any, keys: list[str]) -> AsyncIterator[bytes]:
    ctx.metrics.add_gauge("sse_streams", 1)
    try:
        with ctx.streams.hold(Holder(_waker(sub)), keys) as holder:
            async for chunk in _sse_frames(ctx, body, after, sub, holder):
                yield chunk
    finally:
        sub.close()
        ctx.metrics.add_gauge("sse_streams", -1)


async def _sse_frames(ctx: ServerContext, body: str, after: int | None, sub: Any,
                      holder: Holder) -> AsyncIterator[bytes]:
    sent = after if after is not None else -1
    yield b": connected\n\n"
    backlog: AsyncIterator[StoredEvent] | None = _backlog(ctx, body, max(sent, 0), undelivered=after is None)
    while True:
        if backlog is not None:
            async for ev in backlog:
                if ev.seq > sent:
                    yield sse_frame(ev)
                    sent = ev.seq
            backlog = None
        try:
            item = await sub.get(timeout=ctx.config.sse_keepalive_s)
        except TimeoutError:
            yield b":keepalive\n\n"
            continue
        except Overflowed:
            sub.reset()
            backlog = _backlog(ctx, body, max(sent, 0), undelivered=False)
            continue
        if isinstance(item, SessionClosed | ServerClosing) or holder.closed is not None:
            return  # (a reconnect with a gone token is answered 410)
        if isinstance(item, StoredEvent) and item.delivery is not None and not item.ephemeral and item.seq > sent:
            yield sse_frame(item)
            sent = item.seq
