"""Direct fan-out (server/api/direct.py): subscribers and v2 worker SSE streams whose sender is
idle get frames written straight to their connection, batched per loop step; one that stops
reading falls back to its queue, overflows, and re-reads from the log — every reader still sees
every event once, in sequence order."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid

import httpx
import orjson
import pytest
import websockets
from tests.server.test_v2 import SSEReader, bridge, code_session
from tests.support.server import ServerProcess
from tests.support.worker import (
    auth,
    create_session,
    register,
    subscribe,
    take_work,
    user_message,
    worker_post,
)

pytestmark = pytest.mark.anyio


def assistant(text: str) -> dict[str, object]:
    return {"type": "assistant", "uuid": str(uuid.uuid4()),
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


async def counters(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^tether_(\w+) ([0-9.e+]+)$", text, re.MULTILINE)}


async def subscribed(url: str, token: str, **kw: object) -> websockets.ClientConnection:
    """A subscribe socket that the server has registered (its keep_alive answer came back)."""
    ws = await websockets.connect(url, additional_headers=auth(token), max_size=4 << 20, **kw)  # type: ignore[arg-type]
    await ws.send('{"type":"keep_alive"}')
    async with asyncio.timeout(10):
        while orjson.loads(await ws.recv()).get("type") != "keep_alive":
            pass
    return ws


async def test_idle_subscribers_get_frames_written_directly(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        _, wtoken = await take_work(client, env)
        subs = [await subscribe(server.ws_url, sid, owner_token) for _ in range(3)]
        for sub in subs:
            await sub.ws.send('{"type":"keep_alive"}')
            await sub.wait_for(lambda f: f.get("type") == "keep_alive")
        before = await counters(client)
        singles = [assistant(f"one {i}") for i in range(5)]
        for event in singles:
            await worker_post(client, sid, wtoken, event)
        batch = [assistant(f"batch {i}") for i in range(40)]
        await worker_post(client, sid, wtoken, *batch)
        want = [e["uuid"] for e in singles + batch]
        for sub in subs:
            await sub.wait_for(lambda f: f.get("uuid") == want[-1])
            got = [f for f in sub.frames if f.get("type") == "assistant"]
            assert [f["uuid"] for f in got] == want
            seqs = [f["sequence_num"] for f in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(want)))
        after = await counters(client)
        frames = after.get("subscriber_frames_direct_total", 0) - before.get("subscriber_frames_direct_total", 0)
        writes = after.get("subscriber_direct_writes_total", 0) - before.get("subscriber_direct_writes_total", 0)
        assert frames >= 3 * len(want), "idle subscribers on uvicorn's sansio protocol take the direct path"
        assert writes < frames, "a batch of events goes out in fewer writes than frames"
        for sub in subs:
            await sub.close()


async def test_stalled_subscriber_falls_back_and_misses_nothing(tmp_path: object) -> None:
    import pathlib

    # a small subscriber queue, so that a stalled reader overflows and must re-read the log
    with ServerProcess(pathlib.Path(str(tmp_path)), limits={"rate_per_second": 0}, broker_queue_size=64) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, wtoken = await take_work(client, env)
            url = f"{srv.ws_url}/v1/sessions/ws/{sid}/subscribe"
            # The stalled reader's kernel buffer is pinned small (no autotuning up to tcp_rmem's
            # max) and max_queue=1 makes its client stop reading as soon as one message waits.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
            stalled = await subscribed(url, token, max_queue=1, sock=sock)
            steady = await subscribe(srv.ws_url, sid, token)
            filler = "x" * 8000  # 1,000 × 8 KB: twice what the server's send buffer may hold
            events = [assistant(f"{i} {filler}") for i in range(1000)]
            for start in range(0, len(events), 50):
                await worker_post(client, sid, wtoken, *events[start:start + 50])
            await steady.wait_for(lambda f: f.get("uuid") == events[-1]["uuid"], timeout=60)
            got: list[dict[str, object]] = []
            async with asyncio.timeout(60):
                while not got or got[-1].get("uuid") != events[-1]["uuid"]:
                    frame = orjson.loads(await stalled.recv())
                    if frame.get("type") == "assistant":
                        got.append(frame)
            assert [f["uuid"] for f in got] == [e["uuid"] for e in events], "every event once, in order"
            metrics = await counters(client)
            assert metrics.get("subscriber_frames_queued_total", 0) > 0, "the stalled reader left the direct path"
            await stalled.close()
            await steady.close()


# ---- the v2 worker's SSE stream (api/worker_stream.py, ChunkWriter) ----------------------


async def test_idle_sse_streams_get_frames_written_directly(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        sid = await code_session(client, owner_token)
        jwt = (await bridge(client, owner_token, sid))["worker_jwt"]
        url = f"{server.url}/v1/code/sessions/{sid}/worker/events/stream"
        streams = [SSEReader(client, url, jwt) for _ in range(3)]
        warm = user_message("warm-up")  # every stream is open and parked once it has this one
        await client.post(f"/v1/sessions/{sid}/events", json={"events": [warm]}, headers=auth(owner_token))
        for stream in streams:
            await stream.wait_for(lambda e: e["payload"]["uuid"] == warm["uuid"])
        before = await counters(client)
        singles = [user_message(f"one {i}") for i in range(5)]
        for event in singles:
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [event]}, headers=auth(owner_token))
            assert r.status_code == 200
        batch = [user_message(f"batch {i}") for i in range(40)]
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": batch}, headers=auth(owner_token))
        assert r.status_code == 200
        want = [warm["uuid"]] + [e["uuid"] for e in singles + batch]
        for stream in streams:
            await stream.wait_for(lambda e: e["payload"]["uuid"] == want[-1])
            assert [e["payload"]["uuid"] for e in stream.events] == want, "every prompt once, in order"
            assert stream.ids == [e["sequence_num"] for e in stream.events] == sorted(set(stream.ids))
        after = await counters(client)
        frames = after.get("sse_frames_direct_total", 0) - before.get("sse_frames_direct_total", 0)
        writes = after.get("sse_direct_writes_total", 0) - before.get("sse_direct_writes_total", 0)
        assert frames >= 3 * (len(want) - 1), "idle SSE streams on uvicorn's httptools protocol take the direct path"
        assert writes < frames, "a batch of events goes out in fewer writes than frames"
        for stream in streams:
            await stream.close()


async def read_sse_until(reader: asyncio.StreamReader, last_uuid: str, timeout: float) -> list[dict[str, object]]:
    """The ``client_event`` payloads of a raw chunked SSE response, until ``last_uuid`` arrives."""
    raw, text, events = b"", b"", []
    async with asyncio.timeout(timeout):
        while not events or events[-1]["payload"]["uuid"] != last_uuid:  # type: ignore[index]
            raw += await reader.read(1 << 16)
            while (eol := raw.find(b"\r\n")) >= 0:
                size = int(raw[:eol], 16)
                if len(raw) < eol + 2 + size + 2:
                    break
                text += raw[eol + 2:eol + 2 + size]
                raw = raw[eol + 2 + size + 2:]
            *frames, text = text.split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"event: client_event\n"):
                    events.append(orjson.loads(frame.split(b"\ndata: ", 1)[1]))
    return events


async def test_stalled_sse_stream_falls_back_resyncs_and_misses_nothing(tmp_path: object) -> None:
    import pathlib

    # a small queue, so that a stalled stream overflows and must re-read the log
    with ServerProcess(pathlib.Path(str(tmp_path)), limits={"rate_per_second": 0}, broker_queue_size=64) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            sid = await code_session(client, token)
            jwt = (await bridge(client, token, sid))["worker_jwt"]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)  # pinned small: fills fast
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(f"GET /v1/code/sessions/{sid}/worker/events/stream HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {jwt}\r\nAccept: text/event-stream\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
            steady = SSEReader(client, f"{srv.url}/v1/code/sessions/{sid}/worker/events/stream", jwt)
            filler = "x" * 8000  # 1,000 × 8 KB: far more than the stalled stream's buffers hold
            prompts = [user_message(f"{i} {filler}") for i in range(1000)]
            for start in range(0, len(prompts), 50):
                r = await client.post(f"/v1/sessions/{sid}/events", json={"events": prompts[start:start + 50]},
                                      headers=auth(token))
                assert r.status_code == 200
            await steady.wait_for(lambda e: e["payload"]["uuid"] == prompts[-1]["uuid"], timeout=60)
            got = await read_sse_until(reader, prompts[-1]["uuid"], 60)
            assert [e["payload"]["uuid"] for e in got] == [p["uuid"] for p in prompts], "every prompt once, in order"  # type: ignore[index]
            metrics = await counters(client)
            assert metrics.get("sse_frames_queued_total", 0) > 0, "the stalled stream left the direct path"
            assert metrics.get("stream_resyncs_total", 0) > 0, "its queue overflowed: it re-read the log"
            writer.close()
            await steady.close()
