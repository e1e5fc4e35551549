"""The standalone bridge on v2 work: a `tether server --worker-transport v2` hands out work secrets
with use_code_sessions, so the bridge's session host runs the CCR v2 transport (registered through
tether.client.factory.make_transport) under a `tether agent` child; a subscriber drives a turn."""

from __future__ import annotations

import asyncio
import json
import pathlib

import httpx
import pytest

from tests.support.api import mint_token
from tests.support.bridge import BridgeProcess
from tests.support.server import ServerProcess
from tests.support.worker import auth, subscribe, user_message

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_bridge_serves_a_v2_session(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "srv", args=("--worker-transport", "v2"), limits={"rate_per_second": 0}) as srv:
        owner = await asyncio.to_thread(mint_token, srv.data_dir)
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir()
        home.mkdir()
        bridge = await asyncio.to_thread(BridgeProcess(srv.url, owner, project, home).start)
        try:
            created = await asyncio.to_thread(bridge.wait_for, "session_created")
            sid = created["session_id"]
            sub = await subscribe(srv.ws_url, sid, owner)
            async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
                prompt = user_message("write the note")
                r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}, headers=auth(owner))
                assert r.status_code == 200, r.text
                ask = await sub.wait_for(lambda f: f.get("type") == "control_request", 30)
                await sub.ws.send(json.dumps({"type": "control_response", "response": {
                    "subtype": "success", "request_id": ask["request_id"],
                    "response": {"behavior": "allow", "updatedInput": ask["request"]["input"]}}}))
                result = await sub.wait_for(lambda f: f.get("type") == "result", 30)
                assert "File created successfully" in result["result"]
                # `processed` goes out once the turn's output (the result included) was stored
                await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]
                                   and f["status"] == "processed", 30)
                states = [f["status"] for f in sub.frames
                          if f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]]
                assert states == ["received", "processing", "processed"]
                session = (await client.get(f"/v1/sessions/{sid}", headers=auth(owner))).json()
                assert session["worker"]["connected"] is True and session["worker"]["epoch"] == 1
            await sub.close()
        finally:
            await asyncio.to_thread(bridge.stop)
