"""A session's event log, and the v2 transcript. The append is the server's hottest statement
sequence: on a SQLite write transaction it runs as plain pysqlite (``sqlite_fast.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tether.protocol.ids import new_id
from tether.protocol.paging import fitting
from tether.server.store import postgres_fast, sqlite_fast
from tether.server.store import tables as t
from tether.server.store.records import DeliveryState, EventIn, InternalEvent, StoredEvent
from tether.server.store.repositories.base import Connection, Repository, byte_length

__all__ = ["Events", "InternalEvents"]

_EXISTING_UUIDS = sa.select(t.events.c.uuid).where(
    t.events.c.session_id == sa.bindparam("sid"), t.events.c.uuid.in_(sa.bindparam("uuids", expanding=True))
)
_INSERT = t.events.insert()
_ADVANCE_SEQ = (t.sessions.update().where(t.sessions.c.id == sa.bindparam("sid"))
                .values(last_seq=sa.bindparam("seq"), updated_at=sa.bindparam("now")))
_LOCK_SESSION = sa.select(t.sessions.c.id).where(t.sessions.c.id == sa.bindparam("sid")).with_for_update()
# a payload's size in bytes (length() of TEXT counts characters), for pages cut by bytes
_PAYLOAD_BYTES = byte_length(t.events.c.payload)
DELIVERY_ORDER = {"pending": 0, "received": 1, "processing": 2, "processed": 3}
e = t.events


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(session_id=row.session_id, seq=row.seq, event_id=row.event_id, uuid=row.uuid,
                       source=row.source, event_type=row.event_type, payload_json=row.payload,
                       created_at=row.created_at, delivery=row.delivery)


class Events(Repository):
    def __init__(self, conn: Connection, raw: sqlite3.Connection | None, locks: bool = False,
                 on_session_lock: Callable[[str], None] | None = None) -> None:
        super().__init__(conn, locks, on_session_lock)
        self.raw = raw

    # ---- the append -----------------------------------------------------------------------
    async def existing_uuids(self, session_id: str, uuids: Sequence[str]) -> set[str]:
        if not uuids:
            return set()
        if self.raw is not None:
            return sqlite_fast.existing_uuids(self.raw, session_id, uuids)
        found: set[str] = set()
        for start in range(0, len(uuids), 500):
            chunk = list(uuids[start : start + 500])
            result = await self.conn.execute(_EXISTING_UUIDS, {"sid": session_id, "uuids": chunk})
            found.update(r[0] for r in result.all())
        return found

    async def append(self, body: str, last_seq: int, items: Sequence[EventIn], now: float) -> list[StoredEvent]:
        """Append the events not yet in the log (by ``uuid``) after ``last_seq`` (read from the session
        row, locked, in this transaction) and advance the row's ``last_seq``; only the new ones."""
        if self.raw is not None and len(items) == 1:  # a streaming worker's usual write
            item = items[0]
            ev = StoredEvent(body, last_seq + 1, new_id("evt"), item.uuid, item.source, item.event_type,
                             item.payload_json, now, item.delivery)
            return [ev] if sqlite_fast.insert_event(self.raw, ev) else []
        if self.locks:
            driver = await self._driver_in_transaction()
            if driver is not None:
                return await self._append_postgres(driver, body, last_seq, items, now)
        seen = await self.existing_uuids(body, [i.uuid for i in items])
        seq = last_seq
        stored: list[StoredEvent] = []
        for item in items:
            if item.uuid in seen:
                continue
            seen.add(item.uuid)
            seq += 1
            stored.append(StoredEvent(body, seq, new_id("evt"), item.uuid, item.source, item.event_type,
                                      item.payload_json, now, item.delivery))
        if not stored:
            return stored
        if self.raw is not None:
            sqlite_fast.insert_events(self.raw, stored)
        else:
            await self.conn.execute(_INSERT, [{
                "session_id": body, "seq": ev.seq, "event_id": ev.event_id, "uuid": ev.uuid, "source": ev.source,
                "event_type": ev.event_type, "payload": ev.payload_json, "delivery": ev.delivery,
                "created_at": now} for ev in stored])
            await self.conn.execute(_ADVANCE_SEQ, {"sid": body, "seq": seq, "now": now})
        return stored

    async def _driver_in_transaction(self) -> Any:
        """The asyncpg connection under this PostgreSQL write transaction, once its BEGIN went out
        (the session row is locked first, so it has); None otherwise (the SQLAlchemy path then)."""
        raw = await self.conn.get_raw_connection()
        adapted = raw.dbapi_connection
        return raw.driver_connection if getattr(adapted, "_transaction", None) is not None else None

    async def _append_postgres(self, driver: Any, body: str, last_seq: int, items: Sequence[EventIn],
                               now: float) -> list[StoredEvent]:
        """One statement instead of three (``postgres_fast.py``)."""
        candidates: dict[str, StoredEvent] = {}
        for item in items:
            if item.uuid not in candidates:  # the first of a uuid repeated in the batch wins
                candidates[item.uuid] = StoredEvent(body, 0, new_id("evt"), item.uuid, item.source,
                                                    item.event_type, item.payload_json, now, item.delivery)
        evs = list(candidates.values())
        rows = await driver.fetch(postgres_fast.APPEND, *postgres_fast.append_args(body, last_seq, evs, now))
        return postgres_fast.stored_from(rows, evs)

    # ---- reads ----------------------------------------------------------------------------
    async def _page(self, where: Sequence[Any], *, ascending: bool, limit: int,
                    max_bytes: int | None) -> tuple[list[StoredEvent], bool]:
        """Up to ``limit`` events matching ``where`` in sequence order (from the newest backwards
        when not ``ascending``, returned oldest first), cut at ``max_bytes`` of payload (at least
        one event); and whether more match beyond the page. The sizes are read first, so no
        more payloads than the page holds ever leave the database."""
        order = e.c.seq.asc() if ascending else e.c.seq.desc()
        if max_bytes is None:
            rows = (await self.conn.execute(sa.select(e).where(*where).order_by(order).limit(limit + 1))).all()
            more = len(rows) > limit
            rows = rows[:limit]
        else:
            sized = sa.select(e.c.seq, _PAYLOAD_BYTES).where(*where).order_by(order).limit(limit + 1)
            sizes = [r[1] for r in (await self.conn.execute(sized)).all()]
            count = fitting(sizes[:limit], max_bytes)
            more = len(sizes) > count
            rows = (await self.conn.execute(sa.select(e).where(*where).order_by(order).limit(count))).all() \
                if count else []
        if not ascending:
            rows = list(reversed(rows))
        return [_stored(r) for r in rows], more

    async def after(self, session_id: str, after_seq: int, limit: int = 1000,
                    max_bytes: int | None = None) -> list[StoredEvent]:
        where = (e.c.session_id == session_id, e.c.seq > after_seq)
        return (await self._page(where, ascending=True, limit=limit, max_bytes=max_bytes))[0]

    async def page(self, session_id: str, *, limit: int, before_seq: int | None = None,
                   after_seq: int | None = None, max_bytes: int | None = None) -> tuple[list[StoredEvent], bool]:
        """A page after ``after_seq``, or else the latest page (before ``before_seq``), oldest
        first; and whether more events lie beyond it (after it / before it)."""
        where = [e.c.session_id == session_id]
        if after_seq is not None:
            where.append(e.c.seq > after_seq)
        elif before_seq is not None:
            where.append(e.c.seq < before_seq)
        return await self._page(where, ascending=after_seq is not None, limit=limit, max_bytes=max_bytes)

    async def by_id(self, session_id: str, event_id: str) -> StoredEvent | None:
        row = (await self.conn.execute(sa.select(e).where(e.c.session_id == session_id,
                                                          e.c.event_id == event_id))).first()
        return _stored(row) if row is not None else None

    async def undelivered_inbound(self, session_id: str, *, after_seq: int = 0, limit: int = 500,
                                  max_bytes: int | None = None) -> list[StoredEvent]:
        """Inbound events the worker has not confirmed, in sequence order, a page at a time."""
        where = (e.c.session_id == session_id, t.UNDELIVERED, e.c.seq > after_seq)  # the partial index's terms
        return (await self._page(where, ascending=True, limit=limit, max_bytes=max_bytes))[0]

    async def has_undelivered_inbound(self, session_id: str) -> bool:
        stmt = sa.select(e.c.seq).where(e.c.session_id == session_id, t.UNDELIVERED).limit(1)
        return (await self.conn.execute(stmt)).first() is not None

    async def undelivered_states(self, session_id: str, limit: int) -> list[DeliveryState]:
        """``uuid``, ``seq`` and ``delivery`` of unconfirmed inbound events (no payloads)."""
        return await self._all(DeliveryState, sa.select(e.c.uuid, e.c.seq, e.c.delivery).where(
            e.c.session_id == session_id, t.UNDELIVERED).order_by(e.c.seq).limit(limit))

    async def inbound_after(self, session_id: str, after_seq: int, limit: int = 500,
                            max_bytes: int | None = None) -> list[StoredEvent]:
        """Inbound events (processed or not) after ``after_seq``: a v2 worker resuming its stream."""
        where = (e.c.session_id == session_id, e.c.delivery.is_not(None), e.c.seq > after_seq)
        return (await self._page(where, ascending=True, limit=limit, max_bytes=max_bytes))[0]

    async def set_delivery(self, session_id: str, *, uuids: Sequence[str] = (), event_ids: Sequence[str] = (),
                           status: str) -> list[StoredEvent]:
        """Move inbound events forward to ``status`` (never backwards); return those that moved."""
        conds = []
        if uuids:
            conds.append(e.c.uuid.in_(list(uuids)))
        if event_ids:
            conds.append(e.c.event_id.in_(list(event_ids)))
        if not conds:
            return []
        if self.locks:
            return await self._move_delivery(session_id, conds, status)
        rows = (await self.conn.execute(sa.select(e).where(
            e.c.session_id == session_id, e.c.delivery.is_not(None), sa.or_(*conds)))).all()
        moved = [r for r in rows if DELIVERY_ORDER.get(r.delivery, 0) < DELIVERY_ORDER[status]]
        if moved:
            await self.conn.execute(e.update().where(e.c.pk.in_([r.pk for r in moved])).values(delivery=status))
        result = []
        for r in moved:
            ev = _stored(r)
            ev.delivery = status
            result.append(ev)
        return result

    async def _move_delivery(self, session_id: str, conds: list[Any], status: str) -> list[StoredEvent]:
        """PostgreSQL: under the session's lock (the one lock order: the batched delivery writer
        comes here without it, while a worker's append updates the same rows holding it), one
        conditional ``UPDATE … RETURNING``, which re-checks each row's state: a move is never
        backwards nor reported twice, whatever another instance moved meanwhile."""
        await self.conn.execute(_LOCK_SESSION, {"sid": session_id})
        self.session_locked(session_id)
        below = [state for state, rank in DELIVERY_ORDER.items() if rank < DELIVERY_ORDER[status]]
        stmt = (e.update().where(e.c.session_id == session_id, e.c.delivery.in_(below), sa.or_(*conds))
                .values(delivery=status).returning(*e.c))
        return sorted((_stored(r) for r in (await self.conn.execute(stmt)).all()), key=lambda ev: ev.seq)

    async def finish_started_prompts(self, session_id: str, before_seq: int) -> list[StoredEvent]:
        """A v1 turn ended (its ``result`` is stored at ``before_seq``): every prompt the worker
        started (``processing``) before it becomes ``processed``; return those that moved."""
        rows = (await self.conn.execute(sa.select(e).where(
            e.c.session_id == session_id, t.UNDELIVERED,  # the partial index's own terms
            e.c.seq < before_seq, e.c.delivery == "processing", e.c.event_type == "user"))).all()
        if rows:
            await self.conn.execute(e.update().where(e.c.pk.in_([r.pk for r in rows])).values(delivery="processed"))
        result = []
        for r in rows:
            ev = _stored(r)
            ev.delivery = "processed"
            result.append(ev)
        return result

    async def attaches_file(self, session_id: str, file_id: str) -> bool:
        """Whether a client's prompt in the session lists ``file_id`` in its ``file_attachments``
        (what lets the session's worker download it). Rare, so no index or table of its own: the
        session's client prompts that mention the id are read and checked."""
        stmt = sa.select(e.c.payload).where(e.c.session_id == session_id, e.c.source == "client",
                                            e.c.event_type == "user", e.c.payload.contains(file_id, autoescape=True))
        for (text,) in (await self.conn.execute(stmt)).all():
            try:
                payload = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            listed = payload.get("file_attachments") if isinstance(payload, dict) else None
            if isinstance(listed, list) and any(isinstance(a, dict) and a.get("file_uuid") == file_id
                                                for a in listed):
                return True
        return False


