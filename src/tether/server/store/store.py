"""The store: the single source of truth, behind a small transaction API.

``async with store.write() as tx`` runs one write transaction. On SQLite all writes of
the process are serialised by one lock and ``BEGIN IMMEDIATE`` (SQLite has one writer
anyway, and this keeps ``last_seq`` gap-free without retries); callbacks registered with
``tx.after_commit`` run after the commit and before the next writer starts, which is how
fan-out stays in commit (= sequence) order. On PostgreSQL the database orders the writes, of
this instance and of the others: a write transaction reads the rows it decides from with
``SELECT … FOR UPDATE``, the session row before its work items, permission requests and events
(``repositories/base.py``), so writers of one session on any instance take turns, and unique
constraints refuse what slips past. There the writes of one instance run side by side (a lock
held across their round trips made them queue for nothing), and the callbacks of one session's
writers still run in commit order (``commit_order.py``).

SQLite runs *inline* on the event-loop thread through pysqlite rather than through
aiosqlite's worker thread: in WAL mode with ``synchronous=NORMAL`` a statement takes tens
of microseconds, while every aiosqlite call pays a thread hop (≈200 µs measured here),
several per statement — a write transaction went from 6.5 ms to well under 1 ms.
PostgreSQL keeps the asyncpg driver.

WAL checkpoints are moved off the event loop (``background_checkpoints``): by default
SQLite checkpoints inside whichever commit crosses 1,000 WAL pages, copying pages and
fsyncing the database while the loop waits — measured here, one commit in a thousand took
6–9 ms instead of 25 µs, a stall every ~0.5 s at 1,000 events/s that every subscriber
felt. The server runs ``run_checkpointer`` instead: a PASSIVE checkpoint (never blocks the
writer) on its own connection in a thread of its own, when writes pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection

from tether.errors import InvalidRequest
from tether.server.store.commit_order import CommitOrder, Turns
from tether.server.store.tx import Tx

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"


def sqlite_url(path: pathlib.Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class InlineConnection:
    """The awaitable subset of AsyncConnection that Tx uses, over a sync connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self.sync_connection = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        return self.sync_connection.exec_driver_sql(statement, parameters)

    @property
    def driver(self) -> Any:
        """The pysqlite connection underneath (same transaction)."""
        return self.sync_connection.connection.driver_connection


CHECKPOINT_TICK_S = 0.25
CHECKPOINT_MAX_INTERVAL_S = 5.0
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # a WAL that grew in a burst is cut back to this on restart


class CheckpointSchedule:
    """When to checkpoint, asked once a tick with the count of committed writes: when there
    is something new and writes paused for a whole tick, or ``max_interval_s`` after the last
    checkpoint under steady writes. What was written before the first tick counts as new."""

    def __init__(self, max_interval_s: float, *, started_at: float) -> None:
        self.max_interval_s = max_interval_s
        self._done = -1  # the write count the last checkpoint covered
        self._last_tick: int | None = None
        self._last_run = started_at

    def due(self, writes: int, now: float) -> bool:
        quiet = writes == self._last_tick
        self._last_tick = writes
        if writes == self._done or not (quiet or now - self._last_run >= self.max_interval_s):
            return False
        self._done, self._last_run = writes, now
        return True


