"""A whole v1 round trip against a real server: register → work → worker socket → subscriber →
prompt → permission (first writer wins) → result → archive."""

from __future__ import annotations

import uuid

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import (
    auth,
    connect_worker,
    create_session,
    register,
    subscribe,
    take_work,
    user_message,
    worker_post,
)

pytestmark = pytest.mark.anyio


async def test_prompt_permission_result_round_trip(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        assert sid.startswith("session_")
        item, wtoken = await take_work(client, env)
        assert item["data"] == {"type": "session", "id": sid}

        worker = await connect_worker(server.ws_url, sid, wtoken)
        init = await worker.wait_for(lambda f: f.get("type") == "control_request")
        assert init["request"]["subtype"] == "initialize"
        # answer initialize (not logged)
        await worker_post(client, sid, wtoken, {"type": "control_response", "response": {
            "subtype": "success", "request_id": init["request_id"], "response": {}}})

        sub = await subscribe(server.ws_url, sid, owner_token)
        prompt = user_message("hello there, list the files")
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}, headers=auth(owner_token))
        assert r.status_code == 200, r.text
        got = await worker.wait_for(lambda f: f.get("uuid") == prompt["uuid"])
        assert got["message"]["content"] == "hello there, list the files"
        seen = await sub.wait_for(lambda f: f.get("uuid") == prompt["uuid"])
        assert seen["sequence_num"] == 1

        session = (await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))).json()
        assert session["session_status"] == "running"
        assert session["title"] == "hello there, list the files"
        assert session["worker"]["connected"] is True

        # worker echoes the prompt (deduplicated), streams, and asks for permission
        echo = {**prompt, "isReplay": True}
        stream = {"type": "stream_event", "uuid": str(uuid.uuid4()), "event": {"type": "content_block_delta"}}
        ask = {"type": "control_request", "request_id": "req-1", "request": {
            "subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "toolu_1"}}
        await worker_post(client, sid, wtoken, echo, stream, ask)
        live = await sub.wait_for(lambda f: f.get("type") == "stream_event")
        assert live["ephemeral"] is True
        await sub.wait_for(lambda f: f.get("type") == "control_request")
        await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f.get("status") == "processing")
        session = (await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))).json()
        assert session["session_status"] == "requires_action"
        perms = (await client.get(f"/v1/sessions/{sid}/permissions", headers=auth(owner_token))).json()["data"]
        assert [p["status"] for p in perms] == ["pending"]

        # a late subscriber gets the pending request in its first frames
        late = await subscribe(server.ws_url, sid, owner_token)
        first = await late.wait_for(lambda f: f.get("type") == "control_request")
        assert first["request_id"] == "req-1"

        # two answers race: the first wins, the second gets already_resolved
        allow = {"type": "control_response", "response": {"subtype": "success", "request_id": "req-1",
                 "response": {"behavior": "allow", "updatedInput": {}}}}
        deny = {"type": "control_response", "response": {"subtype": "success", "request_id": "req-1",
                "response": {"behavior": "deny", "message": "no"}}}
        await sub.ws.send(__import__("json").dumps(allow))
        await worker.wait_for(lambda f: f.get("type") == "control_response")
        await late.ws.send(__import__("json").dumps(deny))
        err = await late.wait_for(lambda f: f.get("type") == "error")
        assert err["error"]["type"] == "already_resolved"
        await late.wait_for(lambda f: f.get("type") == "control_response")  # the resolution fans out
        perms = (await client.get(f"/v1/sessions/{sid}/permissions", headers=auth(owner_token))).json()["data"]
        assert perms[0]["status"] == "allowed"

        result = {"type": "result", "subtype": "success", "uuid": str(uuid.uuid4()), "is_error": False,
                  "result": "done"}
        await worker_post(client, sid, wtoken, result)
        await sub.wait_for(lambda f: f.get("type") == "result")
        # the turn's result is stored: the prompt is done (its echo only said it started)
        await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]
                           and f.get("status") == "processed")
        session = (await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))).json()
        assert session["session_status"] == "idle"

        # interrupt from a subscriber is acked and delivered
        await sub.ws.send('{"type":"control_request","request_id":"int-1","request":{"subtype":"interrupt"}}')
        ack = await sub.wait_for(lambda f: f.get("type") == "control_response"
                                 and f["response"].get("request_id") == "int-1")
        assert ack["response"]["subtype"] == "success"
        await worker.wait_for(lambda f: f.get("request_id") == "int-1")

        # the log has each event exactly once, in order
        page = (await client.get(f"/v1/sessions/{sid}/events", headers=auth(owner_token))).json()
        seqs = [e["sequence_num"] for e in page["data"]]
        assert seqs == list(range(1, len(seqs) + 1))
        uuids = [e["uuid"] for e in page["data"]]
        assert len(uuids) == len(set(uuids))
        assert prompt["uuid"] in uuids and stream["uuid"] not in uuids

        r = await client.post(f"/v1/sessions/{sid}/archive", json={}, headers=auth(owner_token))
        assert r.status_code == 200
        code, _ = await worker.closed
        assert code == 4001
        r = await client.post(f"/v1/sessions/{sid}/archive", json={}, headers=auth(owner_token))
        assert r.status_code == 409 and r.json()["error"]["type"] == "already_archived"
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("x")]},
                              headers=auth(owner_token))
        assert r.status_code == 409
        for rcv in (sub, late):
            await rcv.close()


async def test_fan_out_keeps_the_worker_order(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        _, wtoken = await take_work(client, env)
        sub = await subscribe(server.ws_url, sid, owner_token)
        batch = [
            {"type": "stream_event", "uuid": "s1", "event": {}},
            {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {}},
            {"type": "stream_event", "uuid": "s2", "event": {}},
            {"type": "stream_event", "uuid": "s3", "event": {}},
            {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {}},
        ]
        await worker_post(client, sid, wtoken, *batch)
        await sub.wait_for(lambda f: f.get("uuid") == batch[-1]["uuid"])
        got = [(f["uuid"], f["sequence_num"]) for f in sub.frames if f.get("type") in ("assistant", "stream_event")]
        assert [u for u, _ in got] == [e["uuid"] for e in batch]
        assert [s for _, s in got] == [0, 1, 1, 1, 2]
        await sub.close()