class InternalEvents(Repository):
    async def append(self, rows: Sequence[InternalEvent]) -> int:
        """Rows not yet in the transcript (by ``uuid`` per session); how many were new."""
        if not rows:
            return 0
        session_id = rows[0].session_id
        stmt = sa.select(t.internal_events.c.uuid).where(
            t.internal_events.c.session_id == session_id, t.internal_events.c.uuid.in_([r.uuid for r in rows]))
        seen = {r[0] for r in (await self.conn.execute(stmt)).all()}
        new_rows = []
        for r in rows:
            if r.uuid not in seen:
                seen.add(r.uuid)
                new_rows.append({"session_id": r.session_id, "event_id": r.event_id, "uuid": r.uuid,
                                 "event_type": r.event_type, "payload": r.payload, "is_compaction": r.is_compaction,
                                 "agent_id": r.agent_id, "created_at": r.created_at})
        if new_rows:
            # PostgreSQL: another instance's write may have logged the same uuid since the read
            # above (no session lock is taken for the transcript); that row stands, this one is
            # dropped rather than failing the whole batch on the unique constraint. SQLite has one writer.
            insert = (postgresql.insert(t.internal_events).on_conflict_do_nothing(
                constraint="uq_internal_events_session_uuid") if self.locks else t.internal_events.insert())
            await self.conn.execute(insert, new_rows)
        return len(new_rows)

    async def after(self, session_id: str, after_pk: int, limit: int, subagents: bool,
                    max_bytes: int) -> tuple[list[InternalEvent], bool]:
        """Up to ``limit`` rows after ``after_pk`` and no more than ``max_bytes`` of payload (at
        least one row); and whether more follow."""
        ie = t.internal_events
        where = [ie.c.session_id == session_id, ie.c.pk > after_pk]
        if not subagents:
            where.append(ie.c.agent_id.is_(None))
        size = byte_length(ie.c.payload)
        sizes = [r[1] for r in (await self.conn.execute(
            sa.select(ie.c.pk, size).where(*where).order_by(ie.c.pk).limit(limit + 1))).all()]
        count = fitting(sizes[:limit], max_bytes)
        rows = await self._all(InternalEvent, sa.select(ie).where(*where).order_by(ie.c.pk).limit(count)) \
            if count else []
        return rows, len(sizes) > count
