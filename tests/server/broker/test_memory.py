"""The in-process broker: bounded subscriber queues, overflow, and the synchronous ``direct``
consumer that is asked only while nothing is queued (so items never overtake each other)."""

from __future__ import annotations

import asyncio

import pytest

from tether.server.broker import Overflowed
from tether.server.broker.memory import Broker

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

    with broker.subscribe("t") as sub:
        sub.direct = direct
        broker.publish("t", 1)
        broker.publish("t", 2)
        accept = False  # e.g. the socket's transport asked to pause
        broker.publish("t", 3)
        accept = True  # writable again, but 3 is still queued: 4 must queue behind it
        broker.publish("t", 4)
        assert taken == [1, 2]
        assert [await sub.get(1), await sub.get(1)] == [3, 4]
        broker.publish("t", 5)  # the queue is empty again: direct takes it
        assert taken == [1, 2, 5]


async def test_a_full_queue_overflows_once_its_backlog_is_read() -> None:
    broker = Broker(2)
    with broker.subscribe("t") as sub:
        for i in range(5):
            broker.publish("t", i)
        assert [sub.get_nowait(), sub.get_nowait()] == [0, 1]
        with pytest.raises(Overflowed):
            await sub.get(1)
        sub.reset()
        broker.publish("t", 9)
        assert await asyncio.wait_for(sub.get(), 1) == 9
