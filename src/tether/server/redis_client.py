"""The one way the server opens Redis (``--redis-url``): short timeouts, no hidden retries.

A call that fails must fail fast: the broker then falls back to polling the database and the
rate limiters to their local buckets (broker/redis.py, auth/shared_ratelimit.py), and they retry
on their own schedule — redis-py's default retry-with-backoff would stall them for seconds.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_S = 2.0
# above the bus reader's XREAD BLOCK (broker/redis.py), which holds a connection that long
SOCKET_TIMEOUT_S = 5.0


def connect(url: str) -> Redis:
    """A client for ``url`` (redis://, rediss://, unix://); connections open on first use."""
    return Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S,
                          retry=Retry(NoBackoff(), 0), health_check_interval=0)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and ``--check``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if ':' in creds else user}@{host}"
