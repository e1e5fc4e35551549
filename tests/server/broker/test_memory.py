"""The in-process broker: bounded subscriber queues, overflow, and the synchronous ``direct``
consumer that is asked only while nothing is queued (so items never overtake each other)."""

from __future__ import annotations

import asyncio

import pytest

from tether.server.broker import REVOKED, SERVER_CLOSING, Overflowed, Topic
from tether.server.broker.memory import Broker

T: Topic[int] = Topic("t")

pytestmark = pytest.mark.anyio


def test_the_queue_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Broker(0)
    with pytest.raises(ValueError, match="at least 1"):
        Broker(-5)


async def test_direct_takes_items_only_while_nothing_is_queued() -> None:
    broker = Broker(8)
    taken: list[int] = []
    accept = True

    def direct(item: object) -> bool:
        if accept:
            taken.append(int(str(item)))
        return accept

    with broker.subscribe(T) as sub:
        sub.direct = direct
        broker.publish(T, 1)
        broker.publish(T, 2)
        accept = False  # e.g. the socket's transport asked to pause
        broker.publish(T, 3)
        accept = True  # writable again, but 3 is still queued: 4 must queue behind it
        broker.publish(T, 4)
        assert taken == [1, 2]
        assert [await sub.get(1), await sub.get(1)] == [3, 4]
        broker.publish(T, 5)  # the queue is empty again: direct takes it
        assert taken == [1, 2, 5]


async def test_a_full_queue_overflows_once_its_backlog_is_read() -> None:
    broker = Broker(2)
    with broker.subscribe(T) as sub:
        for i in range(5):
            broker.publish(T, i)
        assert [sub.get_nowait(), sub.get_nowait()] == [0, 1]
        with pytest.raises(Overflowed):
            await sub.get(1)
        sub.reset()
        broker.publish(T, 9)
        assert await asyncio.wait_for(sub.get(), 1) == 9


async def test_interrupts_skip_direct_and_overflow_a_full_queue() -> None:
    broker = Broker(2)
    with broker.subscribe(T) as sub, broker.subscribe(Topic[int]("other")) as other:
        sub.direct = lambda item: True  # takes every published item
        broker.publish(T, 1)
        broker.broadcast(SERVER_CLOSING)  # never offered to direct: it is queued for every subscriber
        assert await sub.get(1) is SERVER_CLOSING and await other.get(1) is SERVER_CLOSING
        sub.direct = None
        broker.publish(T, 2)
        broker.publish(T, 3)
        sub.interrupt(REVOKED)  # the queue is full: the subscriber overflows instead
        assert [sub.get_nowait(), sub.get_nowait()] == [2, 3]
        with pytest.raises(Overflowed):
            sub.get_nowait()
    assert broker.subscriber_count(T) == 0, "leaving the block unsubscribes"
