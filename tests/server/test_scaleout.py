"""A real `tether server` with ``--redis-url``: it serves, follows the bus, and stops cleanly."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import time

import httpx
import pytest
from tests.server.test_v2 import code_session
from tests.support.server import ServerProcess
from tests.support.worker import auth, subscribe, user_message

pytestmark = pytest.mark.anyio


async def test_a_server_on_redis_fans_out_and_stops_cleanly(tmp_path: pathlib.Path, shared_redis_url: str) -> None:
    server = ServerProcess(tmp_path / "server", redis_url=shared_redis_url, redis_prefix=f"t-{tmp_path.name}",
                           limits={"rate_per_second": 0}).start()
    try:
        token = server.token()
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            sid = await code_session(client, token)
            sub = await subscribe(server.ws_url, sid, token)
            msg = user_message("on the bus")
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(token))
            assert r.status_code == 200, r.text
            await sub.wait_for(lambda f: f.get("uuid") == msg["uuid"])

            async def sent() -> str | None:
                text = (await client.get("/metrics", headers=auth(token))).text
                return text if "tether_bus_entries_sent_total" in text else None

            metrics = None
            async with asyncio.timeout(10):  # (the notice leaves after the commit, from the sender task)
                while metrics is None:
                    metrics = await sent()
            assert "tether_bus_live 1" in metrics, metrics
            await sub.close()
    finally:
        started = time.monotonic()
        code = server.stop()
        took = time.monotonic() - started
    log = server.log_path.read_text()
    # uvicorn re-raises SIGTERM once its shutdown is done: -15 is the clean end
    assert code in (0, -signal.SIGTERM), (code, log[-3000:])
    assert took < 10 and "Traceback" not in log, log[-3000:]