class Store:
    def __init__(self, url: str, *, background_checkpoints: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.background_checkpoints = background_checkpoints and self.is_sqlite
        self.writes = 0  # write transactions committed (the checkpointer's cue)
        self._write_lock = asyncio.Lock()  # SQLite
        self._commit_order = CommitOrder()  # PostgreSQL
        self.engine: AsyncEngine | None = None
        self.sync_engine: sa.Engine | None = None
        self._writer: sa.Connection | None = None  # SQLite: the one connection writes use
        self._statements: PoolProxiedConnection | None = None  # SQLite: for one-statement reads
        if self.is_sqlite:
            sync_url = sa.make_url(url).set(drivername="sqlite+pysqlite")
            # busy_timeout stays short: a wait here blocks the event loop (another process, e.g.
            # `tether admin`, holding the write lock is the only way to hit it).
            self.sync_engine = sa.create_engine(sync_url, connect_args={"timeout": 5, "check_same_thread": False},
                                                pool_size=8, max_overflow=32)
            sa_event.listen(self.sync_engine, "connect", _sqlite_on_connect)
            if self.background_checkpoints:
                sa_event.listen(self.sync_engine, "connect", _no_autocheckpoint)
            sa_event.listen(self.sync_engine, "begin", _sqlite_on_begin)
        else:
            # No pre-ping: it cost two round trips (BEGIN; ROLLBACK) per checkout. A connection the
            # server dropped (restart, pg_terminate_backend, idle timeout) is closed by asyncpg as
            # soon as the socket says so, and _drop_closed replaces it at checkout without a round
            # trip. LIFO: the few connections in use stay warm (their prepared statements too).
            self.engine = create_async_engine(url, pool_size=20, max_overflow=20, pool_use_lifo=True)
            sa_event.listen(self.engine.sync_engine, "checkout", _drop_closed)
        # PostgreSQL reads run in autocommit: under READ COMMITTED each statement takes its own
        # snapshot anyway, so BEGIN … ROLLBACK around them were two round trips that bought nothing.
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.engine else None

    async def open(self) -> None:
        """Migrate the schema to the newest revision (idempotent)."""
        if self.sync_engine is not None:
            with self.sync_engine.connect() as conn:
                _run_migrations(conn)
                conn.commit()
            return
        assert self.engine is not None
        async with self.engine.connect() as aconn:
            # instances starting together on one database migrate one after the other (the
            # later ones find it at head); the lock ends with the migrating transaction
            await aconn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('tether:migrate'))"))
            await aconn.run_sync(_run_migrations)
            await aconn.commit()

    async def close(self) -> None:
        if self._statements is not None:
            self._statements.close()  # back to the pool, which the dispose below closes
            self._statements = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        if self.engine is not None:
            await self.engine.dispose()

    async def ping(self) -> None:
        """A read that touches the database (``/readyz``): raises when it cannot be read."""
        async with self.read() as tx:
            await tx.conn.execute(sa.text("SELECT 1"))

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        if self.sync_engine is not None:
            with self._read_conn() as conn:
                yield Tx(InlineConnection(conn), True, writable=False)
            return
        assert self._reader is not None
        with _text_postgres_refuses():
            async with self._reader.connect() as aconn:
                yield Tx(aconn, False, writable=False)

    def sqlite_statement(self) -> sqlite3.Connection:
        """The pysqlite connection for reads that are one statement (SQLite only; a credential on
        every request). Taken from the pool once and kept for the store's life: a checkout, a
        SQLAlchemy Connection and its reset cost more than the statement. It stays in autocommit
        and no transaction is ever begun on it, so each statement is its own snapshot and it
        never holds a checkpoint back."""
        assert self.sync_engine is not None, "SQLite only"
        if self._statements is None:
            self._statements = self.sync_engine.raw_connection()
        driver: sqlite3.Connection = self._statements.driver_connection  # type: ignore[assignment]
        return driver

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        if self.sync_engine is None:
            async with self._write_postgres() as tx:
                yield tx
            return
        async with self._write_lock:
            conn = self._writer_connection()
            tx = Tx(InlineConnection(conn), True, writable=True)
            try:
                conn.begin()
                try:
                    yield tx
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            except BaseException:
                # The writer lives on: whatever went wrong (a failed BEGIN, COMMIT or
                # rollback), the next transaction must not find this one still open.
                if conn.in_transaction() or (tx.raw is not None and tx.raw.in_transaction):
                    self._discard_writer()
                raise
            self.writes += 1
            for callback in tx.after_commit_callbacks:
                result = callback()
                if inspect.isawaitable(result):
                    await result

    @contextlib.asynccontextmanager
    async def _write_postgres(self) -> AsyncIterator[Tx]:
        assert self.engine is not None
        turns = Turns(self._commit_order)
        try:
            with _text_postgres_refuses():
                async with self.engine.connect() as aconn:
                    tx = Tx(aconn, False, writable=True, turns=turns)
                    await aconn.begin()
                    try:
                        yield tx
                    except BaseException:
                        await aconn.rollback()
                        raise
                    await aconn.commit()
            await turns.wait_earlier()
            await _after_commit(tx)
        finally:
            turns.end()

    async def run_checkpointer(self, tick_s: float = CHECKPOINT_TICK_S,
                               max_interval_s: float = CHECKPOINT_MAX_INTERVAL_S) -> None:
        """Checkpoint the WAL after writes, off the event loop, until cancelled.

        A checkpoint copies pages and syncs the database: on 2 cores its thread competes with
        the loop, and with it every checkpoint showed up in the relay's p99 (8–25 ms paced at
        1,000 events/s with a checkpoint every 0.5 s, 4–5 ms with none). So it runs in a thread
        of its own when writes have paused for a tick — traffic is bursty — or at the latest
        ``max_interval_s`` after the last one (a bound on the WAL's length, and the hot pages that
        every commit rewrites are copied once per checkpoint, not per commit).

        The thread runs at normal priority on purpose. It used to be niced to 19, which inverted
        priorities on a busy machine: between its SQLite calls the thread holds the GIL, and the
        OS then left it off the CPU for hundreds of milliseconds while the event loop waited for
        that GIL. The test suite's loop-stall guard caught 166–572 ms stalls this way on 2 loaded cores.
        """
        if not self.background_checkpoints:
            return
        assert self.sync_engine is not None
        db_path = self.sync_engine.url.database
        assert db_path
        loop = asyncio.get_running_loop()
        schedule = CheckpointSchedule(max_interval_s, started_at=loop.time())
        executor = ThreadPoolExecutor(1, thread_name_prefix="wal-checkpoint")
        try:
            while True:
                await asyncio.sleep(tick_s)  # a period, not a wait for a condition
                if schedule.due(self.writes, loop.time()):
                    # its own connection each time: a cancelled wait leaves nothing shared behind
                    await loop.run_in_executor(executor, _checkpoint, db_path)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def _discard_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.invalidate()  # the pool drops the DBAPI connection: its state is unknown
            with contextlib.suppress(Exception):
                writer.close()

    def _writer_connection(self) -> sa.Connection:
        """Writes are serialised by the lock, so one connection serves them all (no pool
        checkout per transaction); a connection SQLAlchemy invalidated is replaced."""
        assert self.sync_engine is not None
        if self._writer is None or self._writer.invalidated or self._writer.closed:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
            self._writer = self.sync_engine.connect()
            self._writer.info["tether_write"] = True
        return self._writer

    @contextlib.contextmanager
    def _read_conn(self) -> Iterator[sa.Connection]:
        assert self.sync_engine is not None
        with self.sync_engine.connect() as conn:
            # info belongs to the DBAPI connection, which may once have been the writer's
            conn.info["tether_write"] = False
            yield conn


