"""In-process broker: typed topics with bounded subscriber queues.

The broker carries notifications of *committed* events only (commit, then fan out). A
subscriber that falls behind by more than its queue holds is not slowed down for
everyone else: it is marked overflowed and must re-read what it missed from the store.
What each topic carries is a closed set of types (broker/items.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from tether.server.broker.items import Revoked, ServerClosing, SessionClosed, Topic

T = TypeVar("T")

# Queued by Subscription.resync to wake a reader parked in get(): it raises Overflowed there.
_WAKE: Any = object()


class Overflowed(Exception):
    """The subscriber's queue filled up; re-synchronise from the store."""


class Subscription(Generic[T]):
    def __init__(self, broker: Broker, topic: Topic[T], maxsize: int) -> None:
        self.broker = broker
        self.topic = topic.name
        self.queue: asyncio.Queue[T | ServerClosing | Revoked] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.closed = False
        # Optional synchronous consumer: ``direct(item)`` returns True when it handled the item
        # (e.g. wrote it to a socket); it is asked only while nothing is queued, so the order holds.
        self.direct: Callable[[T], bool] | None = None

    def _offer(self, item: T) -> None:
        if self.overflowed:
            return
        if self.direct is not None and not self.queue.qsize() and self.direct(item):
            return
        self._put(item)

    def _put(self, item: T | ServerClosing | Revoked | SessionClosed) -> None:
        try:
            self.queue.put_nowait(cast(Any, item))
        except asyncio.QueueFull:
            # the queue stays full; get() raises Overflowed once the backlog is drained
            self.overflowed = True

    def interrupt(self, item: ServerClosing | Revoked | SessionClosed) -> None:
        """Queue an out-of-band item (never taken by ``direct``). On a full queue the subscriber
        overflows instead: its reader re-reads the store and looks at why it was woken."""
        self._put(item)

    def resync(self) -> None:
        """Make the reader re-read the store, as after an overflow (a gap on the bus between
        server instances, broker/redis.py); a reader parked in ``get`` wakes for it."""
        if self.overflowed or self.closed:
            return
        self.overflowed = True
        try:
            self.queue.put_nowait(_WAKE)
        except asyncio.QueueFull:
            pass  # the reader is not parked: it meets Overflowed once the backlog is drained

    async def get(self, timeout: float | None = None) -> T | ServerClosing | Revoked:
        """The next item; raise TimeoutError on timeout, Overflowed once the backlog is drained."""
        if self.overflowed and self.queue.empty():
            raise Overflowed(self.topic)
        if timeout is None:
            item = await self.queue.get()
        else:
            async with asyncio.timeout(timeout):
                item = await self.queue.get()
        if item is _WAKE:
            raise Overflowed(self.topic)
        return item

    def get_nowait(self) -> T | ServerClosing | Revoked:
        if self.overflowed and self.queue.empty():
            raise Overflowed(self.topic)
        item = self.queue.get_nowait()
        if item is _WAKE:
            raise Overflowed(self.topic)
        return item

    def reset(self) -> None:
        """After re-synchronising: accept new items again. Items that end the stream stay queued
        (the store has no record of them)."""
        endings = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, ServerClosing | Revoked | SessionClosed):
                endings.append(item)
        self.overflowed = False
        for item in endings:
            self.queue.put_nowait(cast(Any, item))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.broker._remove(self)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Broker:
    def __init__(self, queue_size: int = 4096) -> None:
        if queue_size < 1:  # asyncio.Queue(0) is unbounded: a slow subscriber would grow without end
            raise ValueError(f"broker_queue_size must be at least 1, got {queue_size}")
        self.queue_size = queue_size
        self._topics: dict[str, set[Subscription[Any]]] = {}

    def subscribe(self, topic: Topic[T], maxsize: int | None = None) -> Subscription[T]:
        sub = Subscription(self, topic, maxsize or self.queue_size)
        self._topics.setdefault(topic.name, set()).add(sub)
        return sub

    def publish(self, topic: Topic[T], item: T) -> int:
        subs = self._topics.get(topic.name)
        if not subs:
            return 0
        for sub in tuple(subs):
            sub._offer(item)
        return len(subs)

    def broadcast(self, item: ServerClosing) -> None:
        for subs in tuple(self._topics.values()):
            for sub in tuple(subs):
                sub.interrupt(item)

    async def run(self) -> None:
        """Background work of the broker for the server's lifetime (none in process)."""

    def subscriber_count(self, topic: Topic[Any]) -> int:
        return len(self._topics.get(topic.name, ()))

    def _remove(self, sub: Subscription[Any]) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]

    async def close(self) -> None:
        self._topics.clear()
