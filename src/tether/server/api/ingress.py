"""Session ingress v1 (docs/protocol.md §3.6, §8.1–§8.2, §4.4): the worker's WebSocket
(reads; also accepts writes as frames) and the HTTP POST write path (I2)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from tether.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TetherError,
)
from tether.protocol.access import role_fell
from tether.protocol.messages import KEEP_ALIVE, RECEIPTS_HEADER, receipt_uuids
from tether.server import jsonio
from tether.server.api.common import JSONResponse, bearer, ctx_of, parse_session_id, rate_limit, read_object
from tether.server.api.direct import frames_first
from tether.server.api.sockets import (
    CLOSE_INVALID_DATA,
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    Socket,
    cancelling_holder,
    reject,
    uncancel,
)
from tether.server.context import ServerContext
from tether.server.reader import End, Feed, LogReader, LogView, Start
from tether.server.service.workers import Caller, WorkerConnection
from tether.server.store import StoredEvent

router = APIRouter()
log = logging.getLogger("tether.server.ingress")


class _Closed(Exception):
    """(close code, reason): end this worker socket."""


async def recheck(ctx: ServerContext, caller: Caller, body: str) -> None:
    """Before a write frame on an open socket: is the credential still good? (4003 if not)."""
    try:
        if caller.claims is not None:
            await ctx.dispatcher.check_worker_write(caller.claims)
        else:
            assert caller.principal is not None
            now_principal = await ctx.auth.principal(caller.secret)
            if role_fell(caller.principal.role, now_principal.role):
                raise PermissionDenied("Your role changed; reconnect.")
            now_principal.require_writer()
    except Conflict as exc:  # archived
        raise _Closed(CLOSE_NOT_FOUND, exc.message[:120]) from None
    except TetherError as exc:
        raise _Closed(CLOSE_UNAUTHORIZED, exc.message[:120]) from None


@router.post("/v1/session_ingress/session/{session_id}/events")
@router.post("/v2/session_ingress/session/{session_id}/events")
async def post_events(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    body = parse_session_id(session_id)
    token = bearer(request)
    in_tx = ctx.log.checks_work_in_tx  # PostgreSQL: the append checks the token's work item
    caller = await ctx.workers.caller(token, body, write=True, check_session=False, check_work=not in_tx)
    rate_limit(ctx, f"worker:{body}")
    payload = await read_object(request, allow_empty=False, check_depth=False)  # checked by part:
    events = payload.get("events")
    if not isinstance(events, list):
        raise InvalidRequest("'events' must be a list.")
    if len(events) > ctx.config.limits.max_v1_batch:
        raise PayloadTooLarge(f"At most {ctx.config.limits.max_v1_batch} events per request.")
    jsonio.check_batch(payload, events)
    ctx.metrics.inc("worker_events_total", len(events))
    await ctx.log.post_worker_events(body, events, depth_room=jsonio.EVENT_ROOM_V1_POST,
                                     work=caller.claims if in_tx else None)
    ctx.workers.confirm_sent_controls(body)
    await frames_first(len(events))
    return JSONResponse({})


@router.websocket("/v1/session_ingress/ws/{session_id}")
@router.websocket("/v2/session_ingress/ws/{session_id}")
async def worker_socket(ws: WebSocket, session_id: str) -> None:
    ctx = ctx_of(ws)
    try:
        body = parse_session_id(session_id)
        caller = await ctx.workers.caller(bearer(ws), body, write=False)
    except TetherError as exc:
        await reject(ws, exc)
        return
    await ws.accept()
    sock = Socket(ws)
    conn = WorkerConnection(body, caller, receipts=ws.headers.get(RECEIPTS_HEADER) == "1")
    await ctx.workers.socket_opened(conn)
    ctx.metrics.add_gauge("worker_sockets", 1)
    init_id = str(uuidlib.uuid4())
    ctx.log.server_request_ids.add(init_id)
    try:
        with ctx.streams.hold(cancelling_holder(caller.principal.role if caller.principal else ""),
                              caller.keys()) as holder:
            try:
                await _serve(ctx, sock, conn, init_id)
            except asyncio.CancelledError:
                if holder.closed is None:
                    raise
                uncancel()
                await sock.close(*holder.closed)
    finally:
        ctx.log.server_request_ids.discard(init_id)
        with contextlib.suppress(Exception):
            await ctx.workers.socket_closed(conn)
        ctx.metrics.add_gauge("worker_sockets", -1)
        if ctx.closing:
            await sock.close(CLOSE_RESTART, "server restarting")


async def _serve(ctx: ServerContext, sock: Socket, conn: WorkerConnection, init_id: str) -> None:
    try:
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(_send_loop(ctx, sock, conn, init_id))
            deadline = tg.create_task(_initialize_deadline(ctx, init_id))
            await _receive_loop(ctx, sock, conn)
            sender.cancel()
            deadline.cancel()
    except* _Closed as group:
        code, reason = group.exceptions[0].args
        await sock.close(code, reason)


async def _initialize_deadline(ctx: ServerContext, init_id: str) -> None:
    """A worker must answer the server's ``initialize`` promptly (Claude Code's service drops it
    after 10–14 s, docs/protocol.md §7.3): one that has not within ``initialize_timeout_s`` is closed
    1008 (docs/protocol.md §8.1, §8.5) and reconnects to get a fresh one. The answer, on the
    socket or by POST, takes ``init_id`` out of the event log's open server requests."""
    await asyncio.sleep(ctx.config.initialize_timeout_s)  # a deadline, not a wait for a condition
    if init_id in ctx.log.server_request_ids:
        ctx.metrics.inc("worker_initialize_timeouts_total")
        raise _Closed(CLOSE_POLICY, f"initialize not answered within {ctx.config.initialize_timeout_s:g} s")


