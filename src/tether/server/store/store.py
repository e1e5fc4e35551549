"""The store: the single source of truth, behind a small transaction API.

``async with store.write() as tx`` runs one write transaction. On SQLite all writes of
the process are serialised by one lock and ``BEGIN IMMEDIATE`` (SQLite has one writer
anyway, and this keeps ``last_seq`` gap-free without retries); on PostgreSQL the session
row is locked with ``SELECT … FOR UPDATE``. Callbacks registered with
``tx.after_commit`` run after the commit and before the next writer starts, which is how
fan-out stays in commit (= sequence) order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tether.server.store.tx import Tx

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"

AfterCommit = Callable[[], Awaitable[None] | object]


def sqlite_url(path: pathlib.Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock = asyncio.Lock()
        if self.is_sqlite:
            sa_event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            sa_event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)

    async def open(self) -> None:
        """Migrate the schema to the newest revision (idempotent)."""
        async with self.engine.connect() as conn:
            await conn.run_sync(_run_migrations)
            await conn.commit()

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with self.engine.connect() as conn:
            yield Tx(conn, self.is_sqlite, writable=False)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        async with self._write_lock:
            async with self.engine.connect() as conn:
                tx = Tx(conn, self.is_sqlite, writable=True)
                if conn.sync_connection is not None:
                    conn.sync_connection.info["tether_write"] = True
                try:
                    await conn.begin()
                    try:
                        yield tx
                    except BaseException:
                        await conn.rollback()
                        raise
                    await conn.commit()
                finally:
                    if conn.sync_connection is not None:
                        conn.sync_connection.info["tether_write"] = False
                for callback in tx.after_commit_callbacks:
                    result = callback()
                    if inspect.isawaitable(result):
                        await result


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
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("tether_write") else "BEGIN")

