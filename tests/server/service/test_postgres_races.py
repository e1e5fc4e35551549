"""The database, not one process, enforces the session rules on PostgreSQL.

Two ``ServerContext``s on one fresh PostgreSQL database play two server instances: each has its own
store (its own connection pool and its own in-process write lock), so nothing but PostgreSQL's
locks orders their writes. Each race is made real, not left to timing: a third connection holds
the session's row lock while both instances start the same write; the test waits until both
stand in PostgreSQL's lock queue (``pg_locks``), then lets go. Whatever the order the database
picks, the rule must hold: appends never share a sequence number, one permission answer wins, one
poll leases a work item, one of two concurrent registrations gets each epoch, a login link is
redeemed once. Inserts that race on a unique index (a new member's email, a transcript row's uuid)
end in the domain's answer — a conflict, or the row stored once — never an IntegrityError (a 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tether.errors import Conflict
from tether.server.auth.secrets import hash_secret
from tether.server.auth.service import Principal
from tether.server.broker.items import client_topic
from tether.server.config import Config
from tether.server.context import ServerContext
from tether.server.service.environments import Registration
from tether.server.service.sessions import NewSession
from tether.server.store import EventIn, StoredEvent
from tether.server.store import tables as t
from tether.server.store.records import InternalEvent

pytestmark = pytest.mark.anyio
T = TypeVar("T")


@contextlib.asynccontextmanager
async def two_instances(url: str, tmp_path: pathlib.Path) -> AsyncIterator[list[ServerContext]]:
    contexts = []
    try:
        for name in ("a", "b"):  # opened one after the other: the first migrates and makes the keys
            ctx = ServerContext.build(Config(data_dir=tmp_path / name, database_url=url, poll_timeout_s=1.0))
            contexts.append(ctx)
            await ctx.store.open()
            await ctx.auth.open()
        yield contexts
    finally:
        for ctx in contexts:
            await ctx.broker.close()
            await ctx.store.close()


async def owner(ctx: ServerContext) -> Principal:
    secret = await ctx.accounts.admin_token("default", "owner@localhost", "owner", "races")
    return await ctx.auth.principal(secret)


@contextlib.asynccontextmanager
async def session_locked(url: str, session_id: str) -> AsyncIterator[AsyncConnection]:
    """Hold the session row's lock (as a third writer would) until the block ends."""
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            await conn.execute(sa.select(t.sessions.c.id).where(t.sessions.c.id == session_id).with_for_update())
            yield conn
            await conn.commit()
    finally:
        await engine.dispose()


async def lock_waiters(conn: AsyncConnection) -> int:
    """Backends of this database waiting for a lock (a statement standing in the row's queue)."""
    # pg_stat_activity is read once per transaction and kept (stats_fetch_consistency): the holder
    # asks inside its transaction, so backends that connected since would be missing
    await conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    found = await conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"))
    return int(found.scalar_one())


async def queued(holder: AsyncConnection, tasks: list[asyncio.Future[Any]], wanted: int) -> None:
    """Wait (polling pg_locks: the condition lives in other connections) until ``wanted`` backends
    wait for a lock; fail if a task finished first (it did not wait for the lock)."""
    deadline = time.monotonic() + 20
    while await lock_waiters(holder) < wanted:
        assert time.monotonic() < deadline, "the writes never queued for the lock"
        assert not any(task.done() for task in tasks), [task.result() for task in tasks if task.done()]
        await asyncio.sleep(0.01)


async def race(url: str, session_id: str, *writes: Awaitable[T], waiters: int | None = None) -> list[Any]:
    """Start ``writes`` while the session row is locked, wait until ``waiters`` (all by default)
    queue for it, release; their results (an exception is a result)."""
    wanted = len(writes) if waiters is None else waiters
    async with session_locked(url, session_id) as holder:
        tasks = [asyncio.ensure_future(w) for w in writes]
        await queued(holder, tasks, wanted)
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def client_event(text: str, event_uuid: str | None = None) -> EventIn:
    obj = {"type": "user", "uuid": event_uuid or str(uuid.uuid4()), "parent_tool_use_id": None,
           "message": {"role": "user", "content": text}}
    return EventIn(obj["uuid"], "client", "user", obj, orjson.dumps(obj).decode(), delivery="pending")


