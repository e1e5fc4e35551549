"""`tether agent --sdk-url` (the reference child contract, docs/protocol.md §5): a real `tether server`, the
agent connecting by itself with CLAUDE_CODE_SESSION_ACCESS_TOKEN — v1 (session ingress) by default,
v2 (SSE + CCRClient) with CLAUDE_CODE_USE_CCR_V2 + CLAUDE_CODE_WORKER_EPOCH — and a subscriber
driving a turn with a permission prompt (the scripted model asks to use the Write tool) and an attachment
the agent downloads for itself."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.worker import Receiver, auth, create_session, register, subscribe, take_work, user_message

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(90)]

TURN = 30.0
ARGS = ("--input-format", "stream-json", "--output-format", "stream-json", "--replay-user-messages",
        "--backend", "scripted")


def agent_env(home: pathlib.Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


async def start_agent(url: str, sid: str, cwd: pathlib.Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether.cli.main", "agent", "--sdk-url", url, "--session-id", sid, *ARGS,
        cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    if proc.returncode is None:
        proc.terminate()
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def drive_turn(client: httpx.AsyncClient, owner: str, sid: str, sub: Receiver,
                     cwd: pathlib.Path) -> dict[str, Any]:
    r = await client.post("/v1/files", files={"file": ("brief.txt", b"the brief", "text/plain")}, headers=auth(owner))
    attachment = {"file_uuid": r.json()["file_uuid"], "file_name": "brief.txt"}
    prompt = {**user_message("write the note"), "file_attachments": [attachment]}
    r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}, headers=auth(owner))
    assert r.status_code == 200, r.text
    ask = await sub.wait_for(lambda f: f.get("type") == "control_request"
                             and f.get("request", {}).get("subtype") == "can_use_tool", TURN)
    assert ask["request"]["tool_name"] == "Write"
    await sub.ws.send(json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": ask["request_id"],
        "response": {"behavior": "allow", "updatedInput": ask["request"]["input"]}}}))
    result = await sub.wait_for(lambda f: f.get("type") == "result", TURN)
    assert result["subtype"] == "success" and "File created successfully" in result["result"]
    assert (cwd / "tether-note.txt").read_text() == "Hello from Tether's scripted model.\n"
    # the agent downloaded the attachment itself, from the server its --sdk-url names, with its token
    folder = cwd / ".tether" / "attachments" / ("session_" + sid.split("_", 1)[1])
    assert (folder / f"{attachment['file_uuid'][:8]}-brief.txt").read_bytes() == b"the brief"
    kinds = [f.get("type") for f in sub.frames]
    assert kinds.index("assistant") < kinds.index("control_request") < kinds.index("result")
    return prompt


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        yield c


async def test_v1_session_ingress(server: ServerProcess, owner_token: str, client: httpx.AsyncClient,
                                  tmp_path: pathlib.Path) -> None:
    env = await register(client, owner_token)
    sid = await create_session(client, owner_token, env["environment_id"])
    _, token = await take_work(client, env)
    sub = await subscribe(server.ws_url, sid, owner_token)
    proc = await start_agent(f"{server.ws_url}/v1/session_ingress/ws/{sid}", sid, tmp_path,
                             agent_env(tmp_path, CLAUDE_CODE_SESSION_ACCESS_TOKEN=token,
                                       CLAUDE_CODE_ENVIRONMENT_KIND="bridge",
                                       CLAUDE_CODE_POST_FOR_SESSION_INGRESS_V2="1"))
    try:
        prompt = await drive_turn(client, owner_token, sid, sub, tmp_path)
        # the echo says the turn started; the stored result that it ended (docs/protocol.md §4.4)
        await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]
                           and f["status"] == "processed")
        states = [f["status"] for f in sub.frames if f.get("type") == "delivery_update"
                  and f["uuid"] == prompt["uuid"]]
        assert states == ["received", "processing", "processed"]
    finally:
        code, err = await stop(proc)
        await sub.close()
    assert code == 0, err


async def test_v2_code_session_and_takeover(server: ServerProcess, owner_token: str, client: httpx.AsyncClient,
                                            tmp_path: pathlib.Path) -> None:
    r = await client.post("/v1/code/sessions", json={"title": "sdk-url v2", "bridge": {}}, headers=auth(owner_token))
    sid = r.json()["session"]["id"]
    b = (await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(owner_token))).json()
    sub = await subscribe(server.ws_url, sid, owner_token)
    proc = await start_agent(f"{server.url}/v1/code/sessions/{sid}", sid, tmp_path,
                             agent_env(tmp_path, CLAUDE_CODE_SESSION_ACCESS_TOKEN=b["worker_jwt"],
                                       CLAUDE_CODE_USE_CCR_V2="1", CLAUDE_CODE_WORKER_EPOCH=str(b["worker_epoch"]),
                                       CLAUDE_CODE_ENVIRONMENT_KIND="bridge"))
    try:
        prompt = await drive_turn(client, owner_token, sid, sub, tmp_path)
        # `processed` goes out once the turn's output (the result included) was stored
        await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]
                           and f["status"] == "processed", TURN)
        states = [f["status"] for f in sub.frames if f.get("type") == "delivery_update"
                  and f["uuid"] == prompt["uuid"]]
        assert states == ["received", "processing", "processed"]
        statuses = [f["status"] for f in sub.frames if f.get("type") == "session_update"]
        assert "requires_action" in statuses and statuses[-1] == "idle"
        session = (await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))).json()
        assert session["worker"]["connected"] is True and session["worker"]["epoch"] == b["worker_epoch"]
        # a newer worker registers: the agent's next request is refused (409) and it exits 1
        await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(owner_token))
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("for the next one")]},
                              headers=auth(owner_token))
        assert r.status_code == 200
        code, err = await stop_after_exit(proc)
        assert code == 1 and "4090" in err, err
    finally:
        if proc.returncode is None:
            await stop(proc)
        await sub.close()


async def stop_after_exit(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for the agent to exit by itself."""
    _, err = await asyncio.wait_for(proc.communicate(), TURN)
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


async def test_missing_credentials_and_bad_urls_exit_1(tmp_path: pathlib.Path) -> None:
    cases = [
        ("https://h/v1/code/sessions/cse_x", {}, "no_auth_headers"),
        ("https://h/v1/code/sessions/cse_x", {"CLAUDE_CODE_SESSION_ACCESS_TOKEN": "t",
                                              "CLAUDE_CODE_USE_CCR_V2": "1"}, "missing_epoch"),
        ("https://h/v1/code/sessions/cse_x", {"CLAUDE_CODE_SESSION_ACCESS_TOKEN": "t"}, "Unsupported protocol"),
    ]
    procs = [await start_agent(url, "cse_x", tmp_path, agent_env(tmp_path, **extra)) for url, extra, _ in cases]
    results = await asyncio.gather(*(stop_after_exit(p) for p in procs))
    for (_, _, message), (code, err) in zip(cases, results, strict=True):
        assert code == 1 and message in err, err
