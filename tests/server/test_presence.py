"""``session_update`` carries the worker's health (docs/protocol.md §8.4), so clients learn at once when
a worker connects, registers, states its status, disconnects or falls silent past the heartbeat TTL —
even when nothing else about the session changed."""

from __future__ import annotations

import pathlib
from typing import Any

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import auth, connect_worker, create_session, subscribe

pytestmark = pytest.mark.anyio


def update(connected: bool, status: str | None = None) -> Any:
    def matches(frame: dict[str, Any]) -> bool:
        worker = frame.get("worker") or {}
        return (frame.get("type") == "session_update" and worker.get("connected") is connected
                and (status is None or worker.get("status") == status))
    return matches


async def test_a_v1_worker_socket_opening_and_closing_is_told(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid = await create_session(client, owner_token)
        sub = await subscribe(server.ws_url, sid, owner_token)
        worker = await connect_worker(server.ws_url, sid, owner_token)  # a REPL v1 bridge: a user credential
        frame = await sub.wait_for(update(True, "connected"))
        assert frame["session_id"] == sid and frame["status"] == "idle" and frame["worker"]["epoch"] == 0
        await worker.close()
        await sub.wait_for(update(False, "disconnected"))  # the same status, title and sequence number
        await sub.close()


async def test_a_v2_worker_registering_stating_and_falling_silent_is_told(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, worker_heartbeat_ttl_s=1.0, lease_check_interval_s=0.2) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            r = await client.post("/v1/code/sessions", json={"title": "presence", "bridge": {}}, headers=auth(token))
            cse = r.json()["session"]["id"]
            sid = "session_" + cse.split("_", 1)[1]
            sub = await subscribe(srv.ws_url, sid, token)
            creds = (await client.post(f"/v1/code/sessions/{cse}/bridge", json={}, headers=auth(token))).json()
            frame = await sub.wait_for(update(True, "idle"))
            assert frame["worker"]["epoch"] == creds["worker_epoch"] == 1
            w = auth(creds["worker_jwt"])
            r = await client.put(f"/v1/code/sessions/{cse}/worker", headers=w,
                                 json={"worker_epoch": 1, "worker_status": "running"})
            assert r.status_code == 200, r.text
            frame = await sub.wait_for(update(True, "running"))
            assert frame["status"] == "running"
            # no heartbeat for the TTL (1 s): the presence sweep tells the clients the worker is gone
            await sub.wait_for(update(False, "running"), timeout=10)
            session = (await client.get(f"/v1/sessions/{sid}", headers=auth(token))).json()
            assert session["worker"]["connected"] is False
            r = await client.post(f"/v1/code/sessions/{cse}/worker/heartbeat", headers=w, json={"worker_epoch": 1})
            assert r.status_code == 200, r.text
            await sub.wait_for(lambda f: update(True, "running")(f) and f is not frame)  # back: told again
            await sub.close()
