"""Per-credential rate limits shared by every server instance (``--redis-url``).

A request is never held up by a Redis round trip: ``check`` stays the local, synchronous token
bucket of :class:`~tether.server.auth.ratelimit.RateLimiter`, and records what it let through.
Every ``sync_s`` one Lua call charges what this instance spent to one bucket per key in Redis
(the same refill rule, on Redis's clock) and brings back what each of those buckets holds; the
local buckets are set to that (:meth:`RateLimiter.settle`), less what was spent meanwhile. So
all instances draw on one bucket per credential: between two syncs an instance can spend at most
what its copy held, and the debt is charged to everyone right after.

Redis unreachable: the local buckets go on alone (each instance limits by itself, as with one
instance) and what was spent meanwhile is not charged later — an outage must not lock everybody
out once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tether.server.auth.ratelimit import RateLimiter

log = logging.getLogger("tether.server.ratelimit")

SYNC_S = 0.1
MAX_SYNC_KEYS = 1000  # keys charged per Lua call

# KEYS: the buckets; ARGV: rate, burst, then what was spent per key. Returns each bucket's tokens
# (strings: Lua numbers would come back truncated to integers).
_CHARGE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate) - tonumber(ARGV[i + 2])
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(((burst - tokens) / rate + 1) * 1000))
  out[i] = tostring(tokens)
end
return out
"""


class SharedRateLimiter(RateLimiter):
    def __init__(self, rate_per_second: float, burst: int, redis: Redis, name: str, *, prefix: str = "tether",
                 sync_s: float = SYNC_S, max_keys: int = 100_000) -> None:
        super().__init__(rate_per_second, burst, max_keys)
        self.redis = redis
        self.key_prefix = f"{prefix}:rl:{name}:"
        self.sync_s = sync_s
        self._spent: dict[str, float] = {}  # let through here since the last sync
        self._charge: Any = redis.register_script(_CHARGE)
        self.shared: bool | None = None  # the last sync reached Redis (None: no sync yet)

    def check(self, key: str, now: float, cost: float = 1.0) -> int:
        wait = super().check(key, now, cost)
        if self.rate > 0 and (key in self._spent or len(self._spent) < self.max_keys):
            # a refused request costs nothing but brings the key into the next sync: a client
            # waiting here learns when the shared bucket allows it again
            self._spent[key] = self._spent.get(key, 0.0) + (cost if wait == 0 else 0.0)
        return wait

    async def sync(self, now: float) -> bool:
        """Charge what was spent here to the shared buckets and adopt their state; False when
        Redis could not be reached (the local buckets stand alone meanwhile)."""
        if not self._spent or self.rate <= 0:
            return True
        spent, self._spent = self._spent, {}
        items = list(spent.items())
        try:
            for start in range(0, len(items), MAX_SYNC_KEYS):
                chunk = items[start:start + MAX_SYNC_KEYS]
                tokens = await self._charge(keys=[self.key_prefix + key for key, _ in chunk],
                                            args=[repr(self.rate), repr(self.burst), *(repr(c) for _, c in chunk)])
                for (key, _), held in zip(chunk, tokens, strict=True):
                    self.settle(key, float(held) - self._spent.get(key, 0.0), now)
        except (RedisError, OSError, TimeoutError) as exc:
            if self.shared is not False:
                log.warning("rate limits: Redis unreachable (%s); each instance limits by itself until it is back", exc)
            self.shared = False
            return False
        if self.shared is not True:
            log.info("rate limits: shared through Redis (%s)", self.key_prefix)
        self.shared = True
        return True

    async def run(self, clock: Callable[[], float], stop: asyncio.Event) -> None:
        """Sync every ``sync_s`` until ``stop`` (never cancelled mid-call: broker/redis.py)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sync_s)
            await self.sync(clock())
