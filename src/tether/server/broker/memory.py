"""In-process broker: topics with bounded subscriber queues.

The broker carries notifications of *committed* events only (commit, then fan out). A
subscriber that falls behind by more than its queue holds is not slowed down for
everyone else: it is marked overflowed and must re-read what it missed from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class ServerClosing:
    """Broadcast to every subscription when the server begins to shut down: streams end now
    (clients resume elsewhere or after the restart) instead of holding up the graceful exit."""


SERVER_CLOSING = ServerClosing()


class Overflowed(Exception):
    """The subscriber's queue filled up; re-synchronise from the store."""


class Subscription:
    def __init__(self, broker: Broker, topic: str, maxsize: int) -> None:
        self.broker = broker
        self.topic = topic
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.closed = False
        # Optional synchronous consumer: ``direct(item)`` returns True when it handled the item
        # (e.g. wrote it to a socket); it is asked only while nothing is queued, so the order holds.
        self.direct: Callable[[Any], bool] | None = None

    def _offer(self, item: Any) -> None:
        if self.overflowed:
            return
        if self.direct is not None and not self.queue.qsize() and self.direct(item):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # the queue stays full; get() raises Overflowed once the backlog is drained
            self.overflowed = True

    async def get(self, timeout: float | None = None) -> Any:
        """The next item; raise TimeoutError on timeout, Overflowed once the backlog is drained."""
        if self.overflowed and self.queue.empty():
            raise Overflowed(self.topic)
        if timeout is None:
            return await self.queue.get()
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    def get_nowait(self) -> Any:
        if self.overflowed and self.queue.empty():
            raise Overflowed(self.topic)
        return self.queue.get_nowait()

    def reset(self) -> None:
        """After re-synchronising: accept new items again."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.broker._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Broker:
    def __init__(self, queue_size: int = 4096) -> None:
        if queue_size < 1:  # asyncio.Queue(0) is unbounded: a slow subscriber would grow without end
            raise ValueError(f"broker_queue_size must be at least 1, got {queue_size}")
        self.queue_size = queue_size
        self._topics: dict[str, set[Subscription]] = {}

    def subscribe(self, topic: str, maxsize: int | None = None) -> Subscription:
        sub = Subscription(self, topic, maxsize or self.queue_size)
        self._topics.setdefault(topic, set()).add(sub)
        return sub

    def publish(self, topic: str, item: Any) -> int:
        subs = self._topics.get(topic)
        if not subs:
            return 0
        for sub in tuple(subs):
            sub._offer(item)
        return len(subs)

    def broadcast(self, item: Any) -> None:
        for subs in tuple(self._topics.values()):
            for sub in tuple(subs):
                try:
                    sub.queue.put_nowait(item)
                except asyncio.QueueFull:
                    sub.overflowed = True

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def _remove(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]

    async def close(self) -> None:
        self._topics.clear()
