"""Sessions on a runner: E1 ``kind: "cloud"``, S1 ``target: "runner"`` and what reaches the work secret."""

from __future__ import annotations

import uuid

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import auth, register, take_work

from tether.protocol.work_secret import decode_work_secret

pytestmark = pytest.mark.anyio


def _fresh_org_token(server: ServerProcess) -> str:
    return server.token(org=f"runner-{uuid.uuid4().hex[:8]}", user=f"{uuid.uuid4().hex[:8]}@example.com")


async def test_target_runner_needs_an_online_runner(server: ServerProcess) -> None:
    token = _fresh_org_token(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        await register(client, token)  # a plain bridge does not count
        r = await client.post("/v1/sessions", json={"target": "runner", "title": "x"}, headers=auth(token))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["type"] == "runner_unavailable"
        assert "tether runner" in r.json()["error"]["message"]
        listed = (await client.get("/v1/sessions", headers=auth(token))).json()["data"]
        assert listed == []  # nothing was created


async def test_target_runner_picks_the_runner_and_the_secret_carries_the_context(server: ServerProcess) -> None:
    token = _fresh_org_token(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        bridge = await register(client, token)
        runner = await register(client, token, kind="cloud", machine_name="runner-box")
        envs = {e["id"]: e for e in (await client.get("/v1/environments", headers=auth(token))).json()["data"]}
        assert envs[runner["environment_id"]]["kind"] == "cloud"
        assert envs[bridge["environment_id"]]["kind"] == "bridge"
        context = {"sources": [{"type": "git_repository", "url": "https://h/acme/app.git", "revision": "dev"}],
                   "environment_variables": {"A": "1"}, "claude_code_args": {"model": "opus"},
                   "mcp_config": {"mcpServers": {}}}
        r = await client.post("/v1/sessions", headers=auth(token), json={
            "target": "runner", "session_context": context,
            "auth": [{"type": "github", "token": "ghs_secret"}],
            "events": [{"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": "hi"}}]})
        assert r.status_code == 200, r.text
        session = r.json()
        assert session["environment_id"] == runner["environment_id"]
        assert "ghs_secret" not in r.text  # auth never appears in the session resource
        got = (await client.get(f"/v1/sessions/{session['id']}", headers=auth(token))).text
        assert "ghs_secret" not in got
        item, _ = await take_work(client, runner)
        secret = decode_work_secret(item["secret"])
        assert secret.sources == context["sources"]
        assert secret.auth == [{"type": "github", "token": "ghs_secret"}]
        assert secret.extra["environment_variables"] == {"A": "1"}
        assert secret.extra["claude_code_args"] == {"model": "opus"}
        assert secret.extra["mcp_config"] == {"mcpServers": {}}


async def test_bad_runner_fields_are_refused(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        for body in ({"target": "cloud"}, {"target": "runner", "environment_id": env["environment_id"]},
                     {"session_context": {"sources": "https://x"}},
                     {"session_context": {"environment_variables": {"A": 1}}},
                     {"session_context": {"claude_code_args": ["--model"]}},
                     {"auth": [{"type": "github"}]}, {"auth": "token"}):
            r = await client.post("/v1/sessions", json=body, headers=auth(owner_token))
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
        r = await client.post("/v1/environments/bridge", json={"kind": "vm"}, headers=auth(owner_token))
        assert r.status_code == 400 and "'kind'" in r.json()["error"]["message"]
