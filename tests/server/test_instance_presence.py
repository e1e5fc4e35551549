"""v1 worker presence across server instances (docs/protocol.md §4.4, tether.protocol.instances):
two real `tether server` processes on one PostgreSQL database. A restart of one instance leaves
the v1 workers the other holds connected; an instance that dies without closing its sockets has
its workers marked disconnected by the others once it misses its heartbeats.
"""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tests.support.server import ServerProcess
from tests.support.waiting import eventually_awaited
from tests.support.worker import auth, connect_worker, create_session, subscribe

from tether.server.runtime import instance_id

pytestmark = pytest.mark.anyio
T = TypeVar("T")
HEARTBEAT_S = 0.5  # an instance silent for 1.5 s is gone


@pytest.fixture
def instances(tmp_path: pathlib.Path, postgres_url: str, shared_redis_url: str) -> Iterator[list[ServerProcess]]:
    common: dict[str, Any] = {"database_url": postgres_url, "redis_url": shared_redis_url,
                              "redis_prefix": f"t-{tmp_path.name[-12:]}", "instance_heartbeat_s": HEARTBEAT_S,
                              "limits": {"rate_per_second": 0}}
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            started.append(ServerProcess(tmp_path / name, **common).start())
        yield started
    finally:
        for proc in started:
            proc.stop()



async def beats_of(url: str, instance: str) -> tuple[float, float] | None:
    """(started_at, last_seen) of an instance's heartbeat row."""
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(sa.text("SELECT started_at, last_seen FROM server_instances WHERE id = :i"),
                                      {"i": instance})).first()
    finally:
        await engine.dispose()
    return (row[0], row[1]) if row is not None else None


async def worker_of(client: httpx.AsyncClient, sid: str, token: str) -> dict[str, Any]:
    session = (await client.get(f"/v1/sessions/{sid}", headers=auth(token))).json()
    return dict(session["worker"])


async def test_a_restart_leaves_the_other_instances_v1_workers_connected(
        instances: list[ServerProcess], postgres_url: str) -> None:
    a, b = instances
    token = a.token()
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        sid = await create_session(on_a, token)
        worker = await connect_worker(a.ws_url, sid, token)  # held by A
        try:
            await eventually_awaited(lambda: _is(worker_of(on_b, sid, token), connected=True))
            b.restart()  # B starts again: it marks its own v1 workers gone, not A's
            b_id = instance_id(b.data_dir)

            async def b_swept_twice() -> bool:  # (each beat looks for workers it may release)
                beats = await beats_of(postgres_url, b_id)
                return beats is not None and beats[1] >= beats[0] + 2 * HEARTBEAT_S

            await eventually_awaited(b_swept_twice)
            assert (await worker_of(on_b, sid, token))["connected"] is True
            assert (await worker_of(on_a, sid, token))["status"] == "connected"
            sub = await subscribe(b.ws_url, sid, token)  # and a client on B hears when A loses it
            try:
                await worker.close()
                await sub.wait_for(lambda f: f.get("type") == "session_update"
                                   and (f.get("worker") or {}).get("connected") is False)
            finally:
                await sub.close()
        finally:
            await worker.close()


async def test_the_v1_workers_of_an_instance_that_died_are_marked_gone_by_the_others(
        instances: list[ServerProcess]) -> None:
    a, b = instances
    token = a.token()
    async with httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        sid = await create_session(on_b, token)
        worker = await connect_worker(a.ws_url, sid, token)
        try:
            await eventually_awaited(lambda: _is(worker_of(on_b, sid, token), connected=True))
            sub = await subscribe(b.ws_url, sid, token)
            try:
                a.kill()  # no close, no goodbye: its row just stops beating
                await sub.wait_for(lambda f: f.get("type") == "session_update"
                                   and (f.get("worker") or {}).get("status") == "disconnected", timeout=15)
            finally:
                await sub.close()
            assert (await worker_of(on_b, sid, token))["connected"] is False
        finally:
            await worker.close()


async def _is(worker: Awaitable[dict[str, Any]], *, connected: bool) -> bool:
    return (await worker)["connected"] is connected