async def seqs_and_uuids(ctx: ServerContext, session_id: str) -> tuple[list[int], list[str], int]:
    async with ctx.store.read() as tx:
        rows = (await tx.conn.execute(sa.select(t.events.c.seq, t.events.c.uuid).where(
            t.events.c.session_id == session_id).order_by(t.events.c.seq))).all()
        session = await tx.sessions.get(session_id)
    assert session is not None
    return [r[0] for r in rows], [r[1] for r in rows], session.last_seq


async def test_concurrent_appends_on_two_instances_never_share_a_sequence_number(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="session")
        twice = str(uuid.uuid4())  # the same event posted to both instances: logged once
        writes = [ctx.log.append(session.id, [client_event(f"{name}{i}")]) for i in range(5)
                  for name, ctx in (("a", a), ("b", b))]
        writes += [a.log.append(session.id, [client_event("dup", twice)]),
                   b.log.append(session.id, [client_event("dup", twice)])]
        # no instance-wide write lock on PostgreSQL: every write stands in the row's queue at once
        results = await race(postgres_url, session.id, *writes)
        assert not [r for r in results if isinstance(r, BaseException)], results
        seqs, uuids, last_seq = await seqs_and_uuids(b, session.id)
        assert seqs == list(range(1, 12)) and last_seq == 11
        assert len(set(uuids)) == 11 and uuids.count(twice) == 1
        stored = [ev.seq for r in results for ev in r.stored]
        assert sorted(stored) == seqs  # each write was told the sequence number it got, once


async def test_two_answers_to_one_permission_on_two_instances_one_wins(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="session")
        ask = {"type": "control_request", "request_id": "req-1", "uuid": str(uuid.uuid4()),
               "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}}
        await a.log.post_worker_events(session.id, [ask])

        def answer(behavior: str) -> dict[str, Any]:
            decision = {"behavior": behavior, **({"updatedInput": {}} if behavior == "allow" else {"message": "no"})}
            return {"type": "control_response", "uuid": str(uuid.uuid4()),
                    "response": {"subtype": "success", "request_id": "req-1", "response": decision}}

        results = await race(postgres_url, session.id,
                             a.permissions.answer(session.id, principal.org_id, "alice", answer("allow")),
                             b.permissions.answer(session.id, principal.org_id, "bob", answer("deny")))
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Conflict) and lost[0].error_type == "already_resolved", lost
        async with b.store.read() as tx:
            perm = await tx.permissions.get(session.id, "req-1")
            answers = (await tx.conn.execute(sa.select(sa.func.count()).where(
                t.events.c.session_id == session.id, t.events.c.event_type == "control_response"))).scalar_one()
        assert perm is not None and perm.status in ("allowed", "denied")
        assert perm.answered_by == ("alice" if perm.status == "allowed" else "bob")
        assert answers == 1  # the loser's answer was never logged


