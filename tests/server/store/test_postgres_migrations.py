"""The Alembic migrations on a real PostgreSQL (scripts/services): a fresh database per test.

Upgrading to head gives exactly the schema ``tables.metadata`` declares (Alembic's own comparison
finds no difference), the undelivered-events index is partial on PostgreSQL too, the upgrade is
idempotent, and every migration downgrades and upgrades again.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from tether.server.preflight import check_database, head_revision
from tether.server.store import Store
from tether.server.store.store import MIGRATIONS
from tether.server.store.tables import metadata

pytestmark = pytest.mark.anyio


def _alembic(conn: sa.Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


async def _on(url: str, fn: Any) -> Any:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            result = await conn.run_sync(fn)
            await conn.commit()
            return result
    finally:
        await engine.dispose()


def _schema_diff(conn: sa.Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _partial_index(conn: sa.Connection) -> str | None:
    row = conn.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_events_undelivered'")).first()
    return None if row is None else str(row[0])


async def test_store_open_migrates_postgres_to_the_declared_schema(postgres_url: str) -> None:
    before = await check_database(postgres_url)
    assert [c.name for c in before] == ["database", "migrations"]
    assert before[0].ok and not before[1].ok and "no schema yet" in before[1].detail

    store = Store(postgres_url)
    await store.open()
    await store.open()  # a second instance starting on a migrated database changes nothing
    await store.close()

    assert await _on(postgres_url, _revision) == head_revision()
    assert await _on(postgres_url, _schema_diff) == []
    indexdef = await _on(postgres_url, _partial_index)
    assert indexdef is not None and "WHERE" in indexdef and "processed" in indexdef, indexdef
    after = await check_database(postgres_url)
    assert all(c.ok for c in after), after
    assert after[1].detail == f"at head ({head_revision()})"


async def test_every_migration_downgrades_and_upgrades_again(postgres_url: str) -> None:
    def roundtrip(conn: sa.Connection) -> list[str | None]:
        cfg = _alembic(conn)
        seen = []
        command.upgrade(cfg, "head")
        seen.append(_revision(conn))
        command.downgrade(cfg, "base")
        seen.append(_revision(conn))
        command.upgrade(cfg, "head")
        seen.append(_revision(conn))
        return seen

    assert await _on(postgres_url, roundtrip) == [head_revision(), None, head_revision()]
    assert await _on(postgres_url, _schema_diff) == []


async def test_check_reports_a_database_behind_head(postgres_url: str) -> None:
    def to_first(conn: sa.Connection) -> None:
        command.upgrade(_alembic(conn), "0001")

    await _on(postgres_url, to_first)
    checks = await check_database(postgres_url)
    assert checks[0].ok and not checks[1].ok
    assert checks[1].detail.startswith("at 0001, head is ") and "tether server" in checks[1].detail
