"""One transaction (see store.py): its connection, its repositories, and what runs after its commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import cached_property
from typing import Any

from tether.server.store.repositories.accounts import Keys, Orgs, Tokens, Users
from tether.server.store.repositories.environments import Environments
from tether.server.store.repositories.events import Events, InternalEvents
from tether.server.store.repositories.files import Audit, Files
from tether.server.store.repositories.permissions import Permissions
from tether.server.store.repositories.sessions import Sessions
from tether.server.store.repositories.work import WorkItems

__all__ = ["Tx"]

# an AsyncConnection (PostgreSQL) or a store.InlineConnection (SQLite): both await execute()
Connection = Any


class Tx:
    """``tx.sessions``, ``tx.events`` … : one repository per aggregate, made when first used (a
    worker's POST touches two of them)."""

    def __init__(self, conn: Connection, is_sqlite: bool, *, writable: bool) -> None:
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

    def after_commit(self, callback: Callable[[], object]) -> None:
        self.after_commit_callbacks.append(callback)

    @cached_property
    def sessions(self) -> Sessions:
        return Sessions(self.conn, self.raw, self.is_sqlite)

    @cached_property
    def events(self) -> Events:
        return Events(self.conn, self.raw)

    @cached_property
    def permissions(self) -> Permissions:
        return Permissions(self.conn)

    @cached_property
    def work(self) -> WorkItems:
        return WorkItems(self.conn)

    @cached_property
    def environments(self) -> Environments:
        return Environments(self.conn)

    @cached_property
    def orgs(self) -> Orgs:
        return Orgs(self.conn)

    @cached_property
    def users(self) -> Users:
        return Users(self.conn)

    @cached_property
    def tokens(self) -> Tokens:
        return Tokens(self.conn)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.conn)

    @cached_property
    def internal_events(self) -> InternalEvents:
        return InternalEvents(self.conn)

    @cached_property
    def files(self) -> Files:
        return Files(self.conn)

    @cached_property
    def audit(self) -> Audit:
        return Audit(self.conn)
