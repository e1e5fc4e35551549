"""SSETransport: resume, dedup, liveness and give-up against a scripted server; resume through
cuts at random points (clean close, reset, client drop, server restart) against a real one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from tests.support.api import mint_token
from tests.support.cut_proxy import CutProxy
from tests.support.fake_http import FakeHTTP, Reply, Request, sse_event
from tests.support.server import ServerProcess
from tests.support.worker import auth, user_message

from tether.client.sse import SSEClosed, SSEConfig, SSETransport, stream_url
from tether.client.transport import TransportState
from tether.protocol.backoff import Backoff
from tether.protocol.sse import ClientEvent

pytestmark = pytest.mark.anyio

FAST = SSEConfig(liveness_timeout=5.0, reconnect_backoff=lambda: Backoff(0.02, 0.2, 0.25, 600.0, 60.0))


class Collector:
    """Reads a transport's events in the background."""

    def __init__(self, transport: SSETransport) -> None:
        self.events: list[ClientEvent] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(transport))

    async def _run(self, transport: SSETransport) -> None:
        async for event in transport.events():
            self.events.append(event)
            self.changed.set()
        self.changed.set()

    @property
    def seqs(self) -> list[int | None]:
        return [e.sequence_num for e in self.events]

    async def wait_for(self, predicate: Callable[[list[ClientEvent]], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                if self.task.done():
                    raise AssertionError("the event stream ended")
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running(transport: SSETransport) -> AsyncIterator[asyncio.Task[SSEClosed]]:
    task = asyncio.create_task(transport.run())
    try:
        yield task
    finally:
        await transport.close()
        await task


def user(i: int) -> dict[str, Any]:
    return {"type": "user", "uuid": f"u{i}", "message": {"role": "user", "content": f"p{i}"}}


async def hold() -> AsyncIterator[bytes]:
    yield b": connected\n\n"
    await asyncio.Event().wait()


async def test_replayed_sequence_numbers_are_dropped_and_resume_is_requested() -> None:
    async def handler(req: Request) -> Reply:
        async def first() -> AsyncIterator[bytes]:
            for i in (1, 2, 3):
                yield sse_event(i, user(i))
        async def replay_all() -> AsyncIterator[bytes]:  # a server that ignores the resume point
            for i in range(1, 6):
                yield sse_event(i, user(i))
            await asyncio.Event().wait()
        return Reply(stream=first() if len(server.requests) == 1 else replay_all())

    async with FakeHTTP(handler) as server:
        sse = SSETransport(stream_url(f"{server.url}/v1/code/sessions/cse_x"), "tok", config=FAST)
        col = Collector(sse)
        async with running(sse):
            await col.wait_for(lambda ev: len(ev) >= 5)
            assert col.seqs == [1, 2, 3, 4, 5]
            assert sse.stats.duplicates == 3 and sse.high_water == 5
        first, second = server.requests[:2]
        assert "last-event-id" not in first.headers and first.query == {}
        assert second.headers["last-event-id"] == "3" and second.query == {"from_sequence_num": "3"}
        assert first.headers["authorization"] == "Bearer tok"
        assert first.headers["accept"] == "text/event-stream"
        assert first.headers["anthropic-version"] == "2023-06-01"


async def test_a_carried_high_water_mark_is_the_first_resume_point() -> None:
    async def handler(req: Request) -> Reply:
        async def stream() -> AsyncIterator[bytes]:
            yield sse_event(7, user(7))  # at or below the carried mark: seen by the previous transport
            yield sse_event(8, user(8))
            await asyncio.Event().wait()
        return Reply(stream=stream())

    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", "tok", from_sequence_num=7, config=FAST)
        col = Collector(sse)
        async with running(sse):
            await col.wait_for(lambda ev: len(ev) >= 1)
            assert col.seqs == [8]
        assert server.requests[0].query == {"from_sequence_num": "7"}


async def test_a_silent_stream_is_dropped_after_the_liveness_timeout() -> None:
    async def handler(req: Request) -> Reply:
        n = len(server.requests)
        async def stream() -> AsyncIterator[bytes]:
            yield sse_event(n, user(n))
            if n == 1:
                await asyncio.Event().wait()  # then silence: no keepalive either
            else:
                while True:
                    yield b":keepalive\n\n"
                    await asyncio.sleep(0.05)
        return Reply(stream=stream())

    cfg = SSEConfig(liveness_timeout=0.4, reconnect_backoff=FAST.reconnect_backoff)
    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", "tok", config=cfg)
        col = Collector(sse)
        async with running(sse):
            await col.wait_for(lambda ev: len(ev) >= 2)
            await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(
                sse.wait_connected(5))), 5)
            assert sse.stats.liveness_drops == 1
            assert col.seqs == [1, 2]
            assert sse.state is TransportState.CONNECTED


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_auth_and_not_found_are_permanent(status: int) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(status, {"type": "error", "error": {"type": "x", "message": "no"}})

    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", "tok", config=FAST)
        closed = await asyncio.wait_for(sse.run(), 10)
        assert closed.reason == "permanent" and closed.code == status
        assert len(server.requests) == 1
        assert [e async for e in sse.events()] == []


