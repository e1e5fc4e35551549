"""Environments API rules: registration, reattach, stop, deregister, reconnect, expiry."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from typing import Any

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import auth, create_session, poll, register, take_work

pytestmark = pytest.mark.anyio


async def test_register_is_idempotent_on_environment_id(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        first = await register(client, owner_token)
        assert first["environment_id"].startswith("env_") and first["environment_secret"]
        again = await register(client, owner_token, environment_id=first["environment_id"])
        assert again["environment_id"] == first["environment_id"]
        # the old secret is rotated away; the new one polls
        r = await client.get(f"/v1/environments/{first['environment_id']}/work/poll?reclaim_older_than_ms=1",
                             headers=auth(first["environment_secret"]))
        assert r.status_code == 401
        unknown = await register(client, owner_token, environment_id="env_01m80c63hb6vk3vn8zsn59j2dz")
        assert unknown["environment_id"] != "env_01m80c63hb6vk3vn8zsn59j2dz"
        r = await client.post("/v1/environments/bridge", json={"environment_id": str(uuid.uuid4())},
                              headers=auth(owner_token))
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        listed = (await client.get("/v1/environments", headers=auth(owner_token))).json()["data"]
        mine = [e for e in listed if e["id"] == first["environment_id"]]
        assert mine and mine[0]["machine_name"] == "test-box" and mine[0]["max_sessions"] == 4
        assert mine[0]["worker_type"] == "claude_code" and mine[0]["online"] is True


async def test_register_validates_fields(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        for bad in ({"max_sessions": 0}, {"max_sessions": "3"}, {"metadata": []}, {"machine_name": 7},
                    {"metadata": {"worker_type": 5}}):
            r = await client.post("/v1/environments/bridge", json=bad, headers=auth(owner_token))
            assert r.status_code == 400, bad
            assert r.json()["error"]["type"] == "invalid_request_error"


async def test_stop_without_force_requeues_undelivered_input(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        envid = env["environment_id"]
        sid = await create_session(client, owner_token, envid)
        item, _ = await take_work(client, env)
        prompt = {"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": "hi"}}
        await client.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}, headers=auth(owner_token))
        r = await client.post(f"/v1/environments/{envid}/work/{item['id']}/stop", json={"force": False},
                              headers=auth(owner_token))
        assert r.status_code == 200
        again = await poll(client, env)
        assert again is not None and again["data"]["id"] == sid and again["id"] != item["id"]
        r = await client.post(f"/v1/environments/{envid}/work/{again['id']}/stop", json={"force": True},
                              headers=auth(owner_token))
        assert r.status_code == 200
        r = await client.post(f"/v1/environments/{envid}/work/{again['id']}/stop", json={"force": "yes"},
                              headers=auth(owner_token))
        assert r.status_code == 400


async def test_reconnect_accepts_both_costumes_and_supersedes(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        envid = env["environment_id"]
        sid = await create_session(client, owner_token, envid)
        item, token = await take_work(client, env)
        for costume in (sid, sid.replace("session_", "cse_")):
            r = await client.post(f"/v1/environments/{envid}/bridge/reconnect", json={"session_id": costume},
                                  headers=auth(owner_token))
            assert r.status_code == 200, r.text
            fresh = await poll(client, env)
            assert fresh is not None and fresh["data"]["id"] == sid
        r = await client.post(f"/v1/environments/{envid}/work/{item['id']}/ack", json={}, headers=auth(token))
        assert r.status_code == 410, "a superseded work item answers 410"
        r = await client.post(f"/v1/environments/{envid}/bridge/reconnect",
                              json={"session_id": "session_01m80c63hb6vk3vn8zsn59j2dz"}, headers=auth(owner_token))
        assert r.status_code == 404


async def test_a_poll_whose_secret_was_replaced_meanwhile_takes_no_work(server: ServerProcess,
                                                                      owner_token: str) -> None:
    """A long poll is authenticated when it begins. Another bridge re-attaches the environment while
    it waits (a new secret) and its session is queued: the waiting poll is refused (401) instead of
    leasing the item to the bridge that was replaced; the new secret's poll gets it."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        first = await register(client, owner_token)
        envid = first["environment_id"]
        before = await polls_total(client)
        stale = asyncio.create_task(client.get(f"/v1/environments/{envid}/work/poll",
                                               headers=auth(first["environment_secret"])))
        await eventually_async(lambda: polls_total(client), before)
        again = await register(client, owner_token, environment_id=envid)
        sid = await create_session(client, owner_token, envid)
        r = await stale
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", r.text
        item = await poll(client, again)
        assert item is not None and item["data"]["id"] == sid


async def polls_total(client: httpx.AsyncClient) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("tether_polls_total "):
            return float(line.split()[1])
    return 0.0


async def eventually_async(probe: Any, above: float, timeout: float = 10.0) -> None:
    """Until the async ``probe`` answers more than ``above`` (polled, like tests/support/waiting.py)."""
    async with asyncio.timeout(timeout):
        while True:
            if await probe() > above:
                return
            await asyncio.sleep(0.02)


async def test_deregister_stops_polling(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        envid = env["environment_id"]
        r = await client.delete(f"/v1/environments/bridge/{envid}", headers=auth(owner_token))
        assert r.status_code == 200
        r = await client.get(f"/v1/environments/{envid}/work/poll", headers=auth(env["environment_secret"]))
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        # re-registration with the same id brings it back
        again = await register(client, owner_token, environment_id=envid)
        assert again["environment_id"] == envid


async def test_environment_expires_without_polls(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, environment_ttl_s=0.5, poll_timeout_s=0.2) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            envid = env["environment_id"]
            import asyncio

            await asyncio.sleep(0.8)  # the scenario is "no poll for longer than the TTL"
            r = await client.get(f"/v1/environments/{envid}/work/poll", headers=auth(env["environment_secret"]))
            assert r.status_code == 410 and r.json()["error"]["type"] == "environment_expired"
            fresh = await register(client, token, environment_id=envid)
            assert fresh["environment_id"] != envid


async def test_sessions_of_another_org_are_not_found(server: ServerProcess, owner_token: str) -> None:
    other = server.token(org="other-org", user="someone@other", role="owner")
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        for method, path in (("GET", f"/v1/sessions/{sid}"), ("GET", f"/v1/sessions/{sid}/events"),
                             ("POST", f"/v1/sessions/{sid}/archive")):
            r = await client.request(method, path, headers=auth(other), json={} if method == "POST" else None)
            assert r.status_code == 404, (method, path, r.status_code)
        r = await client.post("/v1/sessions", json={"environment_id": env["environment_id"]}, headers=auth(other))
        assert r.status_code == 404