async def test_two_polls_on_two_instances_lease_a_work_item_once(postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        env_id, _ = await a.environments.register(principal, Registration(
            "bridge", "host", "/tmp/p", None, None, 4, "claude_code", {}), None)
        session = await a.sessions.create(principal, NewSession(environment_id=env_id), kind="session")
        async with a.store.read() as tx:
            env = await tx.environments.get(env_id)
            queued = await tx.work.live_for_session(session.id)
        assert env is not None and queued is not None and queued.state == "queued"
        results = await race(postgres_url, session.id, a.dispatcher.poll(env, 60_000),
                             b.dispatcher.poll(env, 60_000))
        assert not [r for r in results if isinstance(r, BaseException)], results
        leased = [r for r in results if r is not None]
        assert len(leased) == 1 and leased[0][0].id == queued.id, results  # the other poll timed out empty
        async with b.store.read() as tx:
            item = await tx.work.get(queued.id)
        assert item is not None and item.state == "delivered" and item.delivered_at == leased[0][0].delivered_at


async def test_two_registrations_on_two_instances_get_two_epochs(postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="code")
        epochs = await race(postgres_url, session.id, a.workers.register(session.id), b.workers.register(session.id))
        assert sorted(epochs) == [1, 2], epochs
        async with a.store.read() as tx:
            row = await tx.sessions.get(session.id)
        assert row is not None and row.worker_epoch == 2
        with pytest.raises(Conflict, match="superseded"):
            a.workers.check_epoch(row, 1)  # the first worker is fenced off, whichever instance it talks to


async def test_a_login_link_is_redeemed_once_across_instances(postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        link = await a.accounts.create_login_link(principal, "/")
        engine = create_async_engine(postgres_url, poolclass=sa.NullPool)
        try:
            async with engine.connect() as holder:  # hold the link's row as a third writer would
                await holder.begin()
                await holder.execute(sa.select(t.tokens.c.id).where(t.tokens.c.id == link.row.id).with_for_update())
                tasks = [asyncio.ensure_future(ctx.accounts.redeem_login_link(link.secret)) for ctx in (a, b)]
                await queued(holder, tasks, 2)
                await holder.commit()
        finally:
            await engine.dispose()
        results = await asyncio.gather(*tasks)
        assert len([r for r in results if r is not None]) == 1, results


async def test_delivery_moves_on_two_instances_never_go_backwards(postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="session")
        prompt = client_event("hello")
        await a.log.append(session.id, [prompt])
        engine = create_async_engine(postgres_url, poolclass=sa.NullPool)
        try:
            async with engine.connect() as holder:  # hold the event's row: both moves queue behind it
                await holder.begin()
                await holder.execute(sa.select(t.events.c.pk).where(
                    t.events.c.session_id == session.id, t.events.c.uuid == prompt.uuid).with_for_update())
                tasks = [asyncio.ensure_future(a.workers.deliveries(session.id, {"processed": [prompt.uuid]})),
                         asyncio.ensure_future(b.workers.deliveries(session.id, {"received": [prompt.uuid]}))]
                await queued(holder, tasks, 2)
                await holder.commit()
        finally:
            await engine.dispose()
        await asyncio.gather(*tasks)
        async with b.store.read() as tx:
            state = (await tx.conn.execute(sa.select(t.events.c.delivery).where(
                t.events.c.uuid == prompt.uuid))).scalar_one()
        assert state == "processed"  # whichever move the database let through first


async def test_instances_starting_together_on_an_empty_database_set_it_up_once(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    contexts = [ServerContext.build(Config(data_dir=tmp_path / name, database_url=postgres_url)) for name in "abc"]
    try:
        await asyncio.gather(*(ctx.store.open() for ctx in contexts))  # migrations, one after the other
        await asyncio.gather(*(ctx.auth.open() for ctx in contexts))  # the first signing key, once
        owners = await asyncio.gather(*(ctx.auth.bootstrap() for ctx in contexts))  # the first owner, once
        assert len({owner.id for _org, owner, _created in owners}) == 1
        assert sorted(created for _org, _owner, created in owners) == [False, False, True]
        kids = {ctx.auth.keys.active_kid for ctx in contexts if ctx.auth.keys is not None}
        async with contexts[0].store.read() as tx:
            keys = await tx.keys.all()
        assert len(keys) == 1 and kids == {keys[0].kid}  # a token one mints, every other verifies
    finally:
        for ctx in contexts:
            await ctx.broker.close()
            await ctx.store.close()


async def insert_held(url: str, table: sa.Table, row: dict[str, Any],
                      writes: list[Awaitable[T]]) -> list[Any]:
    """A third writer inserts ``row`` and keeps its transaction open, so both ``writes`` pass their
    "not there yet" check and then queue on the unique index; it rolls back, and the two decide
    between themselves in the database. Their results (an exception is a result)."""
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as holder:
            await holder.begin()
            await holder.execute(table.insert(), row)
            tasks = [asyncio.ensure_future(w) for w in writes]
            await queued(holder, tasks, len(writes))
            await holder.rollback()
    finally:
        await engine.dispose()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_one_new_member_email_added_on_two_instances_is_one_person_and_a_conflict(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        email = "carol@example.com"
        third = {"id": "user_third", "org_id": principal.org_id, "email": email, "role": "member",
                 "password_hash": None, "created_at": time.time()}
        results = await insert_held(postgres_url, t.users, third, [
            a.accounts.add_member(principal, email, "member"), b.accounts.add_member(principal, email, "viewer")])
        added = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(added) == 1 and len(refused) == 1, results
        assert isinstance(refused[0], Conflict) and "already has an account" in refused[0].message, refused
        async with a.store.read() as tx:
            user = await tx.users.by_email(email)
        assert user is not None and user.id == added[0][0].id  # the one that won is the one stored


async def test_one_transcript_row_posted_to_two_instances_is_stored_once(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="code")
        row_uuid = str(uuid.uuid4())

        def row(text: str) -> InternalEvent:
            return InternalEvent(0, session.id, f"ie_{uuid.uuid4().hex}", row_uuid, "assistant",
                                 orjson.dumps({"text": text}).decode(), False, None, time.time())

        third = {"session_id": session.id, "event_id": "ie_third", "uuid": row_uuid, "event_type": "assistant",
                 "payload": "{}", "is_compaction": False, "agent_id": None, "created_at": time.time()}
        results = await insert_held(postgres_url, t.internal_events, third, [
            a.workers.append_internal([row("a")]), b.workers.append_internal([row("b")])])
        assert not [r for r in results if isinstance(r, BaseException)], results  # idempotent, never a 500
        rows, _more = await b.workers.internal_events(session.id, 0, False)
        assert [r.uuid for r in rows] == [row_uuid]


async def test_one_environment_re_attached_on_two_instances_at_once_stays_one(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    async with two_instances(postgres_url, tmp_path) as (a, b):
        principal = await owner(a)
        fields = Registration("bridge", "host", "/tmp/p", None, None, 1, "claude_code", {})
        env_id, _ = await a.environments.register(principal, fields, None)
        results = await asyncio.gather(a.environments.register(principal, fields, env_id),
                                       b.environments.register(principal, fields, env_id))
        assert [r[0] for r in results] == [env_id, env_id]  # docs/protocol.md §4.1: the same id back
        async with a.store.read() as tx:
            envs = await tx.environments.of_org(principal.org_id)
            stored = await tx.environments.get(env_id)
        assert [e.id for e in envs] == [env_id] and stored is not None
        # the registration the database ordered last holds the secret (as when they come one after the other)
        assert stored.secret_hash in {hash_secret(secret) for _id, secret in results}


async def test_concurrent_appends_on_one_instance_fan_out_in_sequence_order(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    """The writes of one instance run side by side on PostgreSQL (store.py); their after-commit
    fan-out still goes out in sequence order, whatever order the database granted the row in
    (store/commit_order.py)."""
    async with two_instances(postgres_url, tmp_path) as (a, _b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="session")
        sub = a.broker.subscribe(client_topic(session.id), maxsize=1000)
        writes = [a.log.append(session.id, [client_event(f"e{i}")]) for i in range(12)]
        results = await race(postgres_url, session.id, *writes)
        assert not [r for r in results if isinstance(r, BaseException)], results
        seen = []
        while len(seen) < 12:
            item = await sub.get(timeout=10)
            if isinstance(item, StoredEvent):
                seen.append(item.seq)
        assert seen == list(range(1, 13))
        assert len(a.store._commit_order) == 0  # every turn ended


async def test_after_commit_callbacks_of_one_session_run_in_commit_order(
        postgres_url: str, tmp_path: pathlib.Path) -> None:
    """The first writer's callbacks are still running when the second writer, granted the row after
    the first's commit, commits: the second's callbacks wait for them (store/commit_order.py)."""
    async with two_instances(postgres_url, tmp_path) as (a, _b):
        principal = await owner(a)
        session = await a.sessions.create(principal, NewSession(), kind="session")
        ran: list[str] = []
        started: list[asyncio.Future[None]] = []
        second_locked, second_ran = asyncio.Event(), asyncio.Event()

        async def first_callback() -> None:
            await second_locked.wait()
            with contextlib.suppress(TimeoutError):  # it must not come; without the order it would
                await asyncio.wait_for(second_ran.wait(), 0.5)
            ran.append("first")

        def second_callback() -> None:
            ran.append("second")
            second_ran.set()

        async def first() -> None:
            async with a.store.write() as tx:
                await tx.sessions.lock(session.id)
                tx.after_commit(first_callback)
                started.append(asyncio.ensure_future(second()))
                await queued_on_instance(a)

        async def second() -> None:
            async with a.store.write() as tx:
                await tx.sessions.lock(session.id)  # granted once the first committed
                second_locked.set()
                tx.after_commit(second_callback)

        await asyncio.wait_for(first(), 10)
        await asyncio.wait_for(started[0], 10)
        assert ran == ["first", "second"]
        assert len(a.store._commit_order) == 0  # every turn ended


async def queued_on_instance(ctx: ServerContext) -> None:
    """Until a backend of this database waits for a lock (polled: the condition is in PostgreSQL)."""
    async with ctx.store.read() as tx:
        deadline = time.monotonic() + 10
        while await lock_waiters(tx.conn) < 1:
            assert time.monotonic() < deadline, "the second writer never queued for the row"
            await asyncio.sleep(0.01)