async def test_an_auth_failure_is_retried_when_the_token_changed_meanwhile() -> None:
    async def handler(req: Request) -> Reply:
        if req.headers["authorization"] == "Bearer old":
            sse.set_token("new")  # the owner refreshed the token while the request was out
            return Reply(401, {})
        return Reply(stream=hold())

    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", "old", config=FAST)
        async with running(sse):
            assert await sse.wait_connected(10)
        assert [r.headers["authorization"] for r in server.requests] == ["Bearer old", "Bearer new"]


def expired_jwt() -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256'})}.{part({'exp': time.time() - 30})}.sig"


async def test_an_expired_token_waits_for_a_fresh_one_within_the_grace() -> None:
    """The bridge's transports (expired_token_grace_s > 0): a refusal of an expired token is
    retried until the owner hands over a fresh token; without the grace it is permanent."""
    stale = expired_jwt()

    async def handler(req: Request) -> Reply:
        if req.headers["authorization"] == f"Bearer {stale}":
            if len(server.requests) >= 4:
                sse.set_token("fresh")  # the bridge's refresh got through at last
            return Reply(401, {})
        return Reply(stream=hold())

    cfg = SSEConfig(reconnect_backoff=FAST.reconnect_backoff, expired_token_grace_s=600.0)
    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", stale, config=cfg)
        async with running(sse):
            assert await sse.wait_connected(10)
        assert [r.headers["authorization"] for r in server.requests][-1] == "Bearer fresh"
        assert len(server.requests) == 5
    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", stale, config=FAST)
        closed = await asyncio.wait_for(sse.run(), 10)
        assert (closed.reason, closed.code, len(server.requests)) == ("permanent", 401, 1)


async def test_the_reconnect_budget_runs_out() -> None:
    async def handler(req: Request) -> Reply:
        return Reply(503, {})

    cfg = SSEConfig(reconnect_backoff=lambda: Backoff(0.01, 0.05, 0.25, give_up_after=0.3))
    async with FakeHTTP(handler) as server:
        sse = SSETransport(f"{server.url}/s", "tok", config=cfg)
        closed = await asyncio.wait_for(sse.run(), 10)
        assert closed.reason == "gave_up" and closed.code == 503
        assert len(server.requests) >= 3


async def test_stream_cut_at_random_points_resumes_with_no_gap_and_no_duplicate(tmp_path: pathlib.Path) -> None:
    """Server-side closes and resets mid-frame, client-side drops and a server restart: every
    prompt arrives exactly once, in order."""
    rnd = random.Random(20261122)
    with ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}) as srv:
        owner = await asyncio.to_thread(mint_token, srv.data_dir)
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            r = await client.post("/v1/code/sessions", json={"title": "cuts", "bridge": {}}, headers=auth(owner))
            sid = r.json()["session"]["id"]
            worker = (await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(owner))).json()
        sent: list[str] = []

        async def post(n: int) -> None:
            async with httpx.AsyncClient(base_url=srv.url, timeout=15) as c:
                for _ in range(n):
                    msg = user_message(f"prompt {len(sent)}")
                    resp = await c.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(owner))
                    assert resp.status_code == 200, resp.text
                    sent.append(msg["uuid"])

        async with CutProxy(srv.port) as proxy:
            sse = SSETransport(stream_url(f"{proxy.url}/v1/code/sessions/{sid}"), worker["worker_jwt"], config=FAST)
            col = Collector(sse)

            def delivered() -> list[str]:
                return [e.payload["uuid"] for e in col.events]

            async with running(sse):
                assert await sse.wait_connected(10)
                modes = ["close", "reset", "drop", "close", "restart", "reset", "drop", "close", "close"]
                for mode in modes:
                    if mode in ("close", "reset"):
                        proxy.cut_after(rnd.randrange(0, 900), mode)  # type: ignore[arg-type]
                        await post(4)
                    elif mode == "drop":
                        await post(2)
                        sse.drop()
                        await post(2)
                    else:
                        await post(2)
                        # SIGKILL: a crash (and a SIGTERM waits out uvicorn's 5 s graceful shutdown
                        # while a worker stream is open)
                        await asyncio.to_thread(srv.restart, signal.SIGKILL)
                        await post(2)
                    await col.wait_for(lambda ev: len(ev) >= len(sent))
                await col.wait_for(lambda ev: len(ev) >= len(sent))
                assert delivered() == sent  # no gap, no duplicate, in order
                assert sse.stats.connects >= 6 and proxy.cuts >= 3
                seqs = col.seqs
                assert all(isinstance(s, int) for s in seqs) and seqs == sorted(set(seqs))  # type: ignore[type-var]
