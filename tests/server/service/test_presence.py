"""v1 presence by instance (service/presence.py): two ``ServerContext``s on one database play two
instances. What one holds the other leaves alone; a close seen after the worker moved on does not
undo its new connection; an instance taken for gone after a stall marks its own sockets again."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from tether.server.config import Config
from tether.server.context import ServerContext
from tether.server.service.sessions import NewSession
from tether.server.service.workers import Caller, WorkerConnection
from tether.server.store import tables as t

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair(tmp_path: pathlib.Path) -> AsyncIterator[tuple[ServerContext, ServerContext]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    contexts = []
    try:
        for name in ("a", "b"):
            ctx = ServerContext.build(Config(data_dir=tmp_path / name, database_url=url))
            contexts.append(ctx)
            await ctx.store.open()
            await ctx.auth.open()
            await ctx.workers.reset_presence()
        yield contexts[0], contexts[1]
    finally:
        for ctx in contexts:
            await ctx.broker.close()
            await ctx.store.close()


async def new_session(ctx: ServerContext) -> str:
    secret = await ctx.accounts.admin_token("default", "owner@localhost", "owner", "presence")
    principal = await ctx.auth.principal(secret)
    return (await ctx.sessions.create(principal, NewSession(), kind="session")).id


async def presence(ctx: ServerContext, body: str) -> tuple[str | None, str | None]:
    async with ctx.store.read() as tx:
        row = await tx.sessions.get(body)
    assert row is not None
    return row.worker_status, row.worker_instance


async def test_each_instance_has_an_id_of_its_own_kept_across_restarts(pair: tuple[ServerContext, ServerContext],
                                                                       tmp_path: pathlib.Path) -> None:
    a, b = pair
    assert a.workers.v1_presence.instance != b.workers.v1_presence.instance
    again = ServerContext.build(Config(data_dir=tmp_path / "a"))
    assert again.workers.v1_presence.instance == a.workers.v1_presence.instance


async def test_a_close_after_the_worker_moved_to_another_instance_leaves_it_connected(
        pair: tuple[ServerContext, ServerContext]) -> None:
    a, b = pair
    body = await new_session(a)
    await a.workers.v1_presence.set(body, "connected")
    assert await presence(a, body) == ("connected", a.workers.v1_presence.instance)
    await b.workers.v1_presence.set(body, "connected")  # the worker reconnected through B
    await a.workers.v1_presence.set(body, "disconnected")  # then A saw its old socket close
    assert await presence(a, body) == ("connected", b.workers.v1_presence.instance)
    assert await a.workers.v1_presence.beat(starting=True) == 0  # A's restart: not A's worker
    assert await b.workers.v1_presence.beat(starting=False) == 0  # B's beat: its own, still open
    assert await b.workers.v1_presence.beat(starting=True) == 1  # B's restart: its socket died with it
    assert await presence(a, body) == ("disconnected", None)


async def test_an_instance_taken_for_gone_after_a_stall_marks_its_open_sockets_again(
        pair: tuple[ServerContext, ServerContext]) -> None:
    a, b = pair
    body = await new_session(a)
    conn = WorkerConnection(body, Caller("token"))
    await a.workers.socket_opened(conn)
    me = a.workers.v1_presence.instance
    async with a.store.write() as tx:  # A stalled: its last beat lies a whole TTL back
        await tx.conn.execute(t.server_instances.update().where(t.server_instances.c.id == me)
                              .values(last_seen=sa.literal(0.0)))
    assert await b.workers.v1_presence.beat(starting=False) == 1  # B takes A for gone
    assert await presence(a, body) == ("disconnected", None)
    assert await a.workers.v1_presence.beat(starting=False) == 1  # A wakes: the socket is open here
    assert await presence(a, body) == ("connected", me)
    await a.workers.socket_closed(conn)
    assert await presence(a, body) == ("disconnected", None)
    await a.workers.v1_presence.leave()
    async with a.store.read() as tx:
        assert me not in await tx.instances.alive(0.0)
