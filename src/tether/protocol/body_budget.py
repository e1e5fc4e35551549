"""One budget for the request bodies the server holds at once (pure; the adapter is server/fastpath.py).

Each request may be up to its route's limit (10 MiB of JSON, 20 MiB of file), and nothing bounded
how many were read at the same time: forty slow 9 MiB bodies took a server from 225 to 567 MB
(issue #11). Bytes are taken from the budget as they arrive and given back when the request is
over; a request that would overdraw it is refused (the server answers 429 with Retry-After, and
clients retry). A body never read — an unauthenticated request's, say — takes nothing.
"""

from __future__ import annotations

__all__ = [
    "BodyBudget",
]


class BodyBudget:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self.refused = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes, or refuse (and reserve nothing)."""
        if self.used + size > self.capacity:
            self.refused += 1
            return False
        self.used += size
        self.peak = max(self.peak, self.used)
        return True

    def give(self, size: int) -> None:
        if size < 0 or size > self.used:
            raise ValueError(f"giving back {size} of {self.used} bytes in use")
        self.used -= size
