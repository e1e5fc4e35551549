"""The PostgreSQL store's pool without pre-ping (store.py): connections the server dropped are
replaced at checkout, so the first request after `pg_terminate_backend` (or a restart) succeeds.

Every pooled connection's backend is terminated from another connection; the next read and the
next write on the store must work, on new backends, without a ping before each checkout.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tether.server.store import Store

pytestmark = pytest.mark.anyio


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _backend_pids(store: Store, n: int) -> set[int]:
    """Open ``n`` pooled connections at once (each holds its own backend) and give them back."""
    pids: set[int] = set()
    gate = asyncio.Event()

    async def one() -> None:
        async with store.read() as tx:
            pids.add((await tx.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())
            if len(pids) == n:
                gate.set()
            await gate.wait()  # held until all n are checked out: n distinct connections

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 10)
    return pids


async def _terminate(url: str, pids: set[int]) -> None:
    admin = await asyncpg.connect(_dsn(url))
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(pids))

        deadline = asyncio.get_running_loop().time() + 10
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids)):
            assert asyncio.get_running_loop().time() < deadline, "the terminated backends did not exit"
            await asyncio.sleep(0.02)  # polling a condition, with a deadline
    finally:
        await admin.close()


async def test_reads_and_writes_succeed_right_after_the_pooled_backends_are_terminated(postgres_url: str) -> None:
    store = Store(postgres_url)
    await store.open()
    try:
        old = await _backend_pids(store, 3)
        await _terminate(postgres_url, old)

        async with store.read() as tx:  # the first request after: no error, a new backend
            pid = (await tx.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid not in old
        async with store.write() as tx:
            await tx.conn.execute(sa.text("CREATE TABLE pool_probe (x int)"))
            await tx.conn.execute(sa.text("INSERT INTO pool_probe VALUES (1)"))
        async with store.read() as tx:
            assert (await tx.conn.execute(sa.text("SELECT x FROM pool_probe"))).scalar_one() == 1
        assert not old & await _backend_pids(store, 3)  # every slot reconnected
    finally:
        await store.close()


async def test_reads_run_without_a_transaction_and_writes_in_one(postgres_url: str) -> None:
    """Reads are autocommit (one statement, its own snapshot: no BEGIN/ROLLBACK round trips);
    writes stay one transaction that rolls back as a whole."""
    store = Store(postgres_url)
    await store.open()
    try:
        xact = sa.text("SELECT pg_current_xact_id()::text")  # (assigns one when there is none yet)
        async with store.read() as tx:
            reads = [(await tx.conn.execute(xact)).scalar_one() for _ in range(2)]
        assert reads[0] != reads[1]  # each statement was a transaction of its own
        async with store.write() as tx:
            writes = [(await tx.conn.execute(xact)).scalar_one() for _ in range(2)]
            await tx.conn.execute(sa.text("CREATE TABLE pool_probe (x int)"))
        assert writes[0] == writes[1]
        with pytest.raises(RuntimeError):
            async with store.write() as tx:
                await tx.conn.execute(sa.text("INSERT INTO pool_probe VALUES (1)"))
                raise RuntimeError("abandon the transaction")
        async with store.read() as tx:
            assert (await tx.conn.execute(sa.text("SELECT count(*) FROM pool_probe"))).scalar_one() == 0
    finally:
        await store.close()
