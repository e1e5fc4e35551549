"""BoundedUUIDSet: a FIFO ring backed by a set (docs/protocol.md §7.5).

Bridges remember the uuids they posted (to drop their own echoes) and the uuids they
delivered (to drop re-deliveries). Both sets must be bounded, and the oldest entry is
the one least likely to come back, so eviction is first-in-first-out. Re-adding a
present uuid does not refresh its position: an echo is recognised, not renewed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = [
    "DEFAULT_CAPACITY",
    "BoundedUUIDSet",
]

DEFAULT_CAPACITY: Final = 2000  # docs/protocol.md §7.5: both v1 rings; v2 default `uuid_dedup_buffer_size`


class BoundedUUIDSet:
    """At most ``capacity`` strings; adding to a full set evicts the oldest."""

    __slots__ = ("_capacity", "_members", "_order")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, initial: Iterable[str] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()
        for item in initial:
            self.add(item)

    @property
    def capacity(self) -> int:
        return self._capacity

    def add(self, item: str) -> bool:
        """Add ``item``; False when it was already present (and nothing changed)."""
        if item in self._members:
            return False
        if len(self._order) >= self._capacity:
            self._members.discard(self._order.popleft())
        self._order.append(item)
        self._members.add(item)
        return True

    def discard(self, item: str) -> bool:
        """Remove ``item`` if present (O(n): discards are rare); True when it was."""
        if item not in self._members:
            return False
        self._members.remove(item)
        self._order.remove(item)
        return True

    def clear(self) -> None:
        self._order.clear()
        self._members.clear()

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        """Oldest first."""
        return iter(tuple(self._order))

    def __repr__(self) -> str:
        return f"BoundedUUIDSet(capacity={self._capacity}, size={len(self)})"
