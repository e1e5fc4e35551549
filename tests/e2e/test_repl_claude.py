"""The REPL over the STOCK `claude` CLI (stream-json, installed by scripts/install-test-deps), offline
against the fake Messages API, in tmux, with remote control: a turn at the terminal, `/rc` (the
history reaches a subscriber), a prompt from the web that needs permission, answered on the web, and
a prompt with a file attached on the web, whose content reaches the model."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import mint_token
from tests.support.bridge import claude_bin
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.server import ServerProcess
from tests.support.tmux_pane import PaneTerminal
from tests.support.waiting import eventually
from tests.support.worker import auth, subscribe, user_message

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as api:
        yield api


async def test_repl_over_the_stock_cli(fake: FakeAnthropic, tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        project, home, user_home = tmp_path / "project", tmp_path / "tether-home", tmp_path / "home"
        for d in (project, home, user_home):
            d.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(user_home), "TERM": "xterm-256color",
               "LANG": "C.UTF-8", "TETHER_HOME": str(home), "TETHER_SERVER": server.url, "TETHER_TOKEN": token,
               "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "dummy", "DISABLE_TELEMETRY": "1",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        argv = [sys.executable, "-m", "tether.cli.main", "--agent", str(claude_bin())]
        term = await asyncio.to_thread(PaneTerminal, argv, project, env, tmp_path)
        try:
            await asyncio.to_thread(term.wait_for, r"/help for commands", 60)
            await asyncio.to_thread(term.type, "hello there")
            await asyncio.to_thread(term.wait_for, r"Hello from the fake model\.", 60)
            await asyncio.to_thread(term.wait_for, r"✓ ", 60)
            await asyncio.to_thread(term.type, "/rc")
            match = await asyncio.to_thread(term.wait_for, r"Remote Control active · \S+/code/(session_[0-9a-z]+)", 60)
            sid = match.group(1)
            sub = await subscribe(server.ws_url, sid, token, 0)
            await eventually(lambda: [f.get("type") for f in sub.frames if f.get("type") in ("user", "assistant")]
                             == ["user", "assistant"], 30, message="the history")
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                r = await http.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("please TOOLWRITE")]},
                                    headers=auth(token))
                assert r.status_code == 200, r.text
                ask = await sub.wait_for(lambda f: f.get("type") == "control_request", 60)
                assert ask["request"]["tool_name"] == "Write"
                await asyncio.to_thread(term.wait_for, r"Allow Write\?", 30, screen=True)
                await sub.ws.send(json.dumps({"type": "control_response", "response": {
                    "subtype": "success", "request_id": ask["request_id"],
                    "response": {"behavior": "allow", "updatedInput": ask["request"]["input"]}}}))
                await asyncio.to_thread(term.wait_for, r"allowed Write on another device", 30)
                await sub.wait_for(lambda f: f.get("type") == "result" and "TOOL_RESULT" in str(f.get("result")), 60)
                assert (project / "hello.txt").read_text() == "hello from fake model\n"
                await asyncio.to_thread(term.wait_for, r"remote ❯ please TOOLWRITE", 5)

                # a file attached on the web: downloaded with the login, named in the prompt, read by claude
                up = await http.post("/v1/files", files={"file": ("notes.txt", b"REPL-ATTACHED-4417\n", "text/plain")},
                                     headers=auth(token))
                assert up.status_code == 200, up.text
                attached = {"file_uuid": up.json()["file_uuid"], "file_name": "notes.txt"}
                msg = {**user_message("what does the file say?"), "file_attachments": [attached]}
                before = len(sub.frames)
                r = await http.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(token))
                assert r.status_code == 200, r.text
                stored = project / ".tether" / "attachments" / sid / f"{attached['file_uuid'][:8]}-notes.txt"
                await asyncio.to_thread(term.wait_for, r'remote ❯ @"/', 30)  # (the long path wraps)
                await sub.wait_for(lambda f: f.get("type") == "result" and sub.frames.index(f) >= before, 60)
                assert stored.read_bytes() == b"REPL-ATTACHED-4417\n"
                assert any("REPL-ATTACHED-4417" in json.dumps(q.body) for q in fake.message_requests()), \
                    "the model never saw the attached file's content"
            await sub.close()
            await asyncio.to_thread(term.keys, "C-d")
            assert await asyncio.to_thread(term.wait_exit, 60) == 0
        finally:
            await asyncio.to_thread(term.close)
