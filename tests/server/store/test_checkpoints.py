"""Background WAL checkpoints (store.py): the server's connections never checkpoint inside a
commit; the checkpointer copies the log into the database file once writes pause, from a
thread of its own; a store without it keeps SQLite's own autocheckpoint."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3

import pytest
import sqlalchemy as sa
from tests.support.waiting import eventually

from tether.server.store.store import CheckpointSchedule, Store, sqlite_url

pytestmark = pytest.mark.anyio


def orgs_in_database_file(path: pathlib.Path) -> int:
    """Rows of ``orgs`` in the main database file alone (the WAL ignored; 0 while even the
    schema is only in the WAL)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM orgs").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


async def autocheckpoint_of(store: Store) -> int:
    async with store.write() as tx:
        assert tx.raw is not None
        return int(tx.raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


async def test_writes_reach_the_database_file_when_they_pause(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    store = Store(sqlite_url(path), background_checkpoints=True)
    await store.open()
    try:
        assert await autocheckpoint_of(store) == 0, "no checkpoint inside a commit on the loop"
        before = orgs_in_database_file(path)
        for i in range(20):
            async with store.write() as tx:
                await tx.orgs.insert(f"org-{i}", float(i))
        assert orgs_in_database_file(path) == before, "committed rows wait in the WAL"
        checkpointer = asyncio.create_task(store.run_checkpointer(tick_s=0.02, max_interval_s=60))
        try:
            await eventually(lambda: orgs_in_database_file(path) >= before + 20, message="the checkpoint")
        finally:
            checkpointer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await checkpointer
        async with store.read() as tx:
            assert await tx.orgs.by_name("org-19") is not None
    finally:
        await store.close()


async def test_a_plain_store_keeps_sqlites_autocheckpoint(tmp_path: pathlib.Path) -> None:
    store = Store(sqlite_url(tmp_path / "db.sqlite"))
    await store.open()
    try:
        assert await autocheckpoint_of(store) == 1000
        await asyncio.wait_for(store.run_checkpointer(), 1)  # returns at once: nothing to do
    finally:
        await store.close()


async def test_a_failed_commit_leaves_the_writer_usable(tmp_path: pathlib.Path) -> None:
    """The SQLite writer connection is kept between transactions: a COMMIT that fails (here a
    deferred foreign-key violation) must not leave its transaction open for the next writer."""
    store = Store(sqlite_url(tmp_path / "db.sqlite"), background_checkpoints=True)
    await store.open()
    try:
        with pytest.raises(sa.exc.IntegrityError):
            async with store.write() as tx:
                assert tx.raw is not None
                tx.raw.execute("PRAGMA defer_foreign_keys = ON")
                tx.raw.execute("INSERT INTO users (id, org_id, email, role, created_at) "
                               "VALUES ('u1', 'no-such-org', 'a@b.c', 'owner', 1.0)")
        async with store.write() as tx:
            org = await tx.orgs.insert("after-a-failed-commit", 2.0)
        async with store.read() as tx:
            assert await tx.orgs.get(org.id) is not None
            assert await tx.users.get("u1") is None
    finally:
        await store.close()


def test_checkpoint_schedule_waits_for_a_pause_or_the_longest_interval() -> None:
    schedule = CheckpointSchedule(5.0, started_at=0.0)
    assert not schedule.due(3, 0.25), "a first tick has seen no pause yet"
    assert schedule.due(3, 0.5), "start-up writes, then a quiet tick"
    assert not schedule.due(3, 0.75), "nothing new since"
    writes, now, due_at = 3, 0.75, []
    while now < 12:  # steady writes: every tick sees new ones
        writes, now = writes + 10, now + 0.25
        if schedule.due(writes, now):
            due_at.append(now)
    assert due_at == [5.5, 10.5], "every max_interval_s after the last checkpoint"
    assert schedule.due(writes, now + 0.25), "writes paused with some not yet checkpointed"
    assert not schedule.due(writes, now + 0.5), "still paused, nothing new"
