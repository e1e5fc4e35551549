"""The CCR v2 worker's read stream, W10 (docs/protocol.md §4.4, §8.3): an SSE response served
by the session-log reader (server/reader.py).

``: connected`` first; then the backlog — every inbound event not yet processed, or with a
resume point (``from_sequence_num`` / ``Last-Event-ID``) every inbound event after it — then live
inbound events, each a ``client_event`` frame; ``:keepalive`` after ``sse_keepalive_s`` without
one. While the stream waits, a new event's frame (built once for every stream,
``StoredEvent.worker_sse_frame``) is written straight to the connection (api/direct.py
``ChunkWriter``); a stream that is behind or paused takes the queued path.

The stream ends when the session is archived, the server shuts down, or the work its token
belongs to ended (server/streams.py: the worker then reconnects and is answered 410); a client
that goes away ends it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tether.server.api.direct import ChunkWriter
from tether.server.context import ServerContext
from tether.server.reader import Feed, LogReader, LogView, Start
from tether.server.store import StoredEvent
from tether.server.streams import Holder

CONNECTED = b": connected\n\n"
KEEPALIVE = b":keepalive\n\n"


class _SseFeed(Feed):
    inbound = True
    resync = LogView.INBOUND
    queued_metric = "sse_frames_queued_total"

    def __init__(self, ctx: ServerContext, send: Send, after: int | None, head: list[tuple[bytes, bytes]]) -> None:
        self.ctx = ctx
        self._send = send
        self.head = head
        self.after = after
        self.idle_timeout = ctx.config.sse_keepalive_s
        self.writer = ChunkWriter(send, self._count)

    def _count(self, frames: int) -> None:
        self.ctx.metrics.inc("sse_frames_direct_total", frames)
        self.ctx.metrics.inc("sse_direct_writes_total")

    async def chunk(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def open(self) -> Start:
        # The head goes out once the stream is subscribed: anything published from then on reaches it.
        await self._send({"type": "http.response.start", "status": 200, "headers": self.head})
        await self.chunk(CONNECTED)
        if self.after is None:  # a fresh worker: a prompt sent before it connected is never lost
            return Start(0, LogView.UNDELIVERED)
        return Start(self.after, LogView.INBOUND)

    async def send(self, ev: StoredEvent) -> None:
        await self.chunk(ev.worker_sse_frame)

    @property
    def writes_directly(self) -> bool:
        return self.writer.available

    def write(self, item: Any) -> bool:
        return isinstance(item, StoredEvent) and self.writer.write(item.worker_sse_frame)

    async def idle(self) -> None:
        await self.chunk(KEEPALIVE)


class SseStream(Response):
    """The W10 response: headers at once, then the reader until the stream ends."""

    media_type = "text/event-stream"

    def __init__(self, ctx: ServerContext, body: str, after: int | None, keys: list[str]) -> None:
        self.ctx = ctx
        self.session = body
        self.after = after
        self.keys = keys
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no",
                           "content-type": "text/event-stream; charset=utf-8"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        reader = LogReader(ctx, self.session, _SseFeed(ctx, send, self.after, self.raw_headers))
        ctx.metrics.add_gauge("sse_streams", 1)
        try:
            with ctx.streams.hold(Holder(reader.revoke), self.keys):
                ended = await _first_of(reader.run(), _disconnect(receive))
        finally:
            ctx.metrics.add_gauge("sse_streams", -1)
        if ended:  # (a reconnect with a gone token is answered 410)
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _first_of(stream: Coroutine[Any, Any, object], disconnect: Coroutine[Any, Any, None]) -> bool:
    """Run both until one finishes; True when the stream ended (not the client)."""
    async with asyncio.TaskGroup() as tg:
        streaming = tg.create_task(stream, name="sse-stream")
        watching = tg.create_task(disconnect, name="sse-disconnect")
        await asyncio.wait((streaming, watching), return_when=asyncio.FIRST_COMPLETED)
        ended = streaming.done() and not streaming.cancelled()
        streaming.cancel()
        watching.cancel()
    return ended
