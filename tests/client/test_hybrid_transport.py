"""HybridTransport against a real `tether server` (and, for liveness, a socket that never pongs)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import auth, create_session, register, subscribe, take_work, user_message

from tether.client.hybrid import HybridConfig, HybridTransport, handshake_close_code, ingress_urls
from tether.client.transport import TransportError, TransportState
from tether.protocol.backoff import Backoff
from tether.protocol.messages import control_success

pytestmark = pytest.mark.anyio

FAST = HybridConfig(
    ping_interval=0.5,
    reconnect_backoff=lambda: Backoff(0.1, 0.5, 0.25, 600.0, 60.0),
    post_backoff=lambda: Backoff(0.05, 0.5, additive_jitter=0.05),
)


def assistant(text: str) -> dict[str, Any]:
    return {"type": "assistant", "uuid": str(uuid.uuid4()),
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


def delta(i: int) -> dict[str, Any]:
    return {"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": f"t{i} "}}}


async def new_session(client: httpx.AsyncClient, owner_token: str) -> tuple[str, str, dict[str, Any]]:
    env = await register(client, owner_token)
    sid = await create_session(client, owner_token, env["environment_id"])
    _, token = await take_work(client, env)
    return sid, token, env


@contextlib.asynccontextmanager
async def running(transport: HybridTransport) -> AsyncIterator[asyncio.Task[Any]]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(transport.run())
        try:
            yield task
        finally:
            await transport.close()


async def next_message(inbox: AsyncIterator[dict[str, Any]], timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return await anext(inbox)


async def stored_uuids(client: httpx.AsyncClient, sid: str, owner_token: str) -> list[str]:
    r = await client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}, headers=auth(owner_token))
    r.raise_for_status()
    return [ev["payload"]["uuid"] if "payload" in ev else ev["uuid"] for ev in r.json()["data"]]


def test_ingress_urls_follow_the_stock_cli() -> None:
    assert ingress_urls("http://127.0.0.1:8787", "session_x") == (
        "ws://127.0.0.1:8787/v2/session_ingress/ws/session_x",
        "http://127.0.0.1:8787/v2/session_ingress/session/session_x/events")
    assert ingress_urls("https://tether.example.com/base/", "cse_y") == (
        "wss://tether.example.com/base/v1/session_ingress/ws/cse_y",
        "https://tether.example.com/base/v1/session_ingress/session/cse_y/events")
    with pytest.raises(ValueError):
        ingress_urls("ftp://x", "s")
    with pytest.raises(ValueError):
        ingress_urls("http://x", "../etc")
    assert [handshake_close_code(s) for s in (401, 403, 404, 400, 429, 500, 502)] == [
        4003, 4003, 4001, 1002, 1006, 1006, 1006]


async def test_reads_initialize_and_batched_writes_reach_subscribers(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        sub = await subscribe(server.ws_url, sid, owner_token)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        assert "/v2/session_ingress/ws/" in transport.ws_url
        async with running(transport):
            inbox = transport.incoming()
            init = await next_message(inbox)
            assert init["type"] == "control_request" and init["request"]["subtype"] == "initialize"
            assert transport.state is TransportState.CONNECTED
            transport.write(control_success(init["request_id"], {"commands": []}))
            transport.write_many(delta(i) for i in range(20))
            system = {"type": "system", "subtype": "init"}  # no uuid: the transport stamps one
            final = assistant("done")
            transport.write(system)
            transport.write(final)
            await sub.wait_for(lambda f: f.get("uuid") == final["uuid"])
            assert await transport.flush(5)
        texts = [f["event"]["delta"]["text"] for f in sub.frames if f.get("type") == "stream_event"]
        assert texts == [f"t{i} " for i in range(20)]
        systems = [f for f in sub.frames if f.get("type") == "system"]
        assert len(systems) == 1 and uuid.UUID(systems[0]["uuid"])
        assert "uuid" not in system, "the caller's message is not mutated"
        assert transport.stats.posts < 10 and max(transport.stats.batch_sizes) >= 10, transport.stats
        assert not [f for f in sub.frames if f.get("type") == "control_response"], "initialize answers are not logged"
        assert transport.state is TransportState.CLOSED and transport.closed_info is not None
        assert transport.closed_info.reason == "closed"
        with pytest.raises(TransportError):
            transport.write(assistant("too late"))
        await sub.close()


async def test_inbound_prompts_arrive_in_order(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        early = user_message("sent before the worker connected")
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [early]}, headers=auth(owner_token))
        assert r.status_code == 200
        transport = HybridTransport(server.url, sid, lambda: token, config=FAST)
        async with running(transport):
            inbox = transport.incoming()
            assert (await next_message(inbox))["request"]["subtype"] == "initialize"
            assert (await next_message(inbox))["uuid"] == early["uuid"]
            late = user_message("live")
            await client.post(f"/v1/sessions/{sid}/events", json={"events": [late]}, headers=auth(owner_token))
            assert (await next_message(inbox))["uuid"] == late["uuid"]
        assert [m async for m in inbox] == [], "the iterator ends when the transport closes"


async def test_bad_token_is_a_permanent_4003(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, _, _ = await new_session(client, owner_token)
    transport = HybridTransport(server.url, sid, "not.a.token", config=FAST)
    closed = await asyncio.wait_for(transport.run(), 10)
    assert (closed.reason, closed.code) == ("permanent", 4003)
    assert transport.state is TransportState.CLOSED
    assert [m async for m in transport.incoming()] == []


async def test_4003_is_retried_once_the_token_changed(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
    calls: list[int] = []

    def source() -> str:
        calls.append(1)
        return "stale.jwt.token" if len(calls) == 1 else token

    transport = HybridTransport(server.url, sid, source, config=FAST)
    async with running(transport):
        init = await next_message(transport.incoming())  # only an authorised socket gets initialize
        assert init["request"]["subtype"] == "initialize"
        # the server accepts, then closes with 4003: one refused socket, one retry with the new token
        assert transport.stats.reconnect_attempts == 1 and transport.stats.connects == 2


async def test_an_expired_token_waits_for_a_fresh_one_within_the_grace(tmp_path: Any) -> None:
    """The bridge's transport (expired_token_grace_s > 0): a socket refused (4003) because its token
    expired keeps reconnecting until the bridge's refresh hands over a fresh token; without the
    grace the refusal is permanent."""
    from tests.support.rotation import jwt_exp, redispatch

    with ServerProcess(tmp_path / "srv", worker_token_ttl_s=2, limits={"rate_per_second": 0}) as srv:
        owner = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            sid, token, env = await new_session(client, owner)
            await eventually(lambda: jwt_exp(token) < time.time() - 1, 10, message="the token to expire")
            closed = await asyncio.wait_for(HybridTransport(srv.url, sid, token, config=FAST).run(), 10)
            assert (closed.reason, closed.code) == ("permanent", 4003)
            graceful = HybridConfig(ping_interval=0.5, reconnect_backoff=FAST.reconnect_backoff,
                                    post_backoff=FAST.post_backoff, expired_token_grace_s=600.0)
            transport = HybridTransport(srv.url, sid, token, config=graceful)
            async with running(transport) as task:
                await eventually(lambda: transport.stats.reconnect_attempts >= 3, 10, message="retries")
                assert not task.done()
                fresh = await redispatch(client, env, sid, owner)
                transport.set_token(fresh)
                init = await asyncio.wait_for(next_message(transport.incoming()), 10)
                assert init["request"]["subtype"] == "initialize"


async def test_control_messages_are_confirmed_by_a_receipt(server: ServerProcess, owner_token: str) -> None:
    """The worker confirms a control message it read with a receipt on its socket (docs/protocol.md
    §4.4): the server marks it processed though the worker posted nothing."""
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        sub = await subscribe(server.ws_url, sid, owner_token)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        async with running(transport):
            assert (await next_message(transport.incoming()))["request"]["subtype"] == "initialize"
            interrupt = {"type": "control_request", "request_id": "i-1", "request": {"subtype": "interrupt"}}
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [interrupt]},
                                  headers=auth(owner_token))
            assert r.status_code == 200, r.text
            got = await asyncio.wait_for(next_message(transport.incoming()), 10)
            assert got["request_id"] == "i-1"
            await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f.get("uuid") == got["uuid"]
                               and f.get("status") == "processed")
        await sub.close()


async def test_archiving_the_session_closes_for_good(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(transport.run())
            assert await transport.wait_connected(10)
            r = await client.post(f"/v1/sessions/{sid}/archive", json={}, headers=auth(owner_token))
            assert r.status_code == 200, r.text
            closed = await asyncio.wait_for(task, 10)
        assert (closed.reason, closed.code) == ("permanent", 4001)


async def test_refused_writes_are_replayed_with_a_new_token(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        sub = await subscribe(server.ws_url, sid, owner_token)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        async with running(transport):
            assert await transport.wait_connected(10)
            transport.set_token("expired.jwt.token")
            lost = [assistant("refused 1"), assistant("refused 2")]
            transport.write_many(lost)
            await eventually(lambda: transport.stats.rejected_events == 2, message="the 401")
            assert transport.replay_buffer.rejected_count == 2
            transport.set_token(token)
            await sub.wait_for(lambda f: f.get("uuid") == lost[-1]["uuid"])
            assert transport.stats.replayed == 2
            after = assistant("after")
            transport.write(after)
            await sub.wait_for(lambda f: f.get("uuid") == after["uuid"])
        got = [f["uuid"] for f in sub.frames if f.get("type") == "assistant"]
        assert got == [lost[0]["uuid"], lost[1]["uuid"], after["uuid"]]
        await sub.close()


async def test_a_refused_event_is_dropped_and_the_rest_flows(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        sub = await subscribe(server.ws_url, sid, owner_token)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        async with running(transport):
            huge = {**assistant("x"), "pad": "x" * (1 << 20)}
            transport.write(huge)
            assert await transport.flush(10)
            ok = assistant("fine")
            transport.write(ok)
            await sub.wait_for(lambda f: f.get("uuid") == ok["uuid"])
        assert transport.stats.dropped_events == 1 and huge["uuid"] not in transport.replay_buffer
        await sub.close()


async def test_close_flushes_coalescing_stream_events(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
        sub = await subscribe(server.ws_url, sid, owner_token)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(transport.run())
            assert await transport.wait_connected(10)
            transport.write_many(delta(i) for i in range(5))
            await transport.close()
        await sub.wait_for(lambda f: f.get("event", {}).get("delta", {}).get("text") == "t4 ")
        await sub.close()


async def test_clock_jump_is_detected_as_sleep(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid, token, _ = await new_session(client, owner_token)
    offset = [0.0]
    cfg = HybridConfig(ping_interval=0.1, reconnect_backoff=FAST.reconnect_backoff)
    transport = HybridTransport(server.url, sid, token, config=cfg, clock=lambda: time.monotonic() + offset[0])
    async with running(transport):
        assert await transport.wait_connected(10)
        offset[0] += 120.0  # the laptop slept for two minutes
        await eventually(lambda: transport.stats.connects >= 2, message="a reconnect after the nap")
        assert transport.stats.liveness_drops >= 1
        assert transport.state is TransportState.CONNECTED


class SilentSocketServer:
    """Accepts WebSocket upgrades, then never answers anything (a zombie connection)."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self) -> None:
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass


