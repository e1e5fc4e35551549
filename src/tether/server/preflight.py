"""``tether server --check``: is the database reachable and migrated, is Redis reachable?

Nothing here writes: the database's Alembic revision is read and compared with the newest one the
installed Tether ships (the server migrates at start; ``--check`` only says whether it would have
to), and Redis gets a PING. Each check is one :class:`Check`; the CLI renders them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from tether.server.redis_client import connect as redis_connect
from tether.server.redis_client import redacted
from tether.server.store.store import MIGRATIONS

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str  # database | migrations | redis
    ok: bool
    target: str  # what was checked (passwords redacted)
    detail: str  # what was found, or what went wrong and what to do
    elapsed_ms: float

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "target": self.target, "detail": self.detail,
                "elapsed_ms": round(self.elapsed_ms, 1)}


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def _current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def check_database(url: str) -> list[Check]:
    """Reachable (one connection and ``SELECT 1``), then migrated to head."""
    target = redacted(url)
    started = time.perf_counter()
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                reached = (time.perf_counter() - started) * 1000
                current = await conn.run_sync(_current_revision)
    except Exception as exc:  # every driver error is a failed check, said plainly
        elapsed = (time.perf_counter() - started) * 1000
        return [Check("database", False, target, f"cannot connect: {_reason(exc)}", elapsed)]
    finally:
        await engine.dispose()
    head = head_revision()
    database = Check("database", True, target, "reachable", reached)
    elapsed = (time.perf_counter() - started) * 1000
    if current == head:
        return [database, Check("migrations", True, target, f"at head ({head})", elapsed)]
    found = "no schema yet" if current is None else f"at {current}"
    return [database, Check("migrations", False, target,
                            f"{found}, head is {head}: start `tether server` once to migrate", elapsed)]


async def check_redis(url: str) -> Check:
    target = redacted(url)
    started = time.perf_counter()
    client = redis_connect(url)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            pong = await client.ping()
    except Exception as exc:
        return Check("redis", False, target, f"no answer to PING: {_reason(exc)}",
                     (time.perf_counter() - started) * 1000)
    finally:
        await client.aclose()
    elapsed = (time.perf_counter() - started) * 1000
    return Check("redis", bool(pong), target, "PONG" if pong else "unexpected answer to PING", elapsed)


async def run_checks(database_url: str, redis_url: str | None) -> list[Check]:
    checks = await check_database(database_url)
    if redis_url:
        checks.append(await check_redis(redis_url))
    return checks


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {TIMEOUT_S:.0f} s"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
