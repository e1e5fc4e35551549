"""FlushGate: hold live writes back while history is being flushed (docs/protocol.md §12.4).

A bridge that connects a transport first sends the conversation so far, then the
messages produced meanwhile. The gate is started *before* connecting, so writes
made during the handshake and the history flush queue up here and are sent, in
order, right after the history.

Bounded: ``capacity`` items at most. On overflow the gate either raises
:class:`FlushGateOverflow` (the default: losing a message silently is worse than a
loud failure the caller can turn into a reconnect) or, with
``on_overflow="drop_oldest"``, discards the oldest queued item and counts it in
:attr:`FlushGate.dropped`.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Generic, Literal, TypeVar

__all__ = [
    "DEFAULT_CAPACITY",
    "FlushGate",
    "FlushGateOverflow",
    "OverflowPolicy",
]

T = TypeVar("T")

DEFAULT_CAPACITY: Final = 10_000

OverflowPolicy = Literal["raise", "drop_oldest"]


class FlushGateOverflow(RuntimeError):
    """The gate is full and its policy is ``raise``."""


class FlushGate(Generic[T]):
    __slots__ = ("_active", "_capacity", "_dropped", "_on_overflow", "_queue")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, on_overflow: OverflowPolicy = "raise") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._on_overflow: OverflowPolicy = on_overflow
        self._queue: deque[T] = deque()
        self._active = False
        self._dropped = 0

    @property
    def active(self) -> bool:
        return self._active

    @property
    def pending_count(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Items discarded by the ``drop_oldest`` policy since creation."""
        return self._dropped

    def start(self) -> None:
        """Begin queueing. Items kept by :meth:`deactivate` stay ahead of new ones."""
        self._active = True

    def enqueue(self, item: T) -> bool:
        """Queue ``item`` when the gate is active (True); False means "send it now yourself"."""
        if not self._active:
            return False
        if len(self._queue) >= self._capacity:
            if self._on_overflow == "raise":
                raise FlushGateOverflow(f"flush gate holds {self._capacity} items already")
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(item)
        return True

    def end(self) -> list[T]:
        """The flush is done: deactivate and hand back the queued items, oldest first."""
        self._active = False
        items = list(self._queue)
        self._queue.clear()
        return items

    def drop(self) -> int:
        """Permanent close: deactivate and discard the queue; returns how many were discarded."""
        self._active = False
        count = len(self._queue)
        self._queue.clear()
        return count

    def deactivate(self) -> None:
        """Transport replaced: stop queueing but keep the items for the next flush.

        While inactive, :meth:`enqueue` returns False even if items are held; callers
        that rebuild a transport call :meth:`start` again before writing (reference
        behaviour).
        """
        self._active = False