async def _receive_loop(ctx: ServerContext, sock: Socket, conn: WorkerConnection) -> None:
    limit = ctx.config.limits.max_event_bytes
    while True:
        try:
            text = await sock.receive_text()
        except TetherError as exc:
            raise _Closed(CLOSE_INVALID_DATA, exc.message) from None
        if text is None:
            return
        if len(text) > limit:
            raise _Closed(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
        events: list[Any] = []
        receipts: list[str] = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            try:
                event = jsonio.parse(line, "A frame")
            except InvalidRequest as exc:
                reason = exc.message if isinstance(exc, jsonio.TooDeep) else "frames must be newline-delimited JSON"
                raise _Closed(CLOSE_INVALID_DATA, reason) from None
            if isinstance(event, dict) and event.get("type") == KEEP_ALIVE:
                receipts += receipt_uuids(event)
                continue
            events.append(event)
        if events:
            await recheck(ctx, conn.caller, conn.body)
        if events:
            try:
                await ctx.log.post_worker_events(conn.body, events)
            except NotFound:
                raise _Closed(CLOSE_NOT_FOUND, "session not found") from None
            except TetherError as exc:
                if exc.error_type == "already_archived":
                    raise _Closed(CLOSE_NOT_FOUND, "session archived") from None
                raise _Closed(CLOSE_INVALID_DATA, exc.message) from None
        if receipts:
            ctx.workers.confirm_receipts(conn, receipts)
        ctx.workers.confirm_sent_controls(conn.body)


class _WorkerFeed(Feed):
    """A v1 worker's view of the log (docs/protocol.md §4.4, §8.1): ``initialize`` first, then
    every inbound event it has not confirmed, then live inbound events, one newline-terminated
    JSON object per frame. Sending an event moves it to ``received``; a control message waits in
    the connection for the worker's next words (``confirm_sent_controls``)."""

    inbound = True
    resync = LogView.UNDELIVERED

    def __init__(self, ctx: ServerContext, sock: Socket, conn: WorkerConnection, init_id: str) -> None:
        self.ctx = ctx
        self.sock = sock
        self.conn = conn
        self.init_id = init_id

    async def open(self) -> Start:
        await self.sock.send_text(orjson.dumps({
            "type": "control_request", "request_id": self.init_id, "request": {"subtype": "initialize"},
        }).decode() + "\n")
        return Start(0, LogView.UNDELIVERED)

    def wants(self, ev: StoredEvent) -> bool:
        return self.ctx.deliveries.state(ev) != "processed"  # (confirmed, not yet written)

    async def send(self, ev: StoredEvent) -> None:
        await self.sock.send_text(ev.worker_text)

    def sent(self, ev: StoredEvent) -> None:
        if ev.event_type != "user":
            self.conn.unconfirmed.append(ev)
        self.ctx.deliveries.moved(ev, "received")


async def _send_loop(ctx: ServerContext, sock: Socket, conn: WorkerConnection, init_id: str) -> None:
    end = await LogReader(ctx, conn.body, _WorkerFeed(ctx, sock, conn, init_id)).run()
    if end is End.ARCHIVED:
        raise _Closed(CLOSE_NOT_FOUND, "session archived")
    if end is End.REVOKED:  # (not reached: revocation cancels this task, streams.py)
        raise _Closed(CLOSE_UNAUTHORIZED, "credential revoked")
    raise _Closed(CLOSE_RESTART, "server restarting")