async def _after_commit(tx: Tx) -> None:
    for callback in tx.after_commit_callbacks:
        result = callback()
        if inspect.isawaitable(result):
            await result


# SQLSTATEs of text PostgreSQL cannot hold: a NUL character (22021), or one the database's
# encoding lacks (22P05). SQLite stores such text; here the request that brought it is refused.
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


@contextlib.contextmanager
def _text_postgres_refuses() -> Iterator[None]:
    """Text PostgreSQL refuses (e.g. ``\\u0000`` in a title, or in an id in a path) is the
    request's fault: 400 ``invalid_request_error``, not a 500."""
    try:
        yield
    except (sa_exc.DBAPIError, asyncpg.PostgresError) as exc:  # (the latter: postgres_fast.py's statements)
        if getattr(getattr(exc, "orig", exc), "sqlstate", None) not in _UNSTORABLE_TEXT:
            raise
        raise InvalidRequest("Text with a NUL character (\\u0000) cannot be stored.") from None


def _run_migrations(sync_conn: sa.Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide where transactions begin (for BEGIN IMMEDIATE).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a committed transaction survives a killed process (not a power cut).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")
    dbapi_conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")


def _checkpoint(path: str) -> None:
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        # PASSIVE: copies what no reader still needs, never waits for (or blocks) the writer
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


def _drop_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection whose socket closed meanwhile is replaced (SQLAlchemy
    reconnects the pool slot when a checkout listener raises DisconnectionError); one whose
    server went away without a word fails its next statement and is invalidated then."""
    driver = getattr(dbapi_conn, "_connection", None)
    if driver is not None and driver.is_closed():
        raise sa_exc.DisconnectionError("the database closed this pooled connection")


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # straight to the driver: through exec_driver_sql this statement cost more than a commit
    driver: Any = conn.connection.driver_connection
    driver.execute("BEGIN IMMEDIATE" if conn.info.get("tether_write") else "BEGIN")


__all__ = ["AsyncConnection", "InlineConnection", "Store", "sqlite_url"]
