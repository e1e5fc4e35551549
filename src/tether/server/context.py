"""Everything a request handler needs, built once per app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tether.protocol.body_budget import BodyBudget
from tether.server.auth.ratelimit import RateLimiter
from tether.server.auth.service import Auth
from tether.server.broker import SERVER_CLOSING, Broker
from tether.server.broker.wire import KeyClosed
from tether.server.config import Config
from tether.server.delivery import DeliveryRecorder
from tether.server.hub import Hub
from tether.server.metrics import Metrics
from tether.server.service.accounts import Accounts
from tether.server.service.dispatch import Dispatcher
from tether.server.service.effects import expire_pending
from tether.server.service.environments import Environments
from tether.server.service.files import Files
from tether.server.service.log import EventLog
from tether.server.service.permissions import Permissions
from tether.server.service.sessions import Sessions
from tether.server.service.workers import Workers
from tether.server.store import Store, Tx
from tether.server.store.records import SessionRecord
from tether.server.streams import CLOSE_UNAUTHORIZED, OpenStreams, kid_key
from tether.server.web.renderer import Renderer

if TYPE_CHECKING:  # (redis is imported only when --redis-url is set)
    from tether.server.scaleout import ScaleOut


@dataclass
class ServerContext:
    config: Config
    store: Store
    broker: Broker
    auth: Auth
    dispatcher: Dispatcher
    hub: Hub
    log: EventLog
    sessions: Sessions
    permissions: Permissions
    workers: Workers
    environments: Environments
    accounts: Accounts
    files: Files
    limiter: RateLimiter
    login_limiter: RateLimiter
    streams: OpenStreams
    deliveries: DeliveryRecorder
    metrics: Metrics = field(default_factory=lambda: Metrics())
    renderer: Renderer = field(default_factory=lambda: Renderer())
    body_budget: BodyBudget = field(default_factory=lambda: BodyBudget(64 << 20))
    ready: bool = False
    closing: bool = False
    loop: asyncio.AbstractEventLoop | None = None
    scale_out: ScaleOut | None = None  # --redis-url: the bus and the shared rate limits

    def begin_shutdown(self) -> None:
        """Stop accepting (readyz 503) and end every stream and long poll now (loop thread only)."""
        if not self.closing:
            self.closing = True
            self.ready = False
            self.broker.broadcast(SERVER_CLOSING)

    def begin_shutdown_threadsafe(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.begin_shutdown)

    @classmethod
    def build(cls, config: Config) -> ServerContext:
        store = Store(config.db_url, background_checkpoints=True)
        metrics = Metrics()
        streams = OpenStreams()
        scale_out = None
        if config.redis_url:
            from tether.server.scaleout import build as build_scale_out

            scale_out = build_scale_out(config, streams, metrics)
        broker = scale_out.broker if scale_out is not None else Broker(config.broker_queue_size)
        auth = Auth(config, store)
        auth.on_retired = lambda kids: close_retired(streams, kids)
        if scale_out is not None:
            scale_out.broker.on_keys_changed = auth.keys_changed
            auth.announce = scale_out.broker.announce_keys_changed
        dispatcher = Dispatcher(config, store, broker, auth, streams)
        hub = Hub(broker)

        async def worker_gone(tx: Tx, session: SessionRecord, reason: str) -> SessionRecord:
            return await expire_pending(tx, hub, session, reason)

        dispatcher.on_worker_gone = worker_gone
        log = EventLog(config, store, hub, dispatcher)
        limits = config.limits
        deliveries = DeliveryRecorder(store, broker, metrics, config.delivery_flush_s)
        return cls(
            config=config, store=store, broker=broker, auth=auth, dispatcher=dispatcher, hub=hub, log=log,
            sessions=Sessions(config, store, hub, log, dispatcher), permissions=Permissions(store, log),
            workers=Workers(config, store, hub, auth, dispatcher, deliveries),
            environments=Environments(config, store, dispatcher),
            accounts=Accounts(config, store, auth, streams), files=Files(store),
            deliveries=deliveries, metrics=metrics,
            limiter=scale_out.limiter if scale_out else RateLimiter(limits.rate_per_second, limits.rate_burst),
            login_limiter=scale_out.login_limiter if scale_out else RateLimiter(limits.login_per_minute / 60.0,
                                                                                limits.login_per_minute),
            streams=streams, scale_out=scale_out,
            body_budget=BodyBudget(max(limits.max_inflight_body_bytes, limits.max_file_bytes + (64 << 10))),
        )


def close_retired(streams: OpenStreams, kids: frozenset[str]) -> None:
    """Streams opened with tokens of retired signing keys close here, as a revoked token's do
    (each instance closes its own when it sees the key gone: nothing is relayed)."""
    for kid in kids:
        streams.apply(KeyClosed(kid_key(kid), CLOSE_UNAUTHORIZED, "the worker token's signing key was retired"))
