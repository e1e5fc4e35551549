"""The hot routes, served without the framework's routing and middleware layers.

A worker's event POST (v1 I2, CCR v2 W6), a client's prompt POST (S5), a client's subscribe
socket and the v2 worker's SSE stream (W10) carry almost all of a busy server's traffic. Through
FastAPI each of them pays route matching over every route, dependency solving and four middleware
layers (two of which wrap ``send`` per frame): ≈ 25 % of a worker POST's CPU and ≈ 30 % of a
subscriber frame's (bench/relay.py). Here ``TetherApp.__call__`` recognises those paths with
string operations and calls the very same endpoint functions with a plain Starlette
``Request``/``WebSocket`` and the server's own ``send`` (which the direct writes of api/direct.py
need); every other request, and these paths with another method, go through FastAPI as before.
Errors keep the one JSON error shape; an unexpected exception is logged and answered 500 (1011 on
a socket), as the framework would.

Every request with a body, fast or not, reads it through :class:`MeteredReceive`: the bytes of
all bodies being read or handled at once are bounded by one budget (``limits.max_inflight_body_bytes``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from tether.errors import RateLimited, TetherError
from tether.protocol.body_budget import BodyBudget
from tether.server.api.common import internal_error_response, tether_error_response

log = logging.getLogger("tether.server")

HttpEndpoint = Callable[[str, Request], Awaitable[Response]]
SocketEndpoint = Callable[[WebSocket, str], Awaitable[None]]

# (path prefixes, suffix) of the hot POST routes (TetherApp.fast_posts)
INGRESS_POST = (("/v1/session_ingress/session/", "/v2/session_ingress/session/"), "/events")
WORKER_EVENTS_POST = (("/v1/code/sessions/", "/v1/session_ingress/ws/", "/v2/session_ingress/ws/"),
                      "/worker/events")
CLIENT_EVENTS_POST = (("/v1/sessions/",), "/events")  # S5: a client's prompts and control requests
# the CCR v2 worker's SSE stream (W10): its response writes to the connection itself (api/direct.py)
WORKER_STREAM_GET = (WORKER_EVENTS_POST[0], "/worker/events/stream")
_SUBSCRIBE_PREFIX = "/v1/sessions/ws/"
_SUBSCRIBE_SUFFIX = "/subscribe"


def path_param(path: str, prefixes: tuple[str, ...], suffix: str) -> str | None:
    """The one path segment between a prefix and the suffix (Starlette's ``{param}``: no '/')."""
    if not path.endswith(suffix):
        return None
    for prefix in prefixes:
        if path.startswith(prefix):
            middle = path[len(prefix):len(path) - len(suffix)]
            return middle if middle and "/" not in middle else None
    return None


class MeteredReceive:
    """``receive`` of one request, taking each body chunk from the server's body budget
    (docs/protocol.md §4.8); ``release`` gives it all back when the request is over."""

    __slots__ = ("budget", "held", "receive")

    def __init__(self, budget: BodyBudget, receive: Receive) -> None:
        self.budget = budget
        self.receive = receive
        self.held = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        size = len(message.get("body", b""))
        if size:
            if not self.budget.take(size):
                raise RateLimited("The server is receiving too many large requests at once; retry in a "
                                  "second.", retry_after=1)
            self.held += size
        return message

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


class TetherApp(FastAPI):
    """FastAPI, with the hot routes dispatched first (see the module docstring)."""

    fast_posts: tuple[tuple[tuple[str, ...], str, HttpEndpoint], ...] = ()  # (prefixes, suffix, endpoint)
    fast_gets: tuple[tuple[tuple[str, ...], str, HttpEndpoint], ...] = ()
    fast_socket: SocketEndpoint | None = None
    body_budget: BodyBudget | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.body_budget is not None and scope["method"] not in ("GET", "HEAD"):
            metered = MeteredReceive(self.body_budget, receive)
            try:
                await self._dispatch(scope, metered, send)
            finally:
                metered.release()
        else:
            await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] in ("POST", "GET"):
            for prefixes, suffix, endpoint in self.fast_posts if scope["method"] == "POST" else self.fast_gets:
                param = path_param(scope["path"], prefixes, suffix)
                if param is not None:
                    scope["app"] = self
                    await self._serve_http(endpoint, param, scope, receive, send)
                    return
        elif kind == "websocket" and self.fast_socket is not None:
            param = path_param(scope["path"], (_SUBSCRIBE_PREFIX,), _SUBSCRIBE_SUFFIX)
            if param is not None:
                scope["app"] = self
                await self._serve_socket(self.fast_socket, param, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve_http(self, endpoint: HttpEndpoint, param: str, scope: Scope, receive: Receive,
                          send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(param, request)
        except TetherError as exc:
            response = tether_error_response(exc)
        except ClientDisconnect:
            log.warning("client went away during POST %s", scope["path"])
            return
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = internal_error_response()
        await response(scope, receive, send)

    async def _serve_socket(self, endpoint: SocketEndpoint, param: str, scope: Scope, receive: Receive,
                            send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        try:
            await endpoint(ws, param)
        except Exception:
            log.exception("unhandled error on socket %s", scope["path"])
            if ws.application_state == WebSocketState.CONNECTED:
                try:
                    await ws.close(1011, "internal error")
                except Exception:  # the peer may be gone already
                    pass
