"""Where a live-only subscriber starts: after the last sequence number its opening read finds, and
the socket answers no frame before that read (api/subscribe.py). On PostgreSQL the read awaits the
database; answering a ``keep_alive`` before it let a client post an event that committed before the
read, which the socket then never sent (neither replayed nor after the start). bench/relay.py
--instances found it: about one subscriber in 400 missed the first event posted after its answer.

Made deterministic here by holding a lock on the table the opening read reads last, from a
connection of the test's own: the server's read waits until the test lets it go."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import create_session, register, subscribe, take_work, worker_post

pytestmark = pytest.mark.anyio

# A server backend waiting for the test's lock (only the opening read touches the table here; the
# query column may still show the previous statement while the next one is parsed, so not matched)
OPEN_READ_WAITS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")


@pytest.fixture
def server(tmp_path: pathlib.Path, postgres_url: str) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "srv", database_url=postgres_url, limits={"rate_per_second": 0}) as srv:
        yield srv


@pytest.fixture
async def locker(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        yield conn
    finally:
        await conn.close()


def assistant(text: str) -> dict[str, Any]:
    return {"type": "assistant", "uuid": str(uuid.uuid4()), "session_id": "", "parent_tool_use_id": None,
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


async def read_parked_on_lock(locker: asyncpg.Connection, timeout: float = 15.0) -> None:
    """Until the server's opening read waits for the test's lock (polled)."""
    async with asyncio.timeout(timeout):
        while True:
            if await locker.fetchval(OPEN_READ_WAITS):
                return
            await asyncio.sleep(0.02)


async def test_no_frame_is_answered_before_the_opening_read_and_every_later_event_arrives(
        server: ServerProcess, locker: asyncpg.Connection) -> None:
    token = server.token()
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        env = await register(http, token)
        sid = await create_session(http, token, env["environment_id"])
        _item, worker = await take_work(http, env)
        await worker_post(http, sid, worker, assistant("before the subscriber"))

        hold = locker.transaction()
        await hold.start()
        await locker.execute("LOCK TABLE permission_requests IN ACCESS EXCLUSIVE MODE")
        try:
            sub = await subscribe(server.ws_url, sid, token)
            await read_parked_on_lock(locker)
            await sub.ws.send('{"type":"keep_alive"}')
            # A window for a premature answer to show (the old code answered within milliseconds);
            # the socket must stay silent however long the read waits.
            with pytest.raises(TimeoutError):
                await sub.wait_for(lambda f: f.get("type") == "keep_alive", timeout=1.0)
        finally:
            await hold.rollback()
        try:
            await sub.wait_for(lambda f: f.get("type") == "keep_alive")  # answered once the read is done
            after = assistant("after the answer")
            await worker_post(http, sid, worker, after)
            got = await sub.wait_for(lambda f: f.get("uuid") == after["uuid"])
            assert got["sequence_num"] == 2
            assert [f.get("type") for f in sub.frames] == ["keep_alive", "assistant"]  # live only: no replay
        finally:
            await sub.close()
