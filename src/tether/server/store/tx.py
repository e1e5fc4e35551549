"""Repository methods bound to one connection/transaction (see store.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from tether.protocol.ids import new_id
from tether.protocol.paging import fitting
from tether.server.store import sqlite_fast
from tether.server.store import tables as t
from tether.server.store.records import EventIn, StoredEvent

Row = dict[str, Any]
# an AsyncConnection (PostgreSQL) or a store.InlineConnection (SQLite): both await execute()
Connection = Any
LIVE_WORK_STATES = ("queued", "delivered", "acked")

# Hot statements are built once: constructing a Core expression and its cache key costs more
# than running it on SQLite (see store.py).
_GET_ORG = sa.select(t.orgs).where(t.orgs.c.id == sa.bindparam("id"))
_GET_USER = sa.select(t.users).where(t.users.c.id == sa.bindparam("id"))
_TOKEN_BY_HASH = sa.select(t.tokens).where(t.tokens.c.secret_hash == sa.bindparam("h"))
_GET_SESSION = sa.select(t.sessions).where(t.sessions.c.id == sa.bindparam("id"))
_GET_SESSION_FOR_UPDATE = _GET_SESSION.with_for_update()
_EXISTING_UUIDS = sa.select(t.events.c.uuid).where(
    t.events.c.session_id == sa.bindparam("sid"), t.events.c.uuid.in_(sa.bindparam("uuids", expanding=True))
)
_INSERT_EVENTS = t.events.insert()
_ADVANCE_SEQ = (
    t.sessions.update().where(t.sessions.c.id == sa.bindparam("sid"))
    .values(last_seq=sa.bindparam("seq"), updated_at=sa.bindparam("now"))
)


# a payload's size in bytes (length() of TEXT counts characters), for pages cut by bytes
_PAYLOAD_BYTES = sa.func.length(sa.cast(t.events.c.payload, sa.LargeBinary))
_INSERT_AUDIT = t.audit.insert()
_UPDATES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], sa.Update] = {}


def _update_statement(table: sa.Table, keys: tuple[str, ...], names: tuple[str, ...]) -> sa.Update:
    """``UPDATE table SET names… WHERE keys…`` with bind parameters, built once per shape:
    a Core statement built per call (and its cache key over literal values) cost more than
    SQLite running it — 65 % of a client's prompt POST went to one audit insert."""
    cache_key = (table.name, keys, names)
    stmt = _UPDATES.get(cache_key)
    if stmt is None:
        if len(_UPDATES) > 512:  # shapes come from code, so this never fills; bounded anyway
            _UPDATES.clear()
        stmt = table.update().where(*(table.c[k] == sa.bindparam(f"k_{k}") for k in keys)).values(
            {name: sa.bindparam(f"v_{name}") for name in names})
        _UPDATES[cache_key] = stmt
    return stmt


def _row(result_row: Any) -> Row | None:
    return dict(result_row._mapping) if result_row is not None else None


