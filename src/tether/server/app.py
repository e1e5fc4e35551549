"""create_app(config) → the ASGI app. Nothing happens at import time.

Lifespan: open the store (migrate), load keys, bootstrap the owner, start the lease
reaper, the worker-presence sweep, the WAL checkpointer, the delivery writer, the signing-key
refresh and the instance heartbeat in a task group;
on shutdown: stop accepting (readyz 503), close sockets with 1012, stop background tasks, stop
the render process, write the last delivery states, close the store — in that order, each with
a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from tether.errors import TetherError
from tether.server.api import (
    code_sessions,
    environments,
    ingress,
    login_links,
    misc,
    oauth,
    sessions,
    subscribe,
    worker,
)
from tether.server.api.common import error_response, internal_error_response, tether_error_response
from tether.server.api.openapi import document_responses
from tether.server.config import Config
from tether.server.context import ServerContext
from tether.server.fastpath import (
    CLIENT_EVENTS_POST,
    INGRESS_POST,
    WORKER_EVENTS_POST,
    WORKER_STREAM_GET,
    TetherApp,
)
from tether.server.loopwatch import REPORT_NAME, LoopWatch
from tether.server.web import api as web_api
from tether.server.web import pages

log = logging.getLogger("tether.server")

_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
                 413: "payload_too_large", 429: "rate_limit_error"}


def create_app(config: Config) -> FastAPI:
    ctx = ServerContext.build(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        ctx.loop = asyncio.get_running_loop()
        await ctx.store.open()
        await ctx.auth.open()
        await ctx.workers.reset_presence()
        async with asyncio.TaskGroup() as tg:
            reaper = tg.create_task(ctx.dispatcher.run_reaper(), name="lease-reaper")
            sweeper = tg.create_task(ctx.workers.run_presence_sweep(), name="presence-sweep")
            checkpointer = tg.create_task(ctx.store.run_checkpointer(), name="wal-checkpointer")
            deliveries = tg.create_task(ctx.deliveries.run(), name="delivery-writer")
            key_refresh = tg.create_task(ctx.auth.run_key_refresh(), name="key-refresh")
            heartbeat = tg.create_task(ctx.workers.v1_presence.run(), name="instance-heartbeat")
            if ctx.scale_out is not None:
                tg.create_task(ctx.scale_out.run(), name="scale-out")
            # What start-up made lives as long as the process: out of the collector's sight,
            # a full collection no longer walks it (a multi-millisecond pause otherwise).
            gc.collect()
            gc.freeze()
            ctx.ready = True
            # measured from here on: start-up (imports, migrations, gc.freeze) is not serving
            watch = tg.create_task(_watch_loop(ctx), name="loop-watch") if config.loop_monitor_s > 0 else None
            try:
                yield
            finally:
                if watch is not None:
                    watch.cancel()
                ctx.begin_shutdown()
                reaper.cancel()
                sweeper.cancel()
                checkpointer.cancel()
                deliveries.cancel()
                key_refresh.cancel()
                heartbeat.cancel()
                if ctx.scale_out is not None:
                    ctx.scale_out.stop()  # (ends by itself, within half a second)
        await ctx.renderer.close()
        await _write_deliveries(ctx)
        await ctx.workers.v1_presence.leave()
        if ctx.scale_out is not None:
            await ctx.scale_out.close()
        await ctx.broker.close()
        await ctx.store.close()

    app = TetherApp(title="Tether server", lifespan=lifespan, docs_url=None, redoc_url=None,
                    openapi_url="/openapi.json")
    app.state.ctx = ctx

    def openapi() -> dict[str, Any]:
        return document_responses(FastAPI.openapi(app))

    app.openapi = openapi  # type: ignore[method-assign]
    app.fast_posts = ((*INGRESS_POST, ingress.post_events), (*WORKER_EVENTS_POST, worker.post_events),
                      (*CLIENT_EVENTS_POST, sessions.post_events))
    app.fast_gets = ((*WORKER_STREAM_GET, worker.stream),)
    app.fast_socket = subscribe.subscribe
    app.body_budget = ctx.body_budget
    # Routes go straight onto the app, hot ones first: nested included routers cost a match
    # per router on every request (≈14 % of a worker POST's CPU, bench/relay.py).
    for module in (ingress, worker, subscribe, environments, sessions, code_sessions, oauth, misc, login_links, pages,
                   web_api):
        app.router.routes.extend(module.router.routes)

    @app.exception_handler(TetherError)
    async def tether_error(request: Request, exc: TetherError) -> Response:
        return tether_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404:
            message = f"No route for {request.method} {request.url.path}."
        return error_response(exc.status_code, _STATUS_TYPES.get(exc.status_code, "api_error"), message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "invalid_request_error", f"Invalid request: {exc.errors()[:3]}")

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        log.warning("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)  # nobody is there to read it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error_response()

    return app


async def _watch_loop(ctx: ServerContext) -> None:
    config = ctx.config
    watch = LoopWatch(config.loop_monitor_s, config.loop_stall_threshold_s, ctx.metrics,
                      config.data_dir / REPORT_NAME)
    await watch.run()


async def _write_deliveries(ctx: ServerContext) -> None:
    """The delivery states streams moved since the last batch, before the store closes."""
    try:
        async with asyncio.timeout(5):
            await ctx.deliveries.flush()
    except Exception:  # (they are re-sent after the restart: workers dedup by uuid)
        log.exception("could not write the last delivery states")

