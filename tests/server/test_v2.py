"""CCR v2 on the server: code sessions, /bridge epochs, /worker/* routes, SSE with sequence numbers."""

from __future__ import annotations

import asyncio
import json
import pathlib
import uuid
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from tests.support.server import ServerProcess
from tests.support.worker import auth, create_session, poll, register, subscribe, user_message

pytestmark = pytest.mark.anyio


async def code_session(client: httpx.AsyncClient, token: str) -> str:
    r = await client.post("/v1/code/sessions", json={"title": "v2 test", "bridge": {}}, headers=auth(token))
    assert r.status_code == 200, r.text
    sid = r.json()["session"]["id"]
    assert sid.startswith("cse_")
    return str(sid)


async def bridge(client: httpx.AsyncClient, token: str, sid: str) -> dict[str, Any]:
    r = await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


class SSEReader:
    """Reads `client_event`s from a worker stream in the background."""

    def __init__(self, client: httpx.AsyncClient, url: str, token: str, last_id: int | None = None,
                 query: str = "") -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.comments = 0
        headers = {**auth(token), "accept": "text/event-stream"}
        if last_id is not None:
            headers["last-event-id"] = str(last_id)
        self.status: int | None = None
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(client, url + query, headers))

    async def _run(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        try:
            await self._read(client, url, headers)
        finally:
            self.changed.set()

    async def _read(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        async with aconnect_sse(client, "GET", url, headers=headers) as source:
            self.status = source.response.status_code
            if self.status != 200:
                return
            async for sse in source.aiter_sse():
                if sse.event == "client_event":
                    self.ids.append(int(sse.id))
                    self.events.append(json.loads(sse.data))
                    self.changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for ev in self.events:
                    if predicate(ev):
                        return ev
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"stream ended (status {self.status})")
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.task.cancel()
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await self.task


async def test_code_session_bridge_and_epoch_takeover(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/code/sessions", json={"title": "x"}, headers=auth(owner_token))
        assert r.status_code == 400
        sid = await code_session(client, owner_token)
        first = await bridge(client, owner_token, sid)
        assert first["worker_epoch"] == 1 and first["expires_in"] > 0 and first["api_base_url"] == server.url
        base = f"/v1/code/sessions/{sid}"
        ev = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {"content": []}}
        r = await client.post(f"{base}/worker/events", json={"worker_epoch": 1, "events": [{"payload": ev}]},
                              headers=auth(first["worker_jwt"]))
        assert r.status_code == 200
        second = await bridge(client, owner_token, sid)
        assert second["worker_epoch"] == 2
        stale = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {"content": []}}
        r = await client.post(f"{base}/worker/events", json={"worker_epoch": 1, "events": [{"payload": stale}]},
                              headers=auth(first["worker_jwt"]))
        assert r.status_code == 409 and r.json()["error"]["type"] == "epoch_superseded"
        fresh = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {"content": []}}
        r = await client.post(f"{base}/worker/events", json={"worker_epoch": "2", "events": [{"payload": fresh}]},
                              headers=auth(second["worker_jwt"]))
        assert r.status_code == 200
        r = await client.post(f"{base}/worker/register", json={}, headers=auth(second["worker_jwt"]))
        assert r.json()["worker_epoch"] == 3
        page = (await client.get(f"/v1/sessions/{sid}/events", headers=auth(owner_token))).json()["data"]
        assert [e["uuid"] for e in page] == [ev["uuid"], fresh["uuid"]]
        # credentials: a user token, and another session's worker token, are refused
        r = await client.get(f"{base}/worker", headers=auth(owner_token))
        assert r.status_code == 401
        other = await code_session(client, owner_token)
        other_jwt = (await bridge(client, owner_token, other))["worker_jwt"]
        r = await client.get(f"{base}/worker", headers=auth(other_jwt))
        assert r.status_code == 401


