"""TetherApp's dispatcher in front of FastAPI, on small in-process apps (the real routes behind
it are covered by the server tests)."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from tether.errors import Conflict, NotFound, RateLimited
from tether.server.fastpath import (
    CLIENT_EVENTS_POST,
    INGRESS_POST,
    WORKER_EVENTS_POST,
    WORKER_STREAM_GET,
    TetherApp,
    path_param,
)

pytestmark = pytest.mark.anyio

INGRESS = INGRESS_POST[0]


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/session_ingress/session/abc/events", "abc"),
    ("/v2/session_ingress/session/session_01X-y.z/events", "session_01X-y.z"),
    ("/v2/session_ingress/session/ü%20x/events", "ü%20x"),
    ("/v1/session_ingress/session//events", None),  # empty segment
    ("/v1/session_ingress/session/events", None),  # prefix and suffix overlap: no segment at all
    ("/v1/session_ingress/session/a/b/events", None),  # a segment containing '/'
    ("/v1/session_ingress/session/abc/events/", None),
    ("/v1/session_ingress/session/abc/event", None),  # wrong suffix
    ("/v1/session_ingress/session/abc", None),
    ("/v1/session_ingress/session/", None),  # prefix only
    ("/v3/session_ingress/session/abc/events", None),
    ("/x/v1/session_ingress/session/abc/events", None),
    ("", None),
])
def test_path_param(path: str, expected: str | None) -> None:
    assert path_param(path, INGRESS, "/events") == expected


def test_path_param_single_prefix() -> None:
    assert path_param("/v1/sessions/ws/s1/subscribe", ("/v1/sessions/ws/",), "/subscribe") == "s1"
    assert path_param("/v1/sessions/ws/s1/events", ("/v1/sessions/ws/",), "/subscribe") is None
    assert path_param("/v1/sessions/ws/s1/subscribe", (), "/subscribe") is None


async def fast_http(param: str, request: Request) -> Response:
    body = (await request.body()).decode()
    if param == "missing":
        raise NotFound("No such session.")
    if param == "busy":
        raise Conflict("Epoch moved.", error_type="epoch_conflict")
    if param == "limited":
        raise RateLimited("Slow down.", retry_after=7)
    if param == "boom":
        raise RuntimeError("secret internals")
    return JSONResponse({"fast": param, "body": body, "path": request.url.path,
                         "app": request.scope["app"] is request.app})


async def fast_socket(ws: WebSocket, param: str) -> None:
    await ws.accept()
    if param == "boom":
        raise RuntimeError("secret internals")
    await ws.send_json({"fast": param})
    await ws.close()


def make_app(*, fast: bool = True) -> TetherApp:
    app = TetherApp()
    if fast:
        app.fast_posts = ((*INGRESS_POST, fast_http), (*WORKER_EVENTS_POST, fast_http),
                          (*CLIENT_EVENTS_POST, fast_http))
        app.fast_gets = ((*WORKER_STREAM_GET, fast_http),)
        app.fast_socket = fast_socket

    @app.get("/v1/session_ingress/session/{sid}/events")
    async def get_events(sid: str) -> dict[str, str]:
        return {"route": "get", "sid": sid}

    @app.post("/v1/session_ingress/session/{rest:path}")
    async def post_other(rest: str) -> dict[str, str]:
        return {"route": "post", "rest": rest}

    @app.websocket("/v1/sessions/ws/{sid}/other")
    async def other_socket(ws: WebSocket, sid: str) -> None:
        await ws.accept()
        await ws.send_json({"route": "socket", "sid": sid})
        await ws.close()

    return app


def client(app: TetherApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_worker_events_paths_are_fast_too() -> None:
    async with client(make_app()) as c:
        for prefix in WORKER_EVENTS_POST[0]:
            resp = await c.post(f"{prefix}cse_1/worker/events", content=b"{}")
            assert resp.status_code == 200 and resp.json()["fast"] == "cse_1"


async def test_client_prompt_posts_and_worker_streams_are_fast() -> None:
    async with client(make_app()) as c:
        resp = await c.post("/v1/sessions/session_1/events", content=b"{}")
        assert resp.status_code == 200 and resp.json()["fast"] == "session_1"
        for prefix in WORKER_STREAM_GET[0]:
            resp = await c.get(f"{prefix}cse_1/worker/events/stream")
            assert resp.status_code == 200 and resp.json()["fast"] == "cse_1"
        # a POST to the stream's path, a GET to the prompt path: the framework's routes (none here)
        assert (await c.post("/v1/code/sessions/cse_1/worker/events/stream")).status_code == 404
        assert (await c.get("/v1/sessions/session_1/events")).status_code in (404, 405)


async def test_fast_endpoint_gets_the_segment_and_the_body() -> None:
    async with client(make_app()) as c:
        for version in ("v1", "v2"):
            resp = await c.post(f"/{version}/session_ingress/session/s_1/events", content=b'{"x":1}')
            assert resp.status_code == 200
            assert resp.json() == {"fast": "s_1", "body": '{"x":1}',
                                   "path": f"/{version}/session_ingress/session/s_1/events", "app": True}


@pytest.mark.parametrize(("param", "status", "error_type", "message"), [
    ("missing", 404, "not_found_error", "No such session."),
    ("busy", 409, "epoch_conflict", "Epoch moved."),  # per-instance error_type
    ("limited", 429, "rate_limit_error", "Slow down."),
])
async def test_tether_errors_become_the_error_shape(param: str, status: int, error_type: str,
                                                    message: str) -> None:
    async with client(make_app()) as c:
        resp = await c.post(f"/v1/session_ingress/session/{param}/events", content=b"{}")
    assert resp.status_code == status
    assert resp.json() == {"type": "error", "error": {"type": error_type, "message": message}}
    assert resp.headers.get("retry-after") == ("7" if param == "limited" else None)


async def test_unexpected_exception_is_logged_and_answered_500(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="tether.server"):
        async with client(make_app()) as c:
            resp = await c.post("/v2/session_ingress/session/boom/events", content=b"{}")
    assert resp.status_code == 500
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}
    assert "secret internals" not in resp.text and "Traceback" not in resp.text
    [record] = [r for r in caplog.records if r.name == "tether.server"]
    assert record.exc_info is not None and "boom/events" in record.getMessage()


@pytest.mark.parametrize("fast", [True, False])
async def test_other_methods_and_paths_go_through_fastapi(fast: bool) -> None:
    async with client(make_app(fast=fast)) as c:
        got = await c.get("/v1/session_ingress/session/s_1/events")
        assert (got.status_code, got.json()) == (200, {"route": "get", "sid": "s_1"})
        for rest in ("a/b/events", "s_1/other", "s_1/events/"):
            resp = await c.post(f"/v1/session_ingress/session/{rest}")
            assert (resp.status_code, resp.json()) == (200, {"route": "post", "rest": rest})
        plain = await c.post("/v1/session_ingress/session/s_1/events")
        expected = {"fast": "s_1", "body": "", "path": "/v1/session_ingress/session/s_1/events", "app": True}
        assert plain.json() == (expected if fast else {"route": "post", "rest": "s_1/events"})
        assert (await c.post("/v2/session_ingress/session//events")).status_code == 404


def test_fast_socket_gets_the_segment_and_others_fall_through() -> None:
    with TestClient(make_app()) as tc:
        with tc.websocket_connect("/v1/sessions/ws/s_9/subscribe") as ws:
            assert ws.receive_json() == {"fast": "s_9"}
        with tc.websocket_connect("/v1/sessions/ws/s_9/other") as ws:
            assert ws.receive_json() == {"route": "socket", "sid": "s_9"}


def test_fast_socket_exception_after_accept_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="tether.server"), TestClient(make_app()) as tc:
        with tc.websocket_connect("/v1/sessions/ws/boom/subscribe") as ws, \
                pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1011
    assert any(r.name == "tether.server" and r.exc_info for r in caplog.records)
