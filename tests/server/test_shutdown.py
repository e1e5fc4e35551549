"""SIGTERM ends streams, long polls and sockets at once: clients see 1012 and resume elsewhere."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time

import httpx
import pytest
from tests.support.server import ServerProcess, wait_until
from tests.support.worker import auth, register, subscribe

pytestmark = pytest.mark.anyio


async def test_sigterm_is_prompt_with_open_streams(tmp_path: pathlib.Path) -> None:
    srv = ServerProcess(tmp_path).start()
    try:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            env = await register(client, token)
            r = await client.post("/v1/code/sessions", json={"title": "t", "bridge": {}}, headers=auth(token))
            sid = r.json()["session"]["id"]
            jwt = (await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(token))).json()
            sub = await subscribe(srv.ws_url, sid, token)
            opened = asyncio.Event()

            async def stream() -> None:
                async with client.stream("GET", f"/v1/code/sessions/{sid}/worker/events/stream",
                                         headers=auth(jwt["worker_jwt"])) as resp:
                    async for _ in resp.aiter_bytes():
                        opened.set()

            async def long_poll() -> object:
                r = await client.get(f"/v1/environments/{env['environment_id']}/work/poll",
                                     headers=auth(env["environment_secret"]))
                return r.json()

            streamer = asyncio.create_task(stream())
            poller = asyncio.create_task(long_poll())
            await asyncio.wait_for(opened.wait(), 10)

            def poll_parked() -> bool:  # the server counts a poll when it starts waiting
                metrics = httpx.get(f"{srv.url}/metrics").text
                return "tether_polls_total 1" in metrics

            await asyncio.to_thread(wait_until, poll_parked, 15, 0.02, "the long poll to park")
            assert srv.proc is not None
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            code, _ = await asyncio.wait_for(sub.closed, 10)
            assert code == 1012
            await asyncio.wait_for(streamer, 10)
            assert await asyncio.wait_for(poller, 10) is None
            await asyncio.to_thread(srv.proc.wait, 10)
            assert time.monotonic() - started < 4, "shutdown must not wait for the graceful timeout"
    finally:
        srv.stop()
