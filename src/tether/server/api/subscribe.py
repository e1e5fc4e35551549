"""The subscribe socket for clients (docs/protocol.md §8.4, §4.7)."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket

from tether.errors import InvalidRequest, PermissionDenied, TetherError
from tether.protocol.access import role_fell
from tether.protocol.event_rules import check_client_control
from tether.protocol.messages import MessageError
from tether.server import jsonio
from tether.server.api.common import ctx_of, parse_count, parse_session_id, user, user_credential
from tether.server.api.direct import DirectWriter
from tether.server.api.sockets import (
    CLOSE_INVALID_DATA,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    Socket,
    cancelling_holder,
    reject,
    uncancel,
)
from tether.server.auth.service import Principal
from tether.server.broker import Live
from tether.server.context import ServerContext
from tether.server.reader import End, Feed, LogReader, LogView, Start
from tether.server.store import StoredEvent
from tether.server.store.records import PermissionRecord
from tether.server.streams import token_key, user_key

router = APIRouter()


def _from_seq(ws: WebSocket) -> int | None:
    return parse_count(ws.query_params.get("from_sequence_num"), "from_sequence_num")


def _origin_ok(ws: WebSocket, ctx: ServerContext) -> bool:
    """Cookie-authenticated sockets must come from our own pages (no cross-site hijacking)."""
    origin = ws.headers.get("origin")
    if origin is None or ws.headers.get("authorization"):
        return True
    host = ws.headers.get("host", "")
    return origin.split("://", 1)[-1] == host or origin.rstrip("/") == ctx.config.url


@router.websocket("/v1/sessions/ws/{session_id}/subscribe")
async def subscribe(ws: WebSocket, session_id: str) -> None:
    ctx = ctx_of(ws)
    try:
        body = parse_session_id(session_id)
        from_seq = _from_seq(ws)
        if not _origin_ok(ws, ctx):
            raise PermissionDenied("Cross-origin subscribe refused.")
        credential = user_credential(ws)
        principal = await user(ws)
        await ctx.sessions.session(body, principal.org_id)
    except TetherError as exc:
        await reject(ws, exc)
        return
    await ws.accept()
    sock = Socket(ws)
    ctx.metrics.add_gauge("subscribers", 1)
    # A revoked token, a logout or a lower role closes this socket at once (4003): streams.py.
    keys = (token_key(principal.token_id), user_key(principal.user_id))
    try:
        with ctx.streams.hold(cancelling_holder(principal.role), keys) as holder:
            try:
                await _serve(ctx, sock, body, from_seq, _Caller(credential, principal))
            except asyncio.CancelledError:
                if holder.closed is None:
                    raise
                uncancel()
                await sock.close(*holder.closed)
    finally:
        ctx.metrics.add_gauge("subscribers", -1)


async def _serve(ctx: ServerContext, sock: Socket, body: str, from_seq: int | None, caller: _Caller) -> None:
    feed = _SubscriberFeed(ctx, sock, body, from_seq)
    try:
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(_send_loop(ctx, feed))
            await _receive_loop(ctx, sock, body, caller, feed.opened)
            sender.cancel()
    except* _Closed as group:
        code, reason = group.exceptions[0].args
        await sock.close(code, reason)
    except* Exception as group:
        if not all(isinstance(e, ConnectionError | OSError) or type(e).__name__.endswith("Disconnect")
                   for e in group.exceptions):
            raise


class _Closed(Exception):
    pass


class _Caller:
    """The credential a subscriber connected with, and what it was when the socket opened."""

    __slots__ = ("held", "kinds", "secret")

    def __init__(self, credential: tuple[str, tuple[str, ...]], principal: Principal) -> None:
        self.secret = credential[0]
        self.kinds = credential[1]
        self.held = principal

    async def current(self, ctx: ServerContext) -> Principal:
        """The credential as it is now, checked before every client action: revoked, expired,
        logged out or a role below the one held → close 4003."""
        try:
            now_principal = await ctx.auth.principal(self.secret, kinds=self.kinds)
        except TetherError as exc:
            raise _Closed(CLOSE_UNAUTHORIZED, exc.message[:120]) from None
        if role_fell(self.held.role, now_principal.role):
            raise _Closed(CLOSE_UNAUTHORIZED, "Your role changed; reconnect.")
        return now_principal


class _SubscriberFeed(Feed):
    """A subscriber's view of the log (docs/protocol.md §4.7): every event, replayed after
    ``from_sequence_num`` when asked, then the pending permission requests, then live frames —
    written straight to the socket while its sender is idle (api/direct.py)."""

    resync = LogView.ALL
    queued_metric = "subscriber_frames_queued_total"

    def __init__(self, ctx: ServerContext, sock: Socket, body: str, from_seq: int | None) -> None:
        self.ctx = ctx
        self.sock = sock
        self.body = body
        self.from_seq = from_seq
        self.pending: list[PermissionRecord] = []
        self.writer = DirectWriter(sock.ws, self._count)
        # Set once the opening read fixed where live delivery starts; the socket answers no frame
        # before (see _receive_loop).
        self.opened = asyncio.Event()

    def _count(self, frames: int) -> None:
        self.ctx.metrics.inc("subscriber_frames_direct_total", frames)
        self.ctx.metrics.inc("subscriber_direct_writes_total")

    async def open(self) -> Start:
        last_seq, pending = await self.ctx.permissions.open_at(self.body)
        self.opened.set()
        if self.from_seq is None:
            self.pending = pending
            return Start(last_seq)
        # requests logged after from_seq arrive with the replay
        self.pending = [p for p in pending if p.seq is None or p.seq <= self.from_seq]
        return Start(self.from_seq, LogView.ALL)

    async def ready(self) -> None:
        pending, self.pending = self.pending, []  # (the long-lived reader keeps no rows alive)
        for perm in pending:
            frame = orjson.loads(perm.request)
            frame["sequence_num"] = perm.seq
            await self.sock.send_json(frame)

    async def send(self, ev: StoredEvent) -> None:
        await self.sock.send_text(ev.client_text)

    async def send_live(self, item: Live) -> None:
        await self.sock.send_text(item.frame.decode())

    @property
    def writes_directly(self) -> bool:
        return self.writer.available

    def write(self, item: StoredEvent | Live) -> bool:
        return self.writer.write(item.client_ws_frame if isinstance(item, StoredEvent) else item.ws_frame)


async def _send_loop(ctx: ServerContext, feed: _SubscriberFeed) -> None:
    end = await LogReader(ctx, feed.body, feed).run()
    if end is End.SERVER_CLOSING:
        raise _Closed(CLOSE_RESTART, "server restarting")
    # (a revoked credential cancels this task instead: streams.py; subscribers outlive archiving)


async def _receive_loop(ctx: ServerContext, sock: Socket, body: str, caller: _Caller, opened: asyncio.Event) -> None:
    # Live-only delivery starts after the last sequence number the opening read finds. On
    # PostgreSQL that read awaits the database while this loop could already answer a keep_alive;
    # a client that then posted an event committed before the read would never see it (it is
    # neither replayed nor after the start). So no frame is answered before the read: an answer
    # means every event committed from then on reaches this socket.
    await opened.wait()
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
        try:
            frame = jsonio.parse(text, "A frame")
        except InvalidRequest as exc:
            message = exc.message if isinstance(exc, jsonio.TooDeep) else "Frames must be JSON objects."
            await sock.send_json(_error_frame("invalid_request_error", message))
            continue
        await _handle_frame(ctx, sock, body, caller, frame)


def _error_frame(kind: str, message: str, request_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


async def _handle_frame(ctx: ServerContext, sock: Socket, body: str, caller: _Caller, frame: Any) -> None:
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        await sock.send_json(_error_frame("invalid_request_error", "Frames must be objects with a 'type'."))
        return
    kind = frame["type"]
    if kind == "keep_alive":
        await sock.send_json({"type": "keep_alive"})
        return
    request_id = frame.get("request_id")
    principal = await caller.current(ctx) if kind in ("control_response", "control_request") else caller.held
    try:
        if kind == "control_response":
            principal.require_writer()
            await ctx.permissions.answer(body, principal.org_id, principal.user_id, frame)
        elif kind == "control_request":
            principal.require_writer()
            try:
                check_client_control(frame.get("request"))
            except MessageError as exc:
                raise InvalidRequest(str(exc)) from None
            if not isinstance(request_id, str) or not request_id:
                frame["request_id"] = request_id = str(uuidlib.uuid4())
            await ctx.log.post_client_events(body, principal.org_id, principal.user_id, [frame])
            await sock.send_json({"type": "control_response",
                                  "response": {"subtype": "success", "request_id": request_id}})
        else:
            raise InvalidRequest(f"Unsupported frame type {kind!r}: send prompts with POST "
                                 "/v1/sessions/{id}/events.")
    except TetherError as exc:
        rid = request_id
        if kind == "control_response" and isinstance(frame.get("response"), dict):
            rid = frame["response"].get("request_id", rid)
        await sock.send_json(_error_frame(exc.error_type, exc.message, rid))
