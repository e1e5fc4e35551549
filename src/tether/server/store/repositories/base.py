"""What every repository shares: the transaction's connection, and statements built once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["Repository", "byte_length", "from_row", "row_of"]

R = TypeVar("R")
# an AsyncConnection (PostgreSQL) or a store.InlineConnection (SQLite): both await execute()
Connection = Any
_UPDATES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], sa.Update] = {}


def update_statement(table: sa.Table, keys: tuple[str, ...], names: tuple[str, ...]) -> sa.Update:
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


class byte_length(FunctionElement[int]):
    """A text column's size in bytes (``length()`` of TEXT counts characters), per dialect:
    SQLite measures the text as a BLOB; PostgreSQL has ``octet_length`` (a cast to ``bytea``
    there would parse backslashes as escapes)."""

    type = sa.Integer()
    inherit_cache = True
    name = "byte_length"


@compiles(byte_length)
def _byte_length(element: byte_length, compiler: SQLCompiler, **kw: Any) -> str:
    return f"length(CAST({compiler.process(element.clauses, **kw)} AS BLOB))"


@compiles(byte_length, "postgresql")
def _byte_length_pg(element: byte_length, compiler: SQLCompiler, **kw: Any) -> str:
    return f"octet_length({compiler.process(element.clauses, **kw)})"


def from_row(record: Callable[..., R], row: Any) -> R:
    """A result row as ``record`` (its fields are the row's column names)."""
    return record(**row._mapping)


def row_of(record: Any) -> dict[str, Any]:
    """A record's fields as a row to insert."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


class Repository:
    """One aggregate's statements, on the connection of one transaction (``Tx``).

    ``locks``: a PostgreSQL write transaction. SQLite runs one writer at a time (``BEGIN IMMEDIATE``),
    so whatever a write transaction reads is the latest state until it commits; PostgreSQL runs
    writers side by side (and other instances' too), so there the rows a write transaction reads
    to decide what to write are read with ``SELECT … FOR UPDATE``: a second writer waits for the
    first to commit and then reads what it wrote. Always the session row before the rows that
    belong to it (work items, permission requests): one order, so two writers never deadlock."""

    def __init__(self, conn: Connection, locks: bool = False,
                 on_session_lock: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.locks = locks
        # PostgreSQL write transactions: told each session row granted (store/commit_order.py)
        self.on_session_lock = on_session_lock

    def session_locked(self, session_id: str) -> None:
        if self.on_session_lock is not None:
            self.on_session_lock(session_id)

    async def _one(self, record: Callable[..., R], stmt: sa.Executable,
                   params: Mapping[str, Any] | None = None) -> R | None:
        found = (await self.conn.execute(stmt, params)).first()
        return None if found is None else record(**found._mapping)

    async def _all(self, record: Callable[..., R], stmt: sa.Executable) -> list[R]:
        return [record(**r._mapping) for r in (await self.conn.execute(stmt)).all()]

    async def _update(self, table: sa.Table, where: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        if not values:
            return
        names = tuple(sorted(values))
        params = {f"k_{k}": v for k, v in where.items()} | {f"v_{n}": values[n] for n in names}
        await self.conn.execute(update_statement(table, tuple(where), names), params)
