"""Session ingress v1 (reference §1.6, §2.1–2.2; PROTOCOL.md §4.4): the worker's WebSocket
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

from tether.errors import AuthenticationFailed, InvalidRequest, NotFound, PayloadTooLarge, TetherError
from tether.protocol.messages import KEEP_ALIVE, RECEIPTS_HEADER, receipt_uuids
from tether.server.api.common import JSONResponse, bearer, ctx_of, parse_session_id, rate_limit, read_object
from tether.server.api.direct import frames_first
from tether.server.api.sockets import (
    CLOSE_INVALID_DATA,
    CLOSE_NOT_FOUND,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
    Socket,
    reject,
)
from tether.server.auth.secrets import kind_of
from tether.server.broker import Overflowed, ServerClosing
from tether.server.clock import now
from tether.server.context import ServerContext
from tether.server.hub import SessionClosed, delivery_frame, session_topic
from tether.server.store import StoredEvent

router = APIRouter()
log = logging.getLogger("tether.server.ingress")


async def authorize_worker(ctx: ServerContext, token: str | None, body: str, *, check_session: bool = True) -> str:
    """A worker token of this session, or a user credential (REPL v1 bridge) of its org.

    A worker token is signed for exactly one session, so the hot write path skips the
    session lookup (``check_session=False``): appending finds a missing or archived session anyway.
    """
    if not token:
        raise AuthenticationFailed("Session ingress needs 'Authorization: Bearer <token>'.")
    if kind_of(token) == "jwt" or token.startswith("sk-ant-si-"):
        claims = ctx.auth.worker_for_session(token, body)
        if not check_session:
            return "worker"
        org_id = claims.org_id
        actor = "worker"
    else:
        principal = await ctx.auth.principal(token)
        principal.require_writer()
        org_id = principal.org_id
        actor = principal.user_id
    async with ctx.store.read() as tx:
        session = await tx.get_session(body)
    if session is None or session["org_id"] != org_id:
        raise NotFound("No such session.")
    if session["archived_at"]:
        raise NotFound("The session is archived.")
    return actor


@router.post("/v1/session_ingress/session/{session_id}/events")
@router.post("/v2/session_ingress/session/{session_id}/events")
async def post_events(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    body = parse_session_id(session_id)
    token = bearer(request)
    await authorize_worker(ctx, token, body, check_session=False)
    rate_limit(ctx, f"worker:{body}")
    payload = await read_object(request, allow_empty=False)
    events = payload.get("events")
    if not isinstance(events, list):
        raise InvalidRequest("'events' must be a list.")
    if len(events) > ctx.config.limits.max_v1_batch:
        raise PayloadTooLarge(f"At most {ctx.config.limits.max_v1_batch} events per request.")
    ctx.metrics.inc("worker_events_total", len(events))
    await ctx.hub.post_worker_events(body, events)
    await confirm_sent_controls(ctx, body)
    await frames_first(len(events))
    return JSONResponse({})


class WorkerConnection:
    """One open worker socket: the control messages sent on it that are not confirmed yet.

    A worker that sent ``X-Tether-Receipts`` at the upgrade (Tether's transport) confirms each one
    with a receipt frame; for the others (the stock CLI) the legacy rule applies: confirmed once
    the worker speaks after it was sent — unsound when the socket dies with the frame unread
    (output posted meanwhile may predate it), which is why Tether's workers send receipts."""

    def __init__(self, body: str, receipts: bool = False) -> None:
        self.body = body
        self.receipts = receipts
        self.unconfirmed: list[str] = []  # uuids of control messages sent on this socket


def _connections(ctx: ServerContext) -> dict[str, set[WorkerConnection]]:
    registry: dict[str, set[WorkerConnection]] = ctx.hub.__dict__.setdefault("worker_connections", {})
    return registry


async def confirm_sent_controls(ctx: ServerContext, body: str) -> None:
    """Legacy v1 rule (workers without receipts): a control message is confirmed once the
    worker speaks after it was sent."""
    uuids: list[str] = []
    for conn in _connections(ctx).get(body, ()):
        if not conn.receipts:
            uuids += conn.unconfirmed
            conn.unconfirmed = []
    await _mark_processed(ctx, body, uuids)


async def confirm_receipts(ctx: ServerContext, conn: WorkerConnection, uuids: list[str]) -> None:
    """The worker confirmed reading these control messages (a receipt frame on this socket)."""
    sent = set(conn.unconfirmed)
    confirmed = [u for u in uuids if u in sent]
    if confirmed:
        conn.unconfirmed = [u for u in conn.unconfirmed if u not in set(confirmed)]
        await _mark_processed(ctx, conn.body, confirmed)


async def _mark_processed(ctx: ServerContext, body: str, uuids: list[str]) -> None:
    if uuids:
        async with ctx.store.write() as tx:
            moved = await tx.set_delivery(body, uuids=uuids, status="processed")
            frames = [delivery_frame(ev) for ev in moved]
            tx.after_commit(lambda: ctx.hub.publish_frames(body, frames))


@router.websocket("/v1/session_ingress/ws/{session_id}")
@router.websocket("/v2/session_ingress/ws/{session_id}")
async def worker_socket(ws: WebSocket, session_id: str) -> None:
    ctx = ctx_of(ws)
    try:
        body = parse_session_id(session_id)
        await authorize_worker(ctx, bearer(ws), body)
    except TetherError as exc:
        await reject(ws, exc)
        return
    await ws.accept()
    sock = Socket(ws)
    conn = WorkerConnection(body, receipts=ws.headers.get(RECEIPTS_HEADER) == "1")
    _connections(ctx).setdefault(body, set()).add(conn)
    await _set_worker_status(ctx, body, "connected")
    ctx.metrics.add_gauge("worker_sockets", 1)
    init_id = str(uuidlib.uuid4())
    ctx.hub.server_request_ids.add(init_id)
    try:
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(_send_loop(ctx, sock, conn, init_id))
            await _receive_loop(ctx, sock, conn)
            sender.cancel()
    except* _Closed as group:
        code, reason = group.exceptions[0].args
        await sock.close(code, reason)
    finally:
        ctx.hub.server_request_ids.discard(init_id)
        conns = _connections(ctx).get(body)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                _connections(ctx).pop(body, None)
                with contextlib.suppress(Exception):
                    await _set_worker_status(ctx, body, "disconnected")
        ctx.metrics.add_gauge("worker_sockets", -1)
        if ctx.closing:
            await sock.close(CLOSE_RESTART, "server restarting")


class _Closed(Exception):
    pass


async def _set_worker_status(ctx: ServerContext, body: str, status: str) -> None:
    async with ctx.store.write() as tx:
        session = await tx.get_session(body)
        if session is None:
            return
        await tx.update_session(body, worker_status=status, worker_last_seen=now())
        session.update(worker_status=status)
        frame = ctx.hub.session_update_frame(session)
        tx.after_commit(lambda: ctx.hub.publish_frames(body, [frame]))


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
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise _Closed(CLOSE_INVALID_DATA, "frames must be newline-delimited JSON objects") from None
            if isinstance(event, dict) and event.get("type") == KEEP_ALIVE:
                receipts += receipt_uuids(event)
                continue
            events.append(event)
        if events:
            try:
                await ctx.hub.post_worker_events(conn.body, events)
            except NotFound:
                raise _Closed(CLOSE_NOT_FOUND, "session not found") from None
            except TetherError as exc:
                if exc.error_type == "already_archived":
                    raise _Closed(CLOSE_NOT_FOUND, "session archived") from None
                raise _Closed(CLOSE_INVALID_DATA, exc.message) from None
        if receipts:
            await confirm_receipts(ctx, conn, receipts)
        await confirm_sent_controls(ctx, conn.body)


async def _send_loop(ctx: ServerContext, sock: Socket, conn: WorkerConnection, init_id: str) -> None:
    body = conn.body
    with ctx.broker.subscribe(session_topic(body)) as sub:
        await sock.send_text(orjson.dumps({
            "type": "control_request", "request_id": init_id, "request": {"subtype": "initialize"},
        }).decode() + "\n")
        sent = -1
        while True:
            async with ctx.store.read() as tx:
                backlog = await tx.undelivered_inbound(body)
            for ev in backlog:
                if ev.seq > sent:
                    sent = await _deliver(ctx, sock, conn, ev)
            try:
                while True:
                    item = await sub.get()
                    if isinstance(item, SessionClosed):
                        raise _Closed(CLOSE_NOT_FOUND, "session archived")
                    if isinstance(item, ServerClosing):
                        raise _Closed(CLOSE_RESTART, "server restarting")
                    if isinstance(item, StoredEvent) and item.delivery is not None and not item.ephemeral:
                        if item.seq > sent:
                            sent = await _deliver(ctx, sock, conn, item)
            except Overflowed:
                sub.reset()


async def _deliver(ctx: ServerContext, sock: Socket, conn: WorkerConnection, ev: StoredEvent) -> int:
    await sock.send_text(ev.worker_text)
    if ev.event_type != "user":
        conn.unconfirmed.append(ev.uuid)
    if ev.delivery == "pending":
        async with ctx.store.write() as tx:
            moved = await tx.set_delivery(ev.session_id, uuids=[ev.uuid], status="received")
            frames = [delivery_frame(m) for m in moved]
            tx.after_commit(lambda: ctx.hub.publish_frames(ev.session_id, frames))
    return ev.seq
