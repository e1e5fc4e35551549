"""Session ingress v1 (reference §1.6, §2.1–2.2; PROTOCOL.md §4.4): the worker's WebSocket
(reads; also accepts writes as frames) and the HTTP POST write path (I2)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from tether.errors import (
    AuthenticationFailed,
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
from tether.server.auth.secrets import kind_of
from tether.server.auth.service import Principal
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.clock import now
from tether.server.context import ServerContext
from tether.server.reader import End, Feed, LogReader, LogView, Start
from tether.server.store import StoredEvent
from tether.server.streams import token_key, user_key, work_key

router = APIRouter()
log = logging.getLogger("tether.server.ingress")


class _Closed(Exception):
    """(close code, reason): end this worker socket."""


@dataclass(frozen=True)
class Caller:
    """Who holds a session-ingress connection: a worker token, or a person (REPL v1 bridge)."""

    secret: str
    claims: WorkerClaims | None = None
    principal: Principal | None = None

    @property
    def actor(self) -> str:
        return self.principal.user_id if self.principal is not None else "worker"

    def keys(self) -> list[str]:
        """What revokes it (streams.py): the token and its user, or the worker's work item."""
        if self.principal is not None:
            return [token_key(self.principal.token_id), user_key(self.principal.user_id)]
        if self.claims is not None and self.claims.work_id:
            return [work_key(self.claims.work_id)]
        return []


async def authorize_worker(ctx: ServerContext, token: str | None, body: str, *, write: bool,
                           check_session: bool = True) -> Caller:
    """A worker token of this session whose work is live, or a user credential of its org.

    A worker token is signed for exactly one session, so the hot write path skips the
    session lookup (``check_session=False``): appending finds a missing or archived session
    anyway, and the work check is a cached look-up (dispatch.py).
    """
    if not token:
        raise AuthenticationFailed("Session ingress needs 'Authorization: Bearer <token>'.")
    if kind_of(token) == "jwt" or token.startswith("sk-ant-si-"):
        claims = ctx.auth.worker_for_session(token, body)
        if write:
            await ctx.dispatcher.check_worker_write(claims)
        else:
            await ctx.dispatcher.check_worker_read(claims)
        caller = Caller(token, claims=claims)
        if not check_session:
            return caller
        org_id = claims.org_id
    else:
        principal = await ctx.auth.principal(token)
        org_id = principal.org_id
        caller = Caller(token, principal=principal)
    async with ctx.store.read() as tx:
        session = await tx.get_session(body)
    if session is None or session["org_id"] != org_id:
        raise NotFound("No such session.")  # before any role check: no existence oracle
    if session["archived_at"]:
        raise NotFound("The session is archived.")
    if caller.principal is not None:
        caller.principal.require_writer()
    return caller


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
    await authorize_worker(ctx, token, body, write=True, check_session=False)
    rate_limit(ctx, f"worker:{body}")
    payload = await read_object(request, allow_empty=False, check_depth=False)  # checked by part:
    events = payload.get("events")
    if not isinstance(events, list):
        raise InvalidRequest("'events' must be a list.")
    if len(events) > ctx.config.limits.max_v1_batch:
        raise PayloadTooLarge(f"At most {ctx.config.limits.max_v1_batch} events per request.")
    jsonio.check_batch(payload, events)
    ctx.metrics.inc("worker_events_total", len(events))
    await ctx.hub.post_worker_events(body, events, depth_room=jsonio.EVENT_ROOM_V1_POST)
    confirm_sent_controls(ctx, body)
    await frames_first(len(events))
    return JSONResponse({})


class WorkerConnection:
    """One open worker socket: the control messages sent on it that are not confirmed yet.

    A worker that sent ``X-Tether-Receipts`` at the upgrade (Tether's transport) confirms each one
    with a receipt frame; for the others (the stock CLI) the legacy rule applies: confirmed once
    the worker speaks after it was sent — unsound when the socket dies with the frame unread
    (output posted meanwhile may predate it), which is why Tether's workers send receipts."""

    def __init__(self, body: str, caller: Caller, receipts: bool = False) -> None:
        self.body = body
        self.caller = caller
        self.receipts = receipts
        self.unconfirmed: list[StoredEvent] = []  # control messages sent on this socket


def _connections(ctx: ServerContext) -> dict[str, set[WorkerConnection]]:
    registry: dict[str, set[WorkerConnection]] = ctx.hub.__dict__.setdefault("worker_connections", {})
    return registry


def confirm_sent_controls(ctx: ServerContext, body: str) -> None:
    """Legacy v1 rule (workers without receipts): a control message is confirmed once the worker
    speaks after it was sent (written with the next batch of delivery states, server/delivery.py)."""
    for conn in _connections(ctx).get(body, ()):
        if not conn.receipts:
            sent, conn.unconfirmed = conn.unconfirmed, []
            for ev in sent:
                ctx.deliveries.moved(ev, "processed")


def confirm_receipts(ctx: ServerContext, conn: WorkerConnection, uuids: list[str]) -> None:
    """The worker confirmed reading these control messages (a receipt frame on this socket)."""
    wanted = set(uuids)
    confirmed = [ev for ev in conn.unconfirmed if ev.uuid in wanted]
    if confirmed:
        conn.unconfirmed = [ev for ev in conn.unconfirmed if ev.uuid not in wanted]
        for ev in confirmed:
            ctx.deliveries.moved(ev, "processed")


@router.websocket("/v1/session_ingress/ws/{session_id}")
@router.websocket("/v2/session_ingress/ws/{session_id}")
async def worker_socket(ws: WebSocket, session_id: str) -> None:
    ctx = ctx_of(ws)
    try:
        body = parse_session_id(session_id)
        caller = await authorize_worker(ctx, bearer(ws), body, write=False)
    except TetherError as exc:
        await reject(ws, exc)
        return
    await ws.accept()
    sock = Socket(ws)
    conn = WorkerConnection(body, caller, receipts=ws.headers.get(RECEIPTS_HEADER) == "1")
    _connections(ctx).setdefault(body, set()).add(conn)
    await _set_worker_status(ctx, body, "connected")
    ctx.metrics.add_gauge("worker_sockets", 1)
    init_id = str(uuidlib.uuid4())
    ctx.hub.server_request_ids.add(init_id)
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
    after 10–14 s, reference §3.3): one that has not within ``initialize_timeout_s`` is closed
    1008 (docs/protocol.md §8.1, §8.5) and reconnects to get a fresh one. The answer, on the
    socket or by POST, takes ``init_id`` out of the hub's open server requests."""
    await asyncio.sleep(ctx.config.initialize_timeout_s)  # a deadline, not a wait for a condition
    if init_id in ctx.hub.server_request_ids:
        ctx.metrics.inc("worker_initialize_timeouts_total")
        raise _Closed(CLOSE_POLICY, f"initialize not answered within {ctx.config.initialize_timeout_s:g} s")


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
                await ctx.hub.post_worker_events(conn.body, events)
            except NotFound:
                raise _Closed(CLOSE_NOT_FOUND, "session not found") from None
            except TetherError as exc:
                if exc.error_type == "already_archived":
                    raise _Closed(CLOSE_NOT_FOUND, "session archived") from None
                raise _Closed(CLOSE_INVALID_DATA, exc.message) from None
        if receipts:
            confirm_receipts(ctx, conn, receipts)
        confirm_sent_controls(ctx, conn.body)


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
