"""PostgreSQL: the after-commit callbacks of one session's writers run in commit order.

On SQLite one lock serialises the process's write transactions and their callbacks. On
PostgreSQL that lock made an instance's writes queue behind each other's database round trips,
although the session row lock (``SELECT … FOR UPDATE``, repositories/base.py) already orders the
writers of a session. What it still gave was the order of the callbacks (fan-out in sequence
order). This keeps that order without the lock: a transaction takes a *turn* for a session when the
database grants it the session row, and after its commit waits for the earlier turns of that
session on this instance before running its callbacks.

Grant order is commit order: a second writer is granted the row only after the first committed,
which is after this process sent the first's COMMIT, which is after it saw the first's grant. The
waits happen after the commits (no database lock is held), and an earlier turn always ends (its
transaction commits and runs its callbacks, or rolls back), so they cannot deadlock; a turn that
names several sessions waits for each, and the database's own lock order rules out a cycle.
"""

from __future__ import annotations

import asyncio

__all__ = ["CommitOrder", "Turns"]


class CommitOrder:
    """The last turn taken per session, while it is open (one instance's store)."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def take(self, key: str) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """(the turn before, if still open; this turn)."""
        before = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        return before, mine

    def end(self, key: str, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._tails.get(key) is mine:
            del self._tails[key]


class Turns:
    """One transaction's turns: taken when a session row is granted, awaited after the commit."""

    __slots__ = ("_order", "_taken")

    def __init__(self, order: CommitOrder) -> None:
        self._order = order
        self._taken: dict[str, tuple[asyncio.Future[None] | None, asyncio.Future[None]]] = {}

    def granted(self, key: str) -> None:
        if key not in self._taken:  # the first grant in the transaction is its place
            self._taken[key] = self._order.take(key)

    async def wait_earlier(self) -> None:
        for before, _mine in tuple(self._taken.values()):
            if before is not None:
                await before

    def end(self) -> None:
        for key, (_before, mine) in self._taken.items():
            self._order.end(key, mine)
        self._taken.clear()
