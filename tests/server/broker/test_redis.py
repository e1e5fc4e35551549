"""The Redis broker between server instances, on a real Redis (scripts/services, or one of the
test's own that it stops and starts).

Two or three ``RedisBroker`` objects on one Redis stand for instances: what one publishes after a
commit reaches the others' subscriptions, decoded once per instance; worker streams take each
session's inbound notices in order (a hole or a late notice makes them re-read the log); work
wake-ups, session closings and revocations cross over; losing Redis makes every reader re-read
the database every ``poll_s`` until Redis is back, and nothing queued meanwhile that the log does
not hold (revocations, closings) is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from tests.support.services import RedisProcess
from tests.support.waiting import eventually

from tether.server.broker import (
    WORK_QUEUED,
    Live,
    Overflowed,
    SessionClosed,
    Subscription,
    WorkQueued,
    client_topic,
    inbound_topic,
    work_topic,
)
from tether.server.broker.redis import RedisBroker, send_once
from tether.server.broker.wire import KEYS_CHANGED, KeyClosed
from tether.server.redis_client import connect
from tether.server.store.records import StoredEvent
from tether.server.streams import Holder, OpenStreams

pytestmark = pytest.mark.anyio

BODY = "cse_bus"


def event(seq: int, *, inbound: bool = False, body: str = BODY) -> StoredEvent:
    payload = {"type": "user" if inbound else "assistant", "uuid": f"u{seq}"}
    return StoredEvent(body, seq, f"ev{seq}", f"u{seq}", "client" if inbound else "worker", payload["type"],
                       orjson.dumps(payload).decode(), 1700000000.0 + seq, "pending" if inbound else None)


def publish(broker: RedisBroker, ev: StoredEvent) -> None:
    """As the hub does after a commit: the subscribers' half, then the workers' half."""
    broker.publish(client_topic(ev.session_id), ev)
    if ev.delivery is not None:
        broker.publish(inbound_topic(ev.session_id), ev)


@contextlib.asynccontextmanager
async def instances(url: str, count: int, poll_s: float = 1.0) -> AsyncIterator[list[RedisBroker]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    brokers = [RedisBroker(connect(url), prefix=prefix, poll_s=poll_s) for _ in range(count)]
    tasks = [asyncio.create_task(b.run()) for b in brokers]
    try:
        await eventually(lambda: all(b.live for b in brokers), message="every instance following the bus")
        yield brokers
    finally:
        for b in brokers:
            b.stop()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        for b in brokers:
            with contextlib.suppress(Exception):
                await b.redis.delete(b.stream)
            await b.redis.aclose()


async def take(sub: Subscription[Any], count: int, timeout: float = 10.0) -> list[Any]:
    items = []
    for _ in range(count):
        items.append(await sub.get(timeout))
    return items


async def test_events_reach_the_other_instance_in_order_decoded_once(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 2) as (a, b):
        with b.subscribe(client_topic(BODY)) as s1, b.subscribe(client_topic(BODY)) as s2, \
                a.subscribe(client_topic(BODY)) as local:
            for seq in range(1, 51):
                publish(a, event(seq))
            got1, got2 = await take(s1, 50), await take(s2, 50)
            assert [e.seq for e in got1] == list(range(1, 51))
            assert all(x is y for x, y in zip(got1, got2, strict=True))  # one decode for both subscribers
            assert got1[7].client_frame == event(8).client_frame
            assert [e.seq for e in await take(local, 50)] == list(range(1, 51))  # at once, locally
            assert local.queue.empty() and s1.queue.empty()  # and never a second time from the bus


async def test_live_frames_work_wakeups_and_closings_cross_over(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 2) as (a, b):
        frame = Live(b'{"type":"session_update","session_id":"session_bus","status":"idle"}')
        with b.subscribe(client_topic(BODY)) as clients, b.subscribe(inbound_topic(BODY)) as workers, \
                b.subscribe(work_topic("env_1"), maxsize=16) as poll:
            a.publish(client_topic(BODY), frame)
            a.publish(work_topic("env_1"), WORK_QUEUED)
            a.publish(inbound_topic(BODY), SessionClosed("archived"))
            got = await clients.get(10)
            assert isinstance(got, Live) and got.frame == frame.frame
            assert isinstance(await poll.get(10), WorkQueued)
            assert await workers.get(10) == SessionClosed("archived")


async def test_worker_streams_take_inbound_notices_in_session_order(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 3) as (a, b, c):
        with c.subscribe(inbound_topic(BODY)) as workers, c.subscribe(client_topic(BODY)) as clients:
            publish(a, event(1, inbound=True))
            with pytest.raises(Overflowed):  # first notice of a session here: re-read the log once
                await workers.get(10)
            workers.reset()
            publish(a, event(2, inbound=True))
            assert (await workers.get(10)).seq == 2
            publish(b, event(4, inbound=True))  # 3's notice has not come: re-read, do not skip it
            with pytest.raises(Overflowed):
                await workers.get(10)
            workers.reset()
            publish(a, event(3, inbound=True))  # late: the re-read found it in the log
            publish(a, event(5, inbound=True))
            assert (await workers.get(10)).seq == 5
            assert workers.queue.empty()
            # subscribers get every notice but the late one (their cursor spots holes itself)
            assert [e.seq for e in await take(clients, 4)] == [1, 2, 4, 5]


async def test_revocations_close_streams_on_every_instance(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 2) as (a, b):
        streams_a, streams_b = OpenStreams(), OpenStreams()
        for broker, streams in ((a, streams_a), (b, streams_b)):
            broker.on_control = streams.apply
            streams.relay = broker.send_control
        woken: list[str] = []
        token_holder = Holder(lambda: woken.append("token"), role="member")
        owner_holder = Holder(lambda: woken.append("owner"), role="owner")
        with streams_b.hold(token_holder, ["token:t1"]), streams_b.hold(owner_holder, ["user:u1"]):
            assert streams_a.close_key("token:t1", 4003, "token revoked") == 0  # none open on A itself
            await eventually(lambda: token_holder.closed is not None, message="B's stream revoked")
            assert token_holder.closed == (4003, "token revoked")
            streams_a.role_changed("u1", "member", 4003, "role changed")
            await eventually(lambda: owner_holder.closed is not None, message="B's owner stream revoked")
            assert woken == ["token", "owner"]


async def test_a_gap_on_the_bus_makes_every_reader_re_read(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 2) as (a, b):
        with b.subscribe(client_topic(BODY)) as clients, b.subscribe(work_topic("env_1")) as poll:
            publish(a, event(1))
            assert (await clients.get(10)).seq == 1
            # a publisher whose entry 2 never arrived (trimmed, or its send failed)
            await a.redis.xadd(a.stream, {"p": a.publisher, "n": 3, "d": b"[]"})
            with pytest.raises(Overflowed):
                await clients.get(10)
            assert isinstance(await poll.get(10), WorkQueued)  # long polls look again too
            assert b.metrics.counters["bus_rereads_total"] >= 2  # (the first at start)


async def test_foreign_entries_on_the_stream_are_skipped(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 2) as (a, b):
        with b.subscribe(client_topic(BODY)) as clients:
            await a.redis.xadd(a.stream, {"p": "someone", "n": 1, "d": b"not json"})
            await a.redis.xadd(a.stream, {"x": "y"})
            publish(a, event(1))
            assert (await clients.get(10)).seq == 1
            assert b.metrics.counters["bus_bad_entries_total"] == 2


async def test_losing_redis_falls_back_to_polling_and_recovers(redis_process: RedisProcess) -> None:
    async with instances(redis_process.url, 2, poll_s=0.2) as (a, b):
        streams_b = OpenStreams()
        b.on_control = streams_b.apply
        holder = Holder(lambda: None)
        with b.subscribe(client_topic(BODY)) as clients, b.subscribe(inbound_topic(BODY)) as workers, \
                streams_b.hold(holder, ["token:t9"]):
            redis_process.stop()
            await eventually(lambda: not a.live and not b.live, message="both instances noticing")
            # polling: every reader is sent back to the database, again and again
            for _ in range(2):
                with pytest.raises(Overflowed):
                    await clients.get(5)
                clients.reset()
            with pytest.raises(Overflowed):
                await workers.get(5)
            workers.reset()
            # made on A while Redis is down: the log does not hold these, so they wait for Redis
            a.send_control(KeyClosed("token:t9", 4003, "revoked"))
            a.publish(inbound_topic(BODY), SessionClosed("archived"))
            assert holder.closed is None

            redis_process.start()
            await eventually(lambda: a.live and b.live, timeout=20, message="both instances following again")
            await eventually(lambda: holder.closed is not None, timeout=20, message="the revocation delivered")
            ended = None
            while ended is None:  # (re-read wake-ups may come first)
                try:
                    item = await workers.get(10)
                except Overflowed:
                    workers.reset()
                    continue
                ended = item if isinstance(item, SessionClosed) else None
            assert ended == SessionClosed("archived")
            clients.reset()
            publish(a, event(7))
            while True:  # live again: the event itself arrives (after any last re-read wake-ups)
                try:
                    got = await clients.get(10)
                except Overflowed:
                    clients.reset()
                    continue
                break
            assert got.seq == 7
            assert b.metrics.counters["bus_polls_total"] >= 2


async def test_a_keys_changed_notice_from_outside_reaches_every_instance(shared_redis_url: str) -> None:
    async with instances(shared_redis_url, 2) as (a, b):
        told: list[str] = []
        a.on_keys_changed = lambda: told.append("a")
        b.on_keys_changed = lambda: told.append("b")
        rereads = [x.metrics.counters.get("bus_rereads_total", 0) for x in (a, b)]
        # `tether admin rotate-keys` sends one entry of a publisher of its own, then exits
        redis = connect(shared_redis_url)
        try:
            assert await send_once(redis, a.stream.removesuffix(":bus"), [KEYS_CHANGED])
        finally:
            await redis.aclose()
        await eventually(lambda: sorted(told) == ["a", "b"], message="both instances told")
        a.announce_keys_changed()  # and one instance's own change reaches the other, not itself
        await eventually(lambda: told.count("b") == 2, message="B told by A")
        assert told.count("a") == 1
        assert [x.metrics.counters.get("bus_rereads_total", 0) for x in (a, b)] == rereads  # no gap seen
