"""The v2, env-less REPL bridge core (docs/protocol.md §12.3, §12.9; ``initEnvLessBridgeCore``).

Start: create a code session (C1, ``tags: ["ccr-mirror"]`` in mirror mode) and register as its
worker (C2: a worker token, its lifetime and a new worker epoch), both with the init retry
(3 attempts, 500 ms doubling ±25 %, at most 4 s). The transport is SSE + ``CCRClient`` with that
epoch (no ``/worker/register``); in mirror mode it only writes and heartbeats.

A fresh worker token is fetched ``expires_in − token_refresh_buffer`` (5 min, at least 30 s) after
the last: the login is refreshed, C2 called again, and the transport rebuilt on the new token and
epoch, resuming the event stream after the last sequence number it saw; meanwhile writes queue
behind the gate. An event stream refused with 401/403, or the CCR client stopping on an expired
token (4003, e.g. after the laptop slept past the token's expiry), takes the same path. One recovery at a time:
two concurrent C2 calls would bump the epoch twice and the first rebuild would be superseded.
Any other permanent close (4090 epoch superseded, 4091 init failed, 4092 the stream gave up, 4003,
4001) fails the bridge: "Transport closed (code X)".

Teardown: a last ``result`` (worker status ``idle``), archive the session (1.5 s), close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tether.bridge.repl.core import InitFailed, ReplBridgeCore
from tether.client.api import WorkerCredentials
from tether.client.ccr import CCRConfig
from tether.client.factory import code_session_url
from tether.client.transport import TransportClosed
from tether.client.v2 import V2Config, V2Transport
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, TetherError
from tether.protocol.ccr import CLOSE_UNAUTHORIZED
from tether.protocol.ids import to_compat_session_id
from tether.protocol.repl_bridge import MIRROR_TAG
from tether.protocol.repl_config import EnvLessConfig, init_retry, refresh_delay

log = logging.getLogger("tether.bridge.repl.v2")
AUTH_CLOSE_CODES = frozenset({401, 403, CLOSE_UNAUTHORIZED})
"""The stream refused the token (401/403), or the CCR client stopped on it (4003): rebuild."""
T = TypeVar("T")


class EnvLessBridge(ReplBridgeCore):
    kind = "v2"

    def __init__(self, *args: Any, env_less: EnvLessConfig, **kwargs: Any) -> None:
        kwargs.setdefault("dedup_capacity", env_less.uuid_dedup_buffer_size)
        super().__init__(*args, **kwargs)
        self.env_less = env_less
        self.code_session_id: str | None = None
        self._jwt: str | None = None
        self.epoch: int | None = None
        self._refresh_at: float | None = None
        self._recover = asyncio.Event()
        self._recovering = False
        self.rebuilds = 0

    # ---- start -----------------------------------------------------------------------------------

    async def _start(self) -> None:
        title = self.titles.title if self.titles.explicit else None
        tags = [MIRROR_TAG] if self.mirror else None
        try:
            self.code_session_id = await self._retrying(lambda: self.api.create_code_session(title=title, tags=tags))
        except TetherError as exc:
            raise InitFailed(f"creating the session failed: {exc.message}") from None
        self.session_id = to_compat_session_id(self.code_session_id)
        try:
            creds = await self._retrying(lambda: self.bridge_worker())
        except TetherError as exc:
            await self._archive()
            raise InitFailed(f"registering as its worker failed: {exc.message}") from None
        await self._push_initial_title()
        self._use(creds)
        self._set_state("ready")

    async def bridge_worker(self) -> WorkerCredentials:
        assert self.code_session_id is not None
        return await self.api.bridge_code_session(self.code_session_id)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """The env-less init retry: unreachable server, 5xx and 429 are retried; other answers are final."""
        backoff = init_retry(self.env_less)
        while True:
            try:
                return await call()
            except BridgeFatalError:
                raise
            except (ApiUnavailable, ApiError) as exc:
                decision = backoff.failure(self._clock(), self._rnd, getattr(exc, "retry_after", None))
                if decision.delay is None:
                    raise
                log.info("retrying in %.1f s: %s", decision.delay, exc.message)
                await asyncio.sleep(decision.delay)

    def _use(self, creds: WorkerCredentials) -> None:
        """Serve the session with a transport on these worker credentials."""
        assert self.code_session_id is not None
        self._jwt, self.epoch = creds.worker_jwt, creds.worker_epoch
        cfg = self.env_less
        ccr = CCRConfig(heartbeat_interval=cfg.heartbeat_interval_ms / 1000.0,
                        heartbeat_jitter=min(cfg.heartbeat_jitter_fraction, 0.99),
                        request_timeout=cfg.http_timeout_ms / 1000.0)
        url = code_session_url(self.api.server, self.code_session_id)
        transport = V2Transport(url, self._current_jwt, epoch=creds.worker_epoch, from_sequence_num=self._sequence,
                                config=V2Config(ccr=ccr, read_stream=not self.mirror))
        self._install(transport)
        delay = refresh_delay(creds.expires_in, cfg.token_refresh_buffer_ms / 1000.0, self.config.token_refresh_floor_s)
        self._refresh_at = self._clock() + delay
        log.info("worker epoch %d; next token refresh in %.0f s", creds.worker_epoch, delay)

    def _current_jwt(self) -> str:
        if self._jwt is None:
            raise RuntimeError("no worker token yet")
        return self._jwt  # kept out of the process environment (docs/protocol.md §12.3 item 4)

    # ---- refresh and recovery --------------------------------------------------------------------

    def _loops(self) -> list[tuple[str, Any]]:
        return [("token refresh", self._refresh_loop())]

    async def _refresh_loop(self) -> None:
        while True:
            wait = None if self._refresh_at is None else max(0.0, self._refresh_at - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._recover.wait()
            reason = "JWT expired — refreshing" if self._recover.is_set() else "refreshing the worker token"
            self._recover.clear()
            await self._rebuild(reason)

    async def _rebuild(self, reason: str) -> None:
        """Force a login refresh, C2 again, a new transport from the old one's sequence number."""
        if self._recovering:
            return  # one recovery at a time: a second C2 would bump the epoch again
        self._recovering = True
        self._set_state("reconnecting", reason)
        try:
            await self._drop_transport()
            with contextlib.suppress(TetherError):
                await self.api.force_refresh()
            creds = await self._retrying(lambda: self.bridge_worker())
        except TetherError as exc:
            self._fail(f"could not refresh the worker token: {exc.message}")
            return
        finally:
            self._recovering = False
        self.rebuilds += 1
        self._use(creds)

    async def _transport_lost(self, info: TransportClosed) -> None:
        if info.code in AUTH_CLOSE_CODES:  # the worker token expired (a long sleep): a fresh one cures it
            self._recover.set()  # the refresh loop rebuilds (one at a time)
            return
        if self._recovering:
            return
        self._fail(f"Transport closed (code {info.code}){': ' + info.detail if info.detail else ''}")

    # ---- teardown --------------------------------------------------------------------------------

    async def _teardown(self) -> None:
        await self._close_with_result()
        await self._archive()
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
