"""Sessions: the session row (its log is ``events.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from tether.protocol.ids import SessionId
from tether.server.store import sqlite_fast
from tether.server.store import tables as t
from tether.server.store.records import SessionRecord
from tether.server.store.repositories.base import Connection, Repository, row_of

__all__ = ["Sessions"]

_GET = sa.select(t.sessions).where(t.sessions.c.id == sa.bindparam("id"))
_GET_FOR_UPDATE = _GET.with_for_update()
# PostgreSQL: the session row locked, and the state of a worker token's work item of it (None: no
# such item of this session) in the same round trip (EventLog.append: the token check of a write)
_WORK_STATE = (sa.select(t.work_items.c.state)
               .where(t.work_items.c.id == sa.bindparam("work_id"), t.work_items.c.session_id == t.sessions.c.id)
               .scalar_subquery().label("work_state"))
_GET_WITH_WORK = (sa.select(t.sessions, _WORK_STATE).where(t.sessions.c.id == sa.bindparam("id"))
                  .with_for_update(of=t.sessions))
_LOCK = sa.select(t.sessions.c.id).where(t.sessions.c.id == sa.bindparam("id")).with_for_update()


class Sessions(Repository):
    def __init__(self, conn: Connection, raw: sqlite3.Connection | None, locks: bool,
                 on_session_lock: Callable[[str], None] | None = None) -> None:
        super().__init__(conn, locks, on_session_lock)
        self.raw = raw

    async def insert(self, session: SessionRecord) -> None:
        await self.conn.execute(t.sessions.insert(), row_of(session))

    async def get(self, body: str, *, for_update: bool = False) -> SessionRecord | None:
        """The session row. ``for_update`` says the caller writes what it decides from it; a
        PostgreSQL write transaction locks it either way (``last_seq``, the epoch, the status are
        read to be advanced), so a second writer of the session, on any instance, waits for this
        one's commit. SQLite's writer is alone anyway."""
        if self.raw is not None:
            return sqlite_fast.get_session(self.raw, body)
        if not self.locks:
            return await self._one(SessionRecord, _GET, {"id": body})
        session = await self._one(SessionRecord, _GET_FOR_UPDATE, {"id": body})
        if session is not None:
            self.session_locked(body)
        return session

    async def get_with_work(self, body: str, work_id: str) -> tuple[SessionRecord | None, str | None]:
        """PostgreSQL write transactions: the session row, locked, and the state of its work item
        ``work_id`` (None if the session has no such item). The state is read in the statement's
        snapshot, taken when it started (before any wait for the lock): as current as the separate
        read before the transaction that it replaces, one round trip and one checkout fewer."""
        assert self.locks, "PostgreSQL write transactions only"
        found = (await self.conn.execute(_GET_WITH_WORK, {"id": body, "work_id": work_id})).first()
        if found is None:
            return None, None
        self.session_locked(body)
        values = dict(found._mapping)
        state = values.pop("work_state")
        return SessionRecord(**values), state

    async def lock(self, body: str) -> None:
        """PostgreSQL write transactions: take the session row's lock (before a row of the session's)."""
        if self.locks:
            await self.conn.execute(_LOCK, {"id": body})
            self.session_locked(body)

    async def update(self, body: SessionId, **values: Any) -> None:
        await self._update(t.sessions, {"id": body}, values)

    async def of_org(self, org_id: str, *, limit: int, environment_id: str | None = None,
                     status: str | None = None) -> list[SessionRecord]:
        """Newest first."""
        stmt = sa.select(t.sessions).where(t.sessions.c.org_id == org_id)
        if environment_id is not None:
            stmt = stmt.where(t.sessions.c.environment_id == environment_id)
        if status is not None:
            stmt = stmt.where(t.sessions.c.status == status)
        return await self._all(SessionRecord, stmt.order_by(t.sessions.c.created_at.desc()).limit(limit))

    async def with_silent_workers(self, since: float, until: float) -> list[SessionRecord]:
        """Live sessions whose v2 worker was last heard of in [``since``, ``until``)."""
        s = t.sessions
        return await self._all(SessionRecord, sa.select(s).where(
            s.c.archived_at.is_(None), s.c.worker_status.in_(("idle", "running", "requires_action")),
            s.c.worker_last_seen >= since, s.c.worker_last_seen < until))

    async def connected_workers(self) -> list[tuple[SessionId, str | None]]:
        """Sessions whose v1 worker is marked connected, and the instance holding each (a partial
        index: usually few rows)."""
        s = t.sessions
        rows = await self.conn.execute(sa.select(s.c.id, s.c.worker_instance).where(s.c.worker_status == "connected"))
        return [(SessionId(r[0]), r[1]) for r in rows.all()]

    async def release_worker(self, body: str, owner: str | None) -> bool:
        """Mark the v1 worker disconnected if ``owner`` still holds it (not if it reconnected
        meanwhile, here or on another instance); whether it was."""
        s = t.sessions
        held = s.c.worker_instance.is_(None) if owner is None else s.c.worker_instance == owner
        result = await self.conn.execute(s.update().where(s.c.id == body, s.c.worker_status == "connected", held)
                                         .values(worker_status="disconnected", worker_instance=None))
        return bool(result.rowcount)

    async def to_succeed(self, org_id: str, machine_name: str, directory: str,
                         reasons: Sequence[str]) -> SessionId | None:
        """The latest archived session of this machine and directory that ended for one of
        ``reasons`` and has no successor yet."""
        s, e = t.sessions, t.environments
        found = (await self.conn.execute(
            sa.select(s.c.id).join(e, e.c.id == s.c.environment_id)
            .where(s.c.org_id == org_id, e.c.machine_name == machine_name, e.c.directory == directory,
                   s.c.archived_at.is_not(None), s.c.successor_id.is_(None), s.c.archive_reason.in_(reasons))
            .order_by(s.c.archived_at.desc()).limit(1)
        )).first()
        return None if found is None else SessionId(str(found[0]))
