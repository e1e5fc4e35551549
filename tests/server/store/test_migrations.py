"""Schema migrations: a new database gets the newest schema; the undelivered-inbound query
is served by its partial index (which worker events never touch)."""

from __future__ import annotations

import pathlib
import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from tether.protocol.ids import SessionId
from tether.server.store import tables as t
from tether.server.store.store import Store, sqlite_url

pytestmark = pytest.mark.anyio


async def migrated(path: pathlib.Path) -> None:
    store = Store(sqlite_url(path))
    await store.open()
    await store.open()  # idempotent
    await store.close()


async def test_the_undelivered_query_uses_the_partial_index(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    await migrated(path)
    stmt = sa.select(t.events).where(t.events.c.session_id == "s", t.UNDELIVERED).order_by(t.events.c.seq)
    sql = str(stmt.compile(dialect=sqlite.dialect()))
    conn = sqlite3.connect(path)
    try:
        indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'events' "
                                    "AND type = 'index'").fetchall())
        assert "ix_events_pending" not in indexes
        assert "WHERE delivery IS NOT NULL AND delivery != 'processed'" in indexes["ix_events_undelivered"]
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ("s",)))
        assert "USING INDEX ix_events_undelivered" in plan, plan
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        assert version == "0004"
    finally:
        conn.close()


async def test_worker_events_stay_out_of_the_partial_index(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    await migrated(path)
    conn = sqlite3.connect(path)
    try:
        rows = [("s", n, f"evt_{n}", f"u{n}", "worker" if n % 3 else "client", "user", "{}",
                 None if n % 3 else ("processed" if n % 2 else "pending"), 1.0) for n in range(1, 31)]
        conn.executemany("INSERT INTO events (session_id, seq, event_id, uuid, source, event_type, payload, "
                         "delivery, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        indexed = conn.execute("SELECT count(*) FROM events INDEXED BY ix_events_undelivered "
                               "WHERE session_id = 's' AND delivery IS NOT NULL AND delivery != 'processed'")
        assert indexed.fetchone()[0] == len([r for r in rows if r[7] == "pending"]) == 5
    finally:
        conn.close()


async def test_a_0001_database_with_events_upgrades_in_place(tmp_path: pathlib.Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from tether.server.store.store import MIGRATIONS

    path = tmp_path / "db.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql("INSERT INTO events (session_id, seq, event_id, uuid, source, event_type, payload, "
                             "delivery, created_at) VALUES ('s', 1, 'evt_1', 'u1', 'client', 'user', '{}', "
                             "'pending', 1.0), ('s', 2, 'evt_2', 'u2', 'worker', 'assistant', '{}', NULL, 2.0)")
    engine.dispose()
    store = Store(sqlite_url(path))
    await store.open()
    try:
        async with store.read() as tx:
            assert [ev.uuid for ev in await tx.events.undelivered_inbound("s")] == ["u1"]
            assert [ev.seq for ev in await tx.events.after("s", 0)] == [1, 2]
    finally:
        await store.close()


async def test_a_0002_database_with_a_session_gains_archive_reason_and_successor(tmp_path: pathlib.Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from tether.server.store.store import MIGRATIONS

    path = tmp_path / "db.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.exec_driver_sql("INSERT INTO orgs (id, name, allow_remote_control, created_at) VALUES ('o', 'o', 1, 1)")
        conn.exec_driver_sql("INSERT INTO sessions (id, org_id, kind, title, title_explicit, status, worker_epoch, "
                             "last_seq, created_at, updated_at, archived_at) VALUES ('s1', 'o', 'env', 'old', 0, "
                             "'archived', 0, 0, 1.0, 2.0, 2.0)")
    engine.dispose()
    store = Store(sqlite_url(path))
    await store.open()
    try:
        async with store.read() as tx:
            row = await tx.sessions.get("s1")
        assert row is not None and row.title == "old" and row.archived_at == 2.0
        assert row.archive_reason is None and row.successor_id is None
        async with store.write() as tx:
            await tx.sessions.update(SessionId("s1"), archive_reason="replaced", successor_id="s2")
        async with store.read() as tx:
            row = await tx.sessions.get("s1")
        assert row is not None and (row.archive_reason, row.successor_id) == ("replaced", "s2")
    finally:
        await store.close()


async def test_a_0003_database_gains_instances_and_its_connected_workers_are_of_no_instance(
        tmp_path: pathlib.Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from tether.server.store.store import MIGRATIONS

    path = tmp_path / "db.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.exec_driver_sql("INSERT INTO orgs (id, name, allow_remote_control, created_at) VALUES ('o', 'o', 1, 1)")
        conn.exec_driver_sql("INSERT INTO sessions (id, org_id, kind, title, title_explicit, status, worker_epoch, "
                             "worker_status, last_seq, created_at, updated_at) VALUES ('s1', 'o', 'env', 't', 0, "
                             "'idle', 0, 'connected', 0, 1.0, 2.0)")
    engine.dispose()
    store = Store(sqlite_url(path))
    await store.open()
    try:
        async with store.write() as tx:
            assert await tx.sessions.connected_workers() == [("s1", None)]  # held by no known instance
            assert await tx.instances.beat("inst_a", 10.0, starting=True) is None
            assert await tx.instances.alive(0.0) == {"inst_a"}
            assert await tx.sessions.release_worker("s1", None)
        async with store.read() as tx:
            row = await tx.sessions.get("s1")
            plan = " ".join(r[3] for r in (await tx.conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id, worker_instance FROM sessions WHERE worker_status = 'connected'"
            )).all())
        assert row is not None and (row.worker_status, row.worker_instance) == ("disconnected", None)
        assert "ix_sessions_connected_workers" in plan, plan
    finally:
        await store.close()
