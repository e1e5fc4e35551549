"""Statements straight into a test server's database, whichever store the run uses (SQLite in
its data directory, or its PostgreSQL database under TETHER_TEST_STORE=postgres): for tests that
plant a row as an older server could have stored it, or read what the server wrote."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import threading
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.server import database_url_of


def execute(data_dir: pathlib.Path, sql: str, params: Mapping[str, Any] | None = None) -> tuple[int, list[Any]]:
    """Run ``sql`` (named ``:params``) in its own committed transaction: the rows it changed
    and the rows it returned."""
    url = database_url_of(data_dir)
    if url is None:
        db = sqlite3.connect(data_dir / "tether.db", timeout=30)
        try:
            with db:
                cursor = db.execute(sql, dict(params or {}))
                rows = cursor.fetchall()
                return cursor.rowcount, rows
        finally:
            db.close()
    return _on_postgres(url, sql, dict(params or {}))


def _on_postgres(url: str, sql: str, params: dict[str, Any]) -> tuple[int, list[Any]]:
    """asyncpg on a loop of its own in a thread: callable from sync and async tests alike."""
    outcome: list[Any] = []

    async def run() -> tuple[int, list[Any]]:
        engine = create_async_engine(url, poolclass=sa.NullPool)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(sql), params)
                rows = list(result.all()) if result.returns_rows else []
                return result.rowcount, rows
        finally:
            await engine.dispose()

    def main() -> None:
        try:
            outcome.append(asyncio.run(run()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=main, name="test-sql")
    thread.start()
    thread.join(60)
    if not outcome:
        raise TimeoutError(f"{sql!r} did not finish in 60 s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    result: tuple[int, list[Any]] = outcome[0]
    return result
