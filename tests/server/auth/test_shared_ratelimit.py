"""Rate limits shared by server instances through Redis (a real one): what one instance spends,
the others stop allowing after a sync; without Redis each instance limits by itself."""

from __future__ import annotations

import uuid

import pytest
from tests.support.services import RedisProcess

from tether.server.auth.shared_ratelimit import SharedRateLimiter
from tether.server.redis_client import connect

pytestmark = pytest.mark.anyio


def pair(url: str, rate: float = 1.0, burst: int = 5) -> tuple[SharedRateLimiter, SharedRateLimiter]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    return (SharedRateLimiter(rate, burst, connect(url), "api", prefix=prefix),
            SharedRateLimiter(rate, burst, connect(url), "api", prefix=prefix))


async def test_what_one_instance_spends_the_other_no_longer_allows(shared_redis_url: str) -> None:
    a, b = pair(shared_redis_url)
    try:
        now = 1000.0
        assert all(a.check("token:t", now) == 0 for _ in range(4))
        assert await a.sync(now) and await b.sync(now)
        assert b.check("token:t", now) == 0  # (b had not spent; its first sync charged nothing)
        assert await b.sync(now)
        assert 0 < b.tokens("token:t", now) < 1
        assert b.check("token:t", now) >= 1  # the one bucket is empty: wait, as with one instance
        # a's copy still holds the token it had at its last sync: it may spend it (at most that
        # between two syncs), and the debt is everyone's after the next one
        assert a.check("token:t", now) == 0
        assert await a.sync(now) and await b.sync(now)  # (b's refused check brings the key into its sync)
        assert a.tokens("token:t", now) < 0 and b.tokens("token:t", now) < 0
        assert a.check("token:t", now) >= 1 and b.check("token:t", now) >= 1
        assert a.check("token:other", now) == 0  # keys are apart
    finally:
        await a.redis.aclose()
        await b.redis.aclose()


async def test_spending_between_syncs_is_charged_to_everyone(shared_redis_url: str) -> None:
    a, b = pair(shared_redis_url, rate=0.001, burst=3)
    try:
        now = 50.0
        assert all(a.check("k", now) == 0 for _ in range(3))
        assert all(b.check("k", now) == 0 for _ in range(3))  # each spent its copy before a sync
        assert await a.sync(now) and await b.sync(now)
        assert b.tokens("k", now) < -2  # in debt: together they spent 6 of 3
        assert a.check("k", now) >= 1  # refused by a's own copy; the key is in a's next sync
        assert await a.sync(now)
        assert a.tokens("k", now) < -2
        assert a.check("k", now) > 1000  # the debt is paid off at the shared rate
    finally:
        await a.redis.aclose()
        await b.redis.aclose()


async def test_without_redis_each_instance_limits_by_itself(redis_process: RedisProcess) -> None:
    a, b = pair(redis_process.url, burst=2)
    try:
        assert a.check("k", 10.0) == 0 and await a.sync(10.0) and a.shared
        redis_process.stop()
        assert a.check("k", 10.0) == 0
        assert a.check("k", 10.0) >= 1  # the local bucket still limits
        assert not await a.sync(10.0) and a.shared is False
        assert b.check("k", 10.0) == 0 and not await b.sync(10.0)
        redis_process.start()
        assert await a.sync(10.0) is True  # nothing new spent: nothing to charge
        assert b.check("k", 10.0) == 0 and await b.sync(10.0) and b.shared
        # the outage's spending was not charged (and this Redis came back empty): b's one token only
        assert b.tokens("k", 10.0) == 1.0
    finally:
        await a.redis.aclose()
        await b.redis.aclose()