class Tx:
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

    async def _update(self, table: sa.Table, where: dict[str, Any], values: dict[str, Any]) -> None:
        if not values:
            return
        names = tuple(sorted(values))
        params = {f"k_{k}": v for k, v in where.items()} | {f"v_{n}": values[n] for n in names}
        await self.conn.execute(_update_statement(table, tuple(where), names), params)

    async def _one(self, stmt: sa.Executable) -> Row | None:
        return _row((await self.conn.execute(stmt)).first())

    async def _all(self, stmt: sa.Executable) -> list[Row]:
        return [dict(r._mapping) for r in (await self.conn.execute(stmt)).all()]

    # ---- orgs and users -------------------------------------------------------------------
    async def get_org(self, org_id: str) -> Row | None:
        return _row((await self.conn.execute(_GET_ORG, {"id": org_id})).first())

    async def get_org_by_name(self, name: str) -> Row | None:
        return await self._one(sa.select(t.orgs).where(t.orgs.c.name == name))

    async def first_org(self) -> Row | None:
        return await self._one(sa.select(t.orgs).order_by(t.orgs.c.created_at).limit(1))

    async def insert_org(self, name: str, now: float) -> Row:
        row = {"id": new_id("org"), "name": name, "allow_remote_control": True, "created_at": now}
        await self.conn.execute(t.orgs.insert(), row)
        return row

    async def set_org_policy(self, org_id: str, allow_remote_control: bool) -> None:
        await self.conn.execute(
            t.orgs.update().where(t.orgs.c.id == org_id).values(allow_remote_control=allow_remote_control)
        )

    async def get_user(self, user_id: str) -> Row | None:
        return _row((await self.conn.execute(_GET_USER, {"id": user_id})).first())

    async def get_user_by_email(self, email: str) -> Row | None:
        return await self._one(sa.select(t.users).where(t.users.c.email == email))

    async def list_users(self, org_id: str) -> list[Row]:
        return await self._all(sa.select(t.users).where(t.users.c.org_id == org_id).order_by(t.users.c.created_at))

    async def insert_user(self, org_id: str, email: str, role: str, now: float) -> Row:
        row = {"id": new_id("user"), "org_id": org_id, "email": email, "role": role,
               "password_hash": None, "created_at": now}
        await self.conn.execute(t.users.insert(), row)
        return row

    async def update_user(self, user_id: str, **values: Any) -> None:
        await self._update(t.users, {"id": user_id}, values)

    # ---- tokens and keys ------------------------------------------------------------------
    async def insert_token(self, **row: Any) -> Row:
        row.setdefault("id", new_id("tok"))
        row.setdefault("revoked", False)
        await self.conn.execute(t.tokens.insert(), row)
        return row

    async def token_by_hash(self, secret_hash: str) -> Row | None:
        return _row((await self.conn.execute(_TOKEN_BY_HASH, {"h": secret_hash})).first())

    async def token_by_lookup(self, kind: str, lookup: str) -> Row | None:
        return await self._one(
            sa.select(t.tokens).where(t.tokens.c.kind == kind, t.tokens.c.lookup == lookup)
        )

    async def get_token(self, token_id: str) -> Row | None:
        return await self._one(sa.select(t.tokens).where(t.tokens.c.id == token_id))

    async def update_token(self, token_id: str, **values: Any) -> None:
        await self._update(t.tokens, {"id": token_id}, values)

    async def revoke_token_family(self, family: str) -> list[str]:
        """Revoke every access and refresh token of a login; their ids."""
        rows = await self._all(sa.select(t.tokens.c.id, t.tokens.c.extra).where(t.tokens.c.kind.in_(("access", "refresh"))))
        ids = [r["id"] for r in rows if (r["extra"] or {}).get("family") == family]
        if ids:
            await self.conn.execute(t.tokens.update().where(t.tokens.c.id.in_(ids)).values(revoked=True))
        return ids

    async def list_tokens(self, user_id: str, kind: str) -> list[Row]:
        return await self._all(
            sa.select(t.tokens).where(t.tokens.c.user_id == user_id, t.tokens.c.kind == kind)
            .order_by(t.tokens.c.created_at)
        )

    async def signing_keys(self) -> list[Row]:
        return await self._all(sa.select(t.signing_keys).order_by(t.signing_keys.c.created_at))

    async def insert_signing_key(self, kid: str, secret: str, now: float) -> None:
        await self.conn.execute(t.signing_keys.update().values(active=False))
        await self.conn.execute(
            t.signing_keys.insert().values(kid=kid, secret=secret, active=True, created_at=now)
        )

    # ---- environments ---------------------------------------------------------------------
    async def insert_environment(self, **row: Any) -> Row:
        await self.conn.execute(t.environments.insert(), row)
        return row

    async def get_environment(self, env_id: str) -> Row | None:
        return await self._one(sa.select(t.environments).where(t.environments.c.id == env_id))

    async def environment_by_secret(self, secret_hash: str) -> Row | None:
        return await self._one(sa.select(t.environments).where(t.environments.c.secret_hash == secret_hash))

    async def update_environment(self, env_id: str, **values: Any) -> None:
        await self._update(t.environments, {"id": env_id}, values)

    async def list_environments(self, org_id: str) -> list[Row]:
        return await self._all(
            sa.select(t.environments).where(t.environments.c.org_id == org_id)
            .order_by(t.environments.c.created_at)
        )

    async def session_to_succeed(self, org_id: str, machine_name: str, directory: str,
                                 reasons: Sequence[str]) -> str | None:
        """The latest archived session of this machine and directory that ended for one of
        ``reasons`` and has no successor yet."""
        s, e = t.sessions, t.environments
        found = (await self.conn.execute(
            sa.select(s.c.id).join(e, e.c.id == s.c.environment_id)
            .where(s.c.org_id == org_id, e.c.machine_name == machine_name, e.c.directory == directory,
                   s.c.archived_at.is_not(None), s.c.successor_id.is_(None), s.c.archive_reason.in_(reasons))
            .order_by(s.c.archived_at.desc()).limit(1)
        )).first()
        return None if found is None else str(found[0])

    async def active_environments(self) -> list[Row]:
        """Registered environments of every organisation (``tether server status`` / ``stop``)."""
        return await self._all(sa.select(t.environments).where(t.environments.c.state == "active"))

    async def active_session_counts(self, env_ids: Sequence[str]) -> dict[str, int]:
        if not env_ids:
            return {}
        stmt = (
            sa.select(t.work_items.c.environment_id, sa.func.count())
            .where(t.work_items.c.environment_id.in_(env_ids), t.work_items.c.state.in_(("delivered", "acked")))
            .group_by(t.work_items.c.environment_id)
        )
        return {r[0]: int(r[1]) for r in (await self.conn.execute(stmt)).all()}

    # ---- sessions -------------------------------------------------------------------------
    async def insert_session(self, **row: Any) -> Row:
        await self.conn.execute(t.sessions.insert(), row)
        return row

    async def get_session(self, body: str, *, for_update: bool = False) -> Row | None:
        if self.raw is not None:
            return sqlite_fast.get_session(self.raw, body)
        stmt = _GET_SESSION_FOR_UPDATE if for_update and not self.is_sqlite else _GET_SESSION
        return _row((await self.conn.execute(stmt, {"id": body})).first())

    async def update_session(self, body: str, **values: Any) -> None:
        await self._update(t.sessions, {"id": body}, values)

    async def list_sessions(
        self, org_id: str, *, limit: int, before: float | None = None, environment_id: str | None = None,
        status: str | None = None,
    ) -> list[Row]:
        stmt = sa.select(t.sessions).where(t.sessions.c.org_id == org_id)
        if before is not None:
            stmt = stmt.where(t.sessions.c.created_at < before)
        if environment_id is not None:
            stmt = stmt.where(t.sessions.c.environment_id == environment_id)
        if status is not None:
            stmt = stmt.where(t.sessions.c.status == status)
        return await self._all(stmt.order_by(t.sessions.c.created_at.desc()).limit(limit))

    async def disconnect_all_workers(self) -> None:
        await self.conn.execute(
            t.sessions.update().where(t.sessions.c.worker_status == "connected").values(worker_status="disconnected")
        )

    async def sessions_of_environment(self, env_id: str) -> list[Row]:
        return await self._all(sa.select(t.sessions).where(t.sessions.c.environment_id == env_id))

    # ---- work items -----------------------------------------------------------------------
    async def live_work_for_session(self, session_id: str) -> Row | None:
        return await self._one(
            sa.select(t.work_items).where(
                t.work_items.c.session_id == session_id, t.work_items.c.state.in_(LIVE_WORK_STATES)
            ).order_by(t.work_items.c.created_at.desc()).limit(1)
        )

    async def supersede_work(self, session_id: str) -> list[str]:
        rows = await self._all(
            sa.select(t.work_items.c.id).where(
                t.work_items.c.session_id == session_id, t.work_items.c.state.in_(LIVE_WORK_STATES)
            )
        )
        ids = [r["id"] for r in rows]
        if ids:
            await self.conn.execute(
                t.work_items.update().where(t.work_items.c.id.in_(ids)).values(state="superseded")
            )
        return ids

    async def insert_work(self, **row: Any) -> Row:
        await self.conn.execute(t.work_items.insert(), row)
        return row

    async def get_work(self, work_id: str) -> Row | None:
        return await self._one(sa.select(t.work_items).where(t.work_items.c.id == work_id))

    async def update_work(self, work_id: str, **values: Any) -> None:
        await self._update(t.work_items, {"id": work_id}, values)

    async def next_work(self, env_id: str, now: float, reclaim_before: float) -> Row | None:
        """The oldest queued item, or a delivered one never acked since ``reclaim_before``."""
        stmt = (
            sa.select(t.work_items)
            .where(
                t.work_items.c.environment_id == env_id,
                sa.or_(
                    t.work_items.c.state == "queued",
                    sa.and_(t.work_items.c.state == "delivered", t.work_items.c.delivered_at < reclaim_before),
                ),
            )
            .order_by(t.work_items.c.created_at)
            .limit(1)
        )
        return await self._one(stmt)

    async def work_of_environment(self, env_id: str, states: Iterable[str]) -> list[Row]:
        return await self._all(
            sa.select(t.work_items).where(
                t.work_items.c.environment_id == env_id, t.work_items.c.state.in_(tuple(states))
            )
        )

    async def lapsed_work(self, now: float) -> list[Row]:
        return await self._all(
            sa.select(t.work_items).where(
                t.work_items.c.state.in_(("delivered", "acked")),
                t.work_items.c.lease_expires_at.is_not(None),
                t.work_items.c.lease_expires_at < now,
            )
        )

    # ---- the event log --------------------------------------------------------------------
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

    async def append_events(
        self, session: Row, items: Sequence[EventIn], now: float
    ) -> list[StoredEvent]:
        """Append events that are not yet in the log (by ``uuid``); return only the new ones.

        ``session`` must come from ``get_session(..., for_update=True)`` in this transaction;
        its ``last_seq`` is advanced in place.
        """
        body = session["id"]
        if self.raw is not None and len(items) == 1:  # a streaming worker's usual write
            return self._append_one(session, items[0], now)
        seen = await self.existing_uuids(body, [i.uuid for i in items])
        seq = int(session["last_seq"])
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
            await self.conn.execute(_INSERT_EVENTS, [{
                "session_id": body, "seq": ev.seq, "event_id": ev.event_id, "uuid": ev.uuid, "source": ev.source,
                "event_type": ev.event_type, "payload": ev.payload_json, "delivery": ev.delivery,
                "created_at": now} for ev in stored])
            await self.conn.execute(_ADVANCE_SEQ, {"sid": body, "seq": seq, "now": now})
        session["last_seq"] = seq
        return stored

    def _append_one(self, session: Row, item: EventIn, now: float) -> list[StoredEvent]:
        assert self.raw is not None
        body, seq = session["id"], int(session["last_seq"]) + 1
        ev = StoredEvent(body, seq, new_id("evt"), item.uuid, item.source, item.event_type, item.payload_json,
                         now, item.delivery)
        if not sqlite_fast.insert_event(self.raw, ev):
            return []
        session["last_seq"] = seq
        return [ev]

    async def _events(self, where: Sequence[Any], *, ascending: bool, limit: int,
                      max_bytes: int | None) -> tuple[list[StoredEvent], bool]:
        """Up to ``limit`` events matching ``where`` in sequence order (from the newest backwards
        when not ``ascending``, returned oldest first), cut at ``max_bytes`` of payload (at least
        one event); and whether more match beyond the page. The sizes are read first, so no
        more payloads than the page holds ever leave the database."""
        order = t.events.c.seq.asc() if ascending else t.events.c.seq.desc()
        if max_bytes is None:
            rows = await self._all(sa.select(t.events).where(*where).order_by(order).limit(limit + 1))
            more = len(rows) > limit
            rows = rows[:limit]
        else:
            sized = sa.select(t.events.c.seq, _PAYLOAD_BYTES).where(*where).order_by(order).limit(limit + 1)
            sizes = [r[1] for r in (await self.conn.execute(sized)).all()]
            count = fitting(sizes[:limit], max_bytes)
            more = len(sizes) > count
            rows = await self._all(sa.select(t.events).where(*where).order_by(order).limit(count)) if count else []
        if not ascending:
            rows.reverse()
        return [_stored(r) for r in rows], more

    async def events_after(self, session_id: str, after_seq: int, limit: int = 1000,
                           max_bytes: int | None = None) -> list[StoredEvent]:
        where = (t.events.c.session_id == session_id, t.events.c.seq > after_seq)
        return (await self._events(where, ascending=True, limit=limit, max_bytes=max_bytes))[0]

    async def events_page(
        self, session_id: str, *, limit: int, before_seq: int | None = None, after_seq: int | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[StoredEvent], bool]:
        """A page after ``after_seq``, or else the latest page (before ``before_seq``), oldest
        first; and whether more events lie beyond it (after it / before it)."""
        where = [t.events.c.session_id == session_id]
        if after_seq is not None:
            where.append(t.events.c.seq > after_seq)
        elif before_seq is not None:
            where.append(t.events.c.seq < before_seq)
        return await self._events(where, ascending=after_seq is not None, limit=limit, max_bytes=max_bytes)

    async def event_by_id(self, session_id: str, event_id: str) -> StoredEvent | None:
        row = await self._one(
            sa.select(t.events).where(t.events.c.session_id == session_id, t.events.c.event_id == event_id)
        )
        return _stored(row) if row else None

    async def undelivered_inbound(self, session_id: str, *, after_seq: int = 0, limit: int = 500,
                                  max_bytes: int | None = None) -> list[StoredEvent]:
        """Inbound events the worker has not confirmed, in sequence order, a page at a time."""
        where = (t.events.c.session_id == session_id, t.UNDELIVERED,  # the partial index's own terms
                 t.events.c.seq > after_seq)
        return (await self._events(where, ascending=True, limit=limit, max_bytes=max_bytes))[0]

    async def has_undelivered_inbound(self, session_id: str) -> bool:
        stmt = sa.select(t.events.c.seq).where(t.events.c.session_id == session_id, t.UNDELIVERED).limit(1)
        return (await self.conn.execute(stmt)).first() is not None

    async def undelivered_states(self, session_id: str, limit: int) -> list[Row]:
        """``uuid``, ``seq`` and ``delivery`` of unconfirmed inbound events (no payloads)."""
        stmt = (sa.select(t.events.c.uuid, t.events.c.seq, t.events.c.delivery)
                .where(t.events.c.session_id == session_id, t.UNDELIVERED).order_by(t.events.c.seq).limit(limit))
        return await self._all(stmt)

    async def inbound_after(self, session_id: str, after_seq: int, limit: int = 500,
                            max_bytes: int | None = None) -> list[StoredEvent]:
        """Inbound events (processed or not) after ``after_seq``: a v2 worker resuming its stream."""
        where = (t.events.c.session_id == session_id, t.events.c.delivery.is_not(None), t.events.c.seq > after_seq)
        return (await self._events(where, ascending=True, limit=limit, max_bytes=max_bytes))[0]

    async def set_delivery(self, session_id: str, *, uuids: Sequence[str] = (), event_ids: Sequence[str] = (),
                           status: str) -> list[StoredEvent]:
        """Move inbound events forward to ``status`` (never backwards); return those that moved."""
        order = {"pending": 0, "received": 1, "processing": 2, "processed": 3}
        conds = []
        if uuids:
            conds.append(t.events.c.uuid.in_(list(uuids)))
        if event_ids:
            conds.append(t.events.c.event_id.in_(list(event_ids)))
        if not conds:
            return []
        rows = await self._all(
            sa.select(t.events).where(
                t.events.c.session_id == session_id, t.events.c.delivery.is_not(None), sa.or_(*conds)
            )
        )
        moved = [r for r in rows if order.get(r["delivery"], 0) < order[status]]
        if moved:
            await self.conn.execute(
                t.events.update().where(t.events.c.pk.in_([r["pk"] for r in moved])).values(delivery=status)
            )
        result = []
        for r in moved:
            r["delivery"] = status
            result.append(_stored(r))
        return result

    async def finish_started_prompts(self, session_id: str, before_seq: int) -> list[StoredEvent]:
        """A v1 turn ended (its ``result`` is stored at ``before_seq``): every prompt the worker
        started (``processing``) before it becomes ``processed``; return those that moved."""
        rows = await self._all(sa.select(t.events).where(
            t.events.c.session_id == session_id, t.UNDELIVERED,  # the partial index's own terms
            t.events.c.seq < before_seq, t.events.c.delivery == "processing", t.events.c.event_type == "user"))
        if rows:
            await self.conn.execute(
                t.events.update().where(t.events.c.pk.in_([r["pk"] for r in rows])).values(delivery="processed"))
        for r in rows:
            r["delivery"] = "processed"
        return [_stored(r) for r in rows]

    # ---- permission requests --------------------------------------------------------------
    async def insert_permission(self, **row: Any) -> None:
        existing = await self.get_permission(row["session_id"], row["request_id"])
        if existing is None:
            await self.conn.execute(t.permission_requests.insert(), row)

    async def get_permission(self, session_id: str, request_id: str) -> Row | None:
        return await self._one(
            sa.select(t.permission_requests).where(
                t.permission_requests.c.session_id == session_id,
                t.permission_requests.c.request_id == request_id,
            )
        )

    async def update_permission(self, session_id: str, request_id: str, **values: Any) -> None:
        await self._update(t.permission_requests, {"session_id": session_id, "request_id": request_id}, values)

    async def list_permissions(self, session_id: str, status: str | None = None) -> list[Row]:
        stmt = sa.select(t.permission_requests).where(t.permission_requests.c.session_id == session_id)
        if status is not None:
            stmt = stmt.where(t.permission_requests.c.status == status)
        return await self._all(stmt.order_by(t.permission_requests.c.pk))

    async def expire_pending_permissions(self, session_id: str, now: float) -> list[Row]:
        rows = await self.list_permissions(session_id, "pending")
        if rows:
            await self.conn.execute(
                t.permission_requests.update().where(
                    t.permission_requests.c.session_id == session_id,
                    t.permission_requests.c.status == "pending",
                ).values(status="expired", answered_at=now, answered_by="server")
            )
        return rows

    # ---- internal events (v2) -------------------------------------------------------------
    async def append_internal_events(self, session_id: str, rows: Sequence[Row]) -> int:
        seen = set()
        uuids = [r["uuid"] for r in rows]
        if uuids:
            stmt = sa.select(t.internal_events.c.uuid).where(
                t.internal_events.c.session_id == session_id, t.internal_events.c.uuid.in_(uuids)
            )
            seen = {r[0] for r in (await self.conn.execute(stmt)).all()}
        new_rows = []
        for r in rows:
            if r["uuid"] not in seen:
                seen.add(r["uuid"])
                new_rows.append(r)
        if new_rows:
            await self.conn.execute(t.internal_events.insert(), new_rows)
        return len(new_rows)

    async def internal_events_after(self, session_id: str, after_pk: int, limit: int,
                                    subagents: bool, max_bytes: int) -> tuple[list[Row], bool]:
        """Up to ``limit`` rows after ``after_pk`` and no more than ``max_bytes`` of payload (at
        least one row); and whether more follow."""
        where = [t.internal_events.c.session_id == session_id, t.internal_events.c.pk > after_pk]
        if not subagents:
            where.append(t.internal_events.c.agent_id.is_(None))
        order = t.internal_events.c.pk
        size = sa.func.length(sa.cast(t.internal_events.c.payload, sa.LargeBinary))
        sizes = [r[1] for r in (await self.conn.execute(
            sa.select(t.internal_events.c.pk, size).where(*where).order_by(order).limit(limit + 1))).all()]
        count = fitting(sizes[:limit], max_bytes)
        rows = await self._all(sa.select(t.internal_events).where(*where).order_by(order).limit(count)) if count else []
        return rows, len(sizes) > count

    # ---- files and audit ------------------------------------------------------------------
    async def insert_file(self, **row: Any) -> None:
        await self.conn.execute(t.files.insert(), row)

    async def get_file(self, file_id: str) -> Row | None:
        return await self._one(sa.select(t.files).where(t.files.c.id == file_id))

    async def session_attaches_file(self, session_id: str, file_id: str) -> bool:
        """Whether a client's prompt in the session lists ``file_id`` in its ``file_attachments``
        (what lets the session's worker download it). Rare, so no index or table of its own: the
        session's client prompts that mention the id are read and checked."""
        stmt = sa.select(t.events.c.payload).where(
            t.events.c.session_id == session_id, t.events.c.source == "client", t.events.c.event_type == "user",
            t.events.c.payload.contains(file_id, autoescape=True))
        for row in await self._all(stmt):
            try:
                payload = orjson.loads(row["payload"])
            except orjson.JSONDecodeError:
                continue
            listed = payload.get("file_attachments") if isinstance(payload, dict) else None
            if isinstance(listed, list) and any(isinstance(a, dict) and a.get("file_uuid") == file_id
                                                for a in listed):
                return True
        return False

    async def insert_audit(self, org_id: str, actor: str, action: str, target: str | None,
                           detail: dict[str, Any] | None, now: float) -> None:
        await self.conn.execute(_INSERT_AUDIT, {"org_id": org_id, "actor": actor, "action": action,
                                                "target": target, "detail": detail, "at": now})

    async def list_audit(self, org_id: str, limit: int, before_pk: int | None) -> list[Row]:
        stmt = sa.select(t.audit).where(t.audit.c.org_id == org_id)
        if before_pk is not None:
            stmt = stmt.where(t.audit.c.pk < before_pk)
        return await self._all(stmt.order_by(t.audit.c.pk.desc()).limit(limit))


def _stored(row: Row) -> StoredEvent:
    return StoredEvent(
        session_id=row["session_id"], seq=row["seq"], event_id=row["event_id"], uuid=row["uuid"],
        source=row["source"], event_type=row["event_type"], payload_json=row["payload"],
        created_at=row["created_at"], delivery=row["delivery"],
    )
