"""Server rules the REPL bridge relies on: derived titles never replace a chosen one, a mirror
session refuses client input, and a permission answered at the REPL's terminal is recorded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from tests.support.api import assert_error
from tests.support.server import ServerProcess
from tests.support.worker import auth, subscribe, user_message, worker_post

pytestmark = pytest.mark.anyio


async def patch_title(client: httpx.AsyncClient, token: str, sid: str, **body: Any) -> httpx.Response:
    return await client.patch(f"/v1/sessions/{sid}", json=body, headers=auth(token))


async def test_a_derived_title_never_replaces_a_chosen_one(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/sessions", json={"events": []}, headers=auth(owner_token))
        sid = r.json()["id"]
        r = await patch_title(client, owner_token, sid, title="Fix the parser", explicit=False)
        assert r.status_code == 200 and r.json()["title"] == "Fix the parser"
        r = await patch_title(client, owner_token, sid, title="Parser fix summary", explicit=False)
        assert r.json()["title"] == "Parser fix summary"  # derived over derived: fine
        r = await patch_title(client, owner_token, sid, title="Chosen on the web")
        assert r.json()["title"] == "Chosen on the web"
        r = await patch_title(client, owner_token, sid, title="A later placeholder", explicit=False)
        assert r.status_code == 200 and r.json()["title"] == "Chosen on the web"
        assert_error(await patch_title(client, owner_token, sid, title="x", explicit="no"), 400,
                     "invalid_request_error")
        named = await client.post("/v1/sessions", json={"title": "Named at creation"}, headers=auth(owner_token))
        r = await patch_title(client, owner_token, named.json()["id"], title="derived", explicit=False)
        assert r.json()["title"] == "Named at creation"


async def test_a_mirror_session_refuses_client_input(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/code/sessions", json={"title": "mirror", "bridge": {}, "tags": ["ccr-mirror"]},
                              headers=auth(owner_token))
        cse = r.json()["session"]["id"]
        sid = "session_" + cse.split("_", 1)[1]
        creds = (await client.post(f"/v1/code/sessions/{cse}/bridge", json={}, headers=auth(owner_token))).json()
        ask = {"type": "control_request", "request_id": "perm-1", "uuid": str(uuid.uuid4()), "request": {
            "subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "t1"}}
        r = await client.post(f"/v1/code/sessions/{cse}/worker/events", headers=auth(creds["worker_jwt"]),
                              json={"worker_epoch": creds["worker_epoch"], "events": [
                                  {"payload": user_message("typed at the terminal")}, {"payload": ask}]})
        assert r.status_code == 200, r.text
        error = assert_error(await client.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("hi")]},
                                               headers=auth(owner_token)), 403, "permission_error")
        assert "mirror" in error["message"]
        sub = await subscribe(server.ws_url, sid, owner_token, from_seq=0)
        await sub.wait_for(lambda f: f.get("type") == "control_request")  # clients can watch
        await sub.ws.send(json.dumps({"type": "control_request", "request_id": "i1", "request": {"subtype": "interrupt"}}))
        frame = await sub.wait_for(lambda f: f.get("type") == "error" and f.get("request_id") == "i1")
        assert frame["error"]["type"] == "permission_error"
        await sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": "perm-1", "response": {"behavior": "allow", "updatedInput": {}}}}))
        frame = await sub.wait_for(lambda f: f.get("type") == "error" and f.get("request_id") == "perm-1")
        assert frame["error"]["type"] == "permission_error"
        perms = (await client.get(f"/v1/sessions/{sid}/permissions", headers=auth(owner_token))).json()["data"]
        assert [p["status"] for p in perms] == ["pending"]
        events = (await client.get(f"/v1/sessions/{sid}/events", headers=auth(owner_token))).json()["data"]
        assert [e["type"] for e in events] == ["user", "control_request"]  # nothing of the client's was stored
        await sub.close()


async def test_an_answer_at_the_repl_terminal_is_recorded_and_wins(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/sessions", json={"events": []}, headers=auth(owner_token))
        sid = r.json()["id"]
        ask = {"type": "control_request", "request_id": "perm-2", "request": {
            "subtype": "can_use_tool", "tool_name": "Write", "input": {"file_path": "x"}, "tool_use_id": "t2"}}
        await worker_post(client, sid, owner_token, ask)  # a REPL v1 bridge writes with the user's credential
        sub = await subscribe(server.ws_url, sid, owner_token)
        await sub.wait_for(lambda f: f.get("request_id") == "perm-2")
        local = {"type": "control_response", "response": {"subtype": "success", "request_id": "perm-2",
                                                          "response": {"behavior": "deny", "message": "no"}}}
        await worker_post(client, sid, owner_token, local, {"type": "control_cancel_request", "request_id": "perm-2"})
        await sub.wait_for(lambda f: f.get("type") == "control_cancel_request")
        perms = (await client.get(f"/v1/sessions/{sid}/permissions", headers=auth(owner_token))).json()["data"]
        assert [(p["status"], p["answered_by"]) for p in perms] == [("denied", "local")]
        await sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": "perm-2", "response": {"behavior": "allow", "updatedInput": {}}}}))
        frame = await sub.wait_for(lambda f: f.get("type") == "error")
        assert frame["error"]["type"] == "already_resolved"
        session = (await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))).json()
        assert session["session_status"] != "requires_action"
        await sub.close()
