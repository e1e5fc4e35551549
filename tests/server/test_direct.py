"""Direct fan-out (server/api/direct.py): subscribers whose sender is idle get frames written
straight to their socket, batched per loop step; a subscriber that stops reading falls back to
its queue, overflows, and re-reads from the log — every subscriber still sees every event
once, in sequence order."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid

import httpx
import orjson
import pytest
import websockets
from tests.support.server import ServerProcess
from tests.support.worker import auth, create_session, register, subscribe, take_work, worker_post

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
