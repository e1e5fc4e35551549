"""What ``--redis-url`` adds to one server instance: the bus broker and the shared rate limits.

Without a Redis URL nothing here is built: the in-process broker and the local rate limiters
serve one instance, exactly as before. With one, :func:`build` makes the Redis client, the
:class:`~tether.server.broker.redis.RedisBroker` (revocations relayed both ways through
server/streams.py) and the two shared limiters; :meth:`ScaleOut.run` is their background work for
the server's lifetime (one task in the app's task group) and :meth:`ScaleOut.close` sends what
is still queued and closes the client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from tether.server.auth.shared_ratelimit import SharedRateLimiter
from tether.server.broker.redis import RedisBroker, send_once
from tether.server.broker.wire import KEYS_CHANGED
from tether.server.clock import now
from tether.server.config import Config
from tether.server.metrics import Metrics
from tether.server.redis_client import connect
from tether.server.streams import OpenStreams

CLOSE_DEADLINE_S = 2.0


@dataclass
class ScaleOut:
    redis: Redis
    broker: RedisBroker
    limiter: SharedRateLimiter
    login_limiter: SharedRateLimiter

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Until :meth:`stop` (not cancelled: a redis-py call cancelled in flight can hang its pool)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.broker.run(), name="bus")
            tg.create_task(self.limiter.run(now, self._stop), name="rate-limit-sync")
            tg.create_task(self.login_limiter.run(now, self._stop), name="login-limit-sync")

    def stop(self) -> None:
        """``run`` ends within one bus read (broker/redis.py BLOCK_MS)."""
        self._stop.set()
        self.broker.stop()

    async def close(self) -> None:
        """After ``run`` ended: the last notices and revocations out, then disconnect."""
        try:
            async with asyncio.timeout(CLOSE_DEADLINE_S):
                await self.broker.flush()
        except TimeoutError:
            pass  # (other instances re-read the log on the gap; revocations lapse with the tokens)
        await self.redis.aclose()


def build(config: Config, streams: OpenStreams, metrics: Metrics) -> ScaleOut | None:
    if not config.redis_url:
        return None
    redis = connect(config.redis_url)
    broker = RedisBroker(redis, queue_size=config.broker_queue_size, prefix=config.redis_prefix,
                         poll_s=config.bus_poll_s, metrics=metrics)
    broker.on_control = streams.apply
    streams.relay = broker.send_control
    limits = config.limits
    return ScaleOut(
        redis=redis, broker=broker,
        limiter=SharedRateLimiter(limits.rate_per_second, limits.rate_burst, redis, "api", prefix=config.redis_prefix),
        login_limiter=SharedRateLimiter(limits.login_per_minute / 60.0, limits.login_per_minute, redis, "login",
                                        prefix=config.redis_prefix),
    )


async def announce_keys_changed(config: Config) -> bool:
    """Tell the running instances that the signing keys changed (`tether admin rotate-keys` /
    `retire-key`): they re-read them at once instead of within ``key_refresh_s``. False without
    ``--redis-url`` or when Redis did not answer."""
    if not config.redis_url:
        return False
    redis = connect(config.redis_url)
    try:
        return await send_once(redis, config.redis_prefix, [KEYS_CHANGED])
    finally:
        await redis.aclose()