async def test_missing_pong_drops_and_reconnects() -> None:
    fake = SilentSocketServer()
    srv = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    cfg = HybridConfig(ping_interval=0.1, reconnect_backoff=FAST.reconnect_backoff, ws_close_timeout=0.2)
    transport = HybridTransport(f"http://127.0.0.1:{port}", "session_zombie", "t", config=cfg)
    try:
        async with running(transport):
            await eventually(lambda: fake.connections >= 2, message="a second connection")
            assert transport.stats.liveness_drops >= 1
    finally:
        for w in fake.writers:
            w.close()
        srv.close()


async def test_server_restart_reconnects_and_loses_nothing(server: ServerProcess, owner_token: str) -> None:
    srv, owner = server, owner_token
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            sid, token, _ = await new_session(client, owner)
            transport = HybridTransport(srv.url, sid, token, config=FAST)
            async with running(transport):
                inbox = transport.incoming()
                assert (await next_message(inbox))["request"]["subtype"] == "initialize"
                before = [assistant(f"before {i}") for i in range(3)]
                transport.write_many(before)
                assert await transport.flush(10)
                await asyncio.to_thread(srv.stop)
                during = [assistant(f"during {i}") for i in range(3)]
                transport.write_many(during)
                await eventually(lambda: transport.stats.post_retries >= 1, message="a failed POST")
                assert transport.state is TransportState.RECONNECTING
                await asyncio.to_thread(srv.start)
                assert (await next_message(inbox, 20))["request"]["subtype"] == "initialize"
                assert transport.stats.connects == 2
                assert await transport.flush(15)
            stored = await stored_uuids(client, sid, owner)
        assert stored == [m["uuid"] for m in before + during]
    finally:
        if srv.proc is None:  # leave the module's server running
            srv.start()


async def test_close_interrupts_a_hanging_connect() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    srv = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    transport = HybridTransport(f"http://127.0.0.1:{port}", "session_hang", "t", config=FAST)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(transport.run())
            await eventually(lambda: transport.state is TransportState.CONNECTING, message="connecting")
            started = asyncio.get_running_loop().time()
            await transport.close(grace=0.5)
            closed = await task
            assert asyncio.get_running_loop().time() - started < 3
        assert closed.reason == "closed" and transport.stats.connects == 0
    finally:
        srv.close()