async def test_worker_state_metadata_and_heartbeat_ttl(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, worker_heartbeat_ttl_s=1.0) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            sid = await code_session(client, token)
            b = await bridge(client, token, sid)
            # the stock CLI's derived URL form
            base = f"/v1/session_ingress/ws/{sid.replace('cse_', 'session_')}/worker"
            w = auth(b["worker_jwt"])
            r = await client.put(base, json={"worker_status": "idle", "worker_epoch": 1,
                                             "external_metadata": {"pending_action": None, "turn": {}}}, headers=w)
            assert r.status_code == 200, r.text
            await client.put(base, json={"worker_epoch": 1, "external_metadata": {"a": 1, "b": {"x": 1}}}, headers=w)
            await client.put(base, json={"worker_epoch": 1, "external_metadata": {"a": None, "b": {"y": 2}}},
                             headers=w)
            got = (await client.get(base, headers=w)).json()["worker"]
            assert got["external_metadata"] == {"turn": {}, "b": {"y": 2}}
            r = await client.put(base, json={"worker_epoch": 1, "worker_status": "running"}, headers=w)
            s = (await client.get(f"/v1/sessions/{sid}", headers=auth(token))).json()
            assert s["session_status"] == "running" and s["worker"]["connected"] is True
            r = await client.put(base, json={"worker_epoch": 1, "worker_status": "bogus"}, headers=w)
            assert r.status_code == 400

            def disconnected() -> bool:
                s = httpx.get(f"{srv.url}/v1/sessions/{sid}", headers=auth(token)).json()
                return s["worker"]["connected"] is False

            from tests.support.server import wait_until

            await asyncio.to_thread(wait_until, disconnected, 10, 0.1, "the heartbeat to lapse")
            r = await client.post(f"{base}/heartbeat", json={"session_id": sid, "worker_epoch": 1}, headers=w)
            assert r.status_code == 200
            s = (await client.get(f"/v1/sessions/{sid}", headers=auth(token))).json()
            assert s["worker"]["connected"] is True


async def test_sse_delivery_and_resume(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid = await code_session(client, owner_token)
        b = await bridge(client, owner_token, sid)
        w = auth(b["worker_jwt"])
        base = f"/v1/code/sessions/{sid}"
        # a prompt sent before the worker connects is not lost
        early = user_message("before the stream")
        await client.post(f"/v1/sessions/{sid}/events", json={"events": [early]}, headers=auth(owner_token))
        sub = await subscribe(server.ws_url, sid, owner_token)
        stream = SSEReader(client, f"{server.url}{base}/worker/events/stream", b["worker_jwt"],
                           query="?worker_capabilities=x%2F1")
        first = await stream.wait_for(lambda e: e["payload"].get("uuid") == early["uuid"])
        assert first["event_type"] == "user" and first["source"] == "client" and first["sequence_num"] == 1
        assert first["event_id"].startswith("evt_")
        # delivery acks: received by event_id, processing/processed by payload uuid
        for status, key in (("received", first["event_id"]), ("processing", early["uuid"]),
                            ("processed", early["uuid"])):
            r = await client.post(f"{base}/worker/events/delivery",
                                  json={"worker_epoch": 1, "updates": [{"event_id": key, "status": status}]},
                                  headers=w)
            assert r.status_code == 200
        updates = [await sub.wait_for(lambda f, s=s: f.get("type") == "delivery_update" and f["status"] == s)
                   for s in ("received", "processing", "processed")]
        assert [u["uuid"] for u in updates] == [early["uuid"]] * 3
        prompts = [user_message(f"p{i}") for i in range(5)]
        for p in prompts[:2]:
            await client.post(f"/v1/sessions/{sid}/events", json={"events": [p]}, headers=auth(owner_token))
        await stream.wait_for(lambda e: e["payload"].get("uuid") == prompts[1]["uuid"])
        await stream.close()
        last_seen = stream.ids[-1]
        for p in prompts[2:]:
            await client.post(f"/v1/sessions/{sid}/events", json={"events": [p]}, headers=auth(owner_token))
        # resume by Last-Event-ID: exactly the missed inbound events
        resumed = SSEReader(client, f"{server.url}{base}/worker/events/stream", b["worker_jwt"], last_id=last_seen)
        await resumed.wait_for(lambda e: e["payload"].get("uuid") == prompts[-1]["uuid"])
        assert [e["payload"]["uuid"] for e in resumed.events] == [p["uuid"] for p in prompts[2:]]
        await resumed.close()
        # a stream opened without a resume point starts with everything not yet processed
        fresh = SSEReader(client, f"{server.url}{base}/worker/events/stream", b["worker_jwt"])
        await fresh.wait_for(lambda e: e["payload"].get("uuid") == prompts[-1]["uuid"])
        assert early["uuid"] not in [e["payload"]["uuid"] for e in fresh.events]
        await fresh.close()
        await sub.close()


async def test_env_dispatch_can_hand_out_v2_work(tmp_path: pathlib.Path) -> None:
    from tether.protocol.work_secret import decode_work_secret

    with ServerProcess(tmp_path, args=("--worker-transport", "v2")) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            item = await poll(client, env)
            assert item is not None and item["data"]["id"] == sid.replace("session_", "cse_")
            secret = decode_work_secret(item["secret"])
            assert secret.use_code_sessions is True
            r = await client.post(f"/v1/code/sessions/{item['data']['id']}/worker/register", json={},
                                  headers=auth(secret.session_ingress_token))
            assert r.status_code == 200 and r.json()["worker_epoch"] == 1
