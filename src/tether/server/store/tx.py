"""One transaction (see store.py): its connection, its repositories, and what runs after its commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from tether.server.store.commit_order import Turns
from tether.server.store.repositories.accounts import Keys, Orgs, Tokens, Users
from tether.server.store.repositories.environments import Environments
from tether.server.store.repositories.events import Events, InternalEvents
from tether.server.store.repositories.files import Audit, Files
from tether.server.store.repositories.instances import Instances
from tether.server.store.repositories.permissions import Permissions
from tether.server.store.repositories.sessions import Sessions
from tether.server.store.repositories.work import WorkItems

__all__ = ["Tx"]

# an AsyncConnection (PostgreSQL) or a store.InlineConnection (SQLite): both await execute()
Connection = Any
_ADVISORY_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext(:what))")
R = TypeVar("R")


class _made_on_first_use(Generic[R]):
    """A repository built the first time a transaction asks for it, then a plain attribute of the
    transaction (a non-data descriptor: the instance's own attribute wins from then on). Like
    functools.cached_property, without the lock that one takes on every access on Python 3.11 —
    a measurable share of a worker's POST, which asks for two repositories."""

    def __init__(self, make: Callable[[Tx], R]) -> None:
        self.make = make
        self.name = make.__name__

    def __get__(self, tx: Tx, owner: type | None = None) -> R:
        repo = self.make(tx)
        tx.__dict__[self.name] = repo
        return repo


class Tx:
    """``tx.sessions``, ``tx.events`` … : one repository per aggregate, made when first used (a
    worker's POST touches two of them)."""

    def __init__(self, conn: Connection, is_sqlite: bool, *, writable: bool, turns: Turns | None = None) -> None:
        self.conn = conn
        self.is_sqlite = is_sqlite
        self.writable = writable
        self.after_commit_callbacks: list[Callable[[], object]] = []
        # What this transaction did to work items, for the dispatcher's after-commit step
        # (worker-token checks, closing a gone worker's sockets): ended item → (session, state,
        # close its streams), and the sessions that got a new item.
        self.ended_work: dict[str, tuple[str, str, bool]] = {}
        self.queued_work_for: set[str] = set()
        # SQLite write transactions run the event-append statements as plain pysqlite calls
        # (sqlite_fast.py); reads stay on SQLAlchemy (one snapshot from their first statement).
        self.raw: sqlite3.Connection | None = conn.driver if is_sqlite and writable else None
        # PostgreSQL write transactions lock the rows they read to decide (repositories/base.py)
        self.locks = writable and not is_sqlite
        # PostgreSQL write transactions: the sessions whose rows it was granted, in grant order
        # among this instance's writers (commit_order.py)
        self.turns = turns
        self._on_session_lock = turns.granted if turns is not None else None

    def after_commit(self, callback: Callable[[], object]) -> None:
        self.after_commit_callbacks.append(callback)

    async def serialize(self, what: str) -> None:
        """Make the rest of this transaction the only one doing ``what`` (e.g. creating the first
        signing key or the first owner) until it commits: on PostgreSQL a transaction-scoped advisory
        lock, so instances starting together on an empty database do it once. SQLite's writer is alone."""
        if self.locks:
            await self.conn.execute(_ADVISORY_LOCK, {"what": f"tether:{what}"})

    @_made_on_first_use
    def sessions(self) -> Sessions:
        return Sessions(self.conn, self.raw, self.locks, self._on_session_lock)

    @_made_on_first_use
    def events(self) -> Events:
        return Events(self.conn, self.raw, self.locks, self._on_session_lock)

    @_made_on_first_use
    def permissions(self) -> Permissions:
        return Permissions(self.conn, self.locks)

    @_made_on_first_use
    def work(self) -> WorkItems:
        return WorkItems(self.conn, self.locks, self._on_session_lock)

    @_made_on_first_use
    def environments(self) -> Environments:
        return Environments(self.conn)

    @_made_on_first_use
    def orgs(self) -> Orgs:
        return Orgs(self.conn)

    @_made_on_first_use
    def users(self) -> Users:
        return Users(self.conn)

    @_made_on_first_use
    def tokens(self) -> Tokens:
        return Tokens(self.conn, self.locks)

    @_made_on_first_use
    def keys(self) -> Keys:
        return Keys(self.conn)

    @_made_on_first_use
    def instances(self) -> Instances:
        return Instances(self.conn)

    @_made_on_first_use
    def internal_events(self) -> InternalEvents:
        return InternalEvents(self.conn, self.locks)

    @_made_on_first_use
    def files(self) -> Files:
        return Files(self.conn)

    @_made_on_first_use
    def audit(self) -> Audit:
        return Audit(self.conn, self.raw)
