"""One reader for every stream served from a session's log (docs/protocol.md §4.4, §4.7, §8).

The subscribe socket, the v1 worker socket and the v2 SSE worker stream all do the same thing:
subscribe to the session's live feed, read the log from where their peer stands (a page at a
time, cut at ``limits.max_page_bytes``), then follow the feed — and read the log again after the
last event sent when the feed overflowed (or, for a subscriber, skipped a number). What to send
and what to skip is :class:`~tether.protocol.stream_cursor.StreamCursor`'s decision; what differs
between the three is a :class:`Feed`: which topic, which part of the log, the frames before and
after the catch-up, how a frame is written, and what sending an event means for its delivery.

While the reader waits for the feed, an item published on it may be written synchronously,
straight to the connection's transport (:meth:`Feed.write`, see api/direct.py): no queue, no
task switch. Anything that cannot be written that way (a paused transport, a closing socket, an
item behind a queued one) takes the queue, so the order always holds.

The reader returns why it ended (:class:`End`); its stream closes the way its protocol says.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

from tether.protocol.stream_cursor import StreamCursor
from tether.server.broker import (
    REVOKED,
    Live,
    Overflowed,
    Revoked,
    ServerClosing,
    SessionClosed,
    Subscription,
    Topic,
    client_topic,
    inbound_topic,
)
from tether.server.context import ServerContext
from tether.server.store import StoredEvent, Tx

BATCH_LIMIT = 256  # items taken per wake-up of a reader


class LogView(enum.Enum):
    ALL = "all"  # every logged event (a subscriber replaying)
    INBOUND = "inbound"  # the inbound events, processed or not (a v2 stream resuming)
    UNDELIVERED = "undelivered"  # the inbound events not yet processed (a worker's first read)


async def read_page(tx: Tx, body: str, view: LogView, after: int, max_bytes: int) -> list[StoredEvent]:
    """The next page of ``view`` after sequence number ``after``, cut at ``max_bytes``."""
    if view is LogView.ALL:
        return await tx.events.after(body, after, limit=500, max_bytes=max_bytes)
    if view is LogView.INBOUND:
        return await tx.events.inbound_after(body, after, max_bytes=max_bytes)
    return await tx.events.undelivered_inbound(body, after_seq=after, max_bytes=max_bytes)


class End(enum.Enum):
    ARCHIVED = "archived"  # the session was archived (worker streams only)
    SERVER_CLOSING = "server_closing"
    REVOKED = "revoked"  # the stream's credential or work is gone (server/streams.py)


@dataclass(frozen=True)
class Start:
    """Where live delivery continues after, and which part of the log to send before it."""

    after: int
    catch_up: LogView | None = None


class Feed:
    """What one kind of stream wants from the reader (override what differs)."""

    inbound: bool = False  # read the inbound topic (workers) rather than the client topic
    resync: LogView = LogView.ALL  # what to re-read after an overflow
    idle_timeout: float | None = None  # call ``idle`` after this long without an item
    queued_metric: str | None = None  # counts frames that took the queued path

    async def open(self) -> Start:
        """Frames before the catch-up (subscribed already); where to start."""
        return Start(0)

    async def ready(self) -> None:
        """Frames after the catch-up, before live ones."""

    def wants(self, ev: StoredEvent) -> bool:
        """Whether an event read from the log still needs sending."""
        return True

    async def send(self, ev: StoredEvent) -> None:
        raise NotImplementedError

    async def send_live(self, item: Live) -> None:
        """A non-event frame (client topic only)."""

    def write(self, item: StoredEvent | Live) -> bool:
        """Take ``item`` synchronously (direct write) or return False: it is queued."""
        return False

    @property
    def writes_directly(self) -> bool:
        return False

    def sent(self, ev: StoredEvent) -> None:
        """``ev`` went out (either path)."""

    async def idle(self) -> None:
        """Nothing arrived for ``idle_timeout`` seconds."""


class LogReader:
    """Catch up from the log, then follow the live feed, re-reading on overflow."""

    def __init__(self, ctx: ServerContext, body: str, feed: Feed) -> None:
        self.ctx = ctx
        self.body = body
        self.feed = feed
        self.cursor = StreamCursor(0, contiguous=not feed.inbound)
        self.waiting = False  # parked on the feed: a publish may write directly
        self.revoked = False
        self._sub: Subscription[Any] | None = None

    def revoke(self) -> None:
        """Wake the reader: its stream must end (a ``Holder``'s wake, server/streams.py)."""
        self.revoked = True
        if self._sub is not None:
            self._sub.interrupt(REVOKED)

    async def run(self) -> End:
        topic: Topic[Any] = inbound_topic(self.body) if self.feed.inbound else client_topic(self.body)
        with self.ctx.broker.subscribe(topic) as sub:
            self._sub = sub
            try:
                start = await self.feed.open()
                self.cursor = StreamCursor(start.after, contiguous=not self.feed.inbound)
                if start.catch_up is not None:
                    await self._catch_up(start.catch_up)
                await self.feed.ready()
                if self.feed.writes_directly:
                    sub.direct = self._offer
                while True:
                    end = await self._follow(sub)
                    if end is not None:
                        return end
            finally:
                self._sub = None

    async def _resync(self) -> None:
        self.ctx.metrics.inc("stream_resyncs_total")
        await self._catch_up(self.feed.resync)

    async def _catch_up(self, view: LogView) -> None:
        """Send what the log holds after the last event sent, a page at a time (no long backlog
        is ever held in memory at once)."""
        after, max_bytes = self.cursor.last, self.ctx.config.limits.max_page_bytes
        while True:
            async with self.ctx.store.read() as tx:
                page = await read_page(tx, self.body, view, after, max_bytes)
            if not page:
                return
            for ev in page:
                if self.cursor.from_log(ev.seq) and self.feed.wants(ev):
                    await self._send(ev)
            after = page[-1].seq

    async def _follow(self, sub: Subscription[Any]) -> End | None:
        """One wake-up: everything queued, sent in order; why to stop, if so."""
        self.waiting = True
        try:
            batch = await _next_batch(sub, self.feed.idle_timeout)
        except TimeoutError:
            self.waiting = False
            await self.feed.idle()
            return self._stopping()
        except Overflowed:
            self.waiting = False
            sub.reset()
            await self._resync()
            return self._stopping()
        self.waiting = False
        queued = 0
        for item in batch:
            if isinstance(item, StoredEvent):
                verdict = self.cursor.live(item.seq, ephemeral=item.ephemeral)
                if verdict == "send":
                    await self._send(item)
                    queued += 1
                elif verdict == "resync":  # (the log holds this event too)
                    await self._resync()
            elif isinstance(item, Live):
                await self.feed.send_live(item)
                queued += 1
            elif isinstance(item, SessionClosed):
                return End.ARCHIVED
            elif isinstance(item, ServerClosing):
                return End.SERVER_CLOSING
            elif isinstance(item, Revoked):
                return End.REVOKED
        if queued and self.feed.queued_metric is not None:
            self.ctx.metrics.inc(self.feed.queued_metric, queued)
        return self._stopping()

    def _stopping(self) -> End | None:
        """A reason to stop that an overflowed queue may have swallowed."""
        if self.revoked:
            return End.REVOKED
        if self.ctx.closing:
            return End.SERVER_CLOSING
        return None

    async def _send(self, ev: StoredEvent) -> None:
        await self.feed.send(ev)
        if not ev.ephemeral:
            self.cursor.sent(ev.seq)
        self.feed.sent(ev)

    def _offer(self, item: Any) -> bool:
        """The broker's synchronous path (only while nothing is queued): True when the item was
        handled here — written, or skipped as already sent."""
        if not self.waiting or self.revoked:
            return False
        if isinstance(item, StoredEvent):
            verdict = self.cursor.live(item.seq, ephemeral=item.ephemeral)
            if verdict == "skip":
                return True
            if verdict == "resync" or not self.feed.write(item):
                return False
            if not item.ephemeral:
                self.cursor.sent(item.seq)
            self.feed.sent(item)
            return True
        if isinstance(item, Live):
            return self.feed.write(item)
        return False  # endings take the queue


async def _next_batch(sub: Subscription[Any], timeout: float | None) -> list[Any]:
    """Everything already queued, after waiting for the first item (one wake-up per burst)."""
    batch = [await sub.get(timeout)]
    while len(batch) < BATCH_LIMIT:
        try:
            batch.append(sub.get_nowait())
        except (asyncio.QueueEmpty, Overflowed):
            break
    return batch
