"""`tether rc --sandbox` with the STOCK `claude` CLI (offline, the fake Messages API): the bridge forces
the CLI's own sandbox on, so the model's Bash command can write in the project but not outside it."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tests.e2e.bridge_helpers import Api, answer, fresh, in_thread, is_permission, is_result, open_api
from tests.support.bridge import BridgeProcess, claude_bin
from tests.support.fake_anthropic import (
    FakeAnthropic,
    Reply,
    last_user_message,
    text_reply,
    tool_reply,
    tool_results,
)
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(150)]


async def test_claude_sandbox_keeps_bash_writes_in_the_project(server: ServerProcess, owner_token: str,
                                                               tmp_path: pathlib.Path) -> None:
    project, outside, home, user_home = (tmp_path / n for n in ("project", "outside", "tether-home", "home"))
    for d in (project, outside, home, user_home):
        d.mkdir()
    command = f"echo in > inside.txt && echo wrote-inside; echo out > {outside}/escaped.txt || echo refused-outside"

    def model(body: Any) -> Reply:
        results = tool_results(last_user_message(body))
        if results:
            return text_reply(f"Tool said: {str(results[-1].get('content'))[:300]}")
        return tool_reply("Bash", {"command": command, "description": "Write two files"})

    with FakeAnthropic(model) as fake:
        env = {"HOME": str(user_home), "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "dummy",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1"}
        with BridgeProcess(server.url, owner_token, project, home, "--sandbox", "--spawn", "same-dir",
                           agent=str(claude_bin()), env=env) as bridge:
            sid = (await in_thread(bridge.wait_for, "session_created"))["session_id"]
            await in_thread(bridge.wait_for, "session_started", timeout=60)
            async with open_api(server, owner_token) as client:
                api = Api(server, owner_token, client)
                sub = await api.subscribe(sid)
                try:
                    old = fresh(sub)
                    await api.prompt(sid, "write the files")
                    while True:  # the CLI may ask before running a sandboxed command, or not
                        frame = await sub.wait_for(lambda f: (is_permission(f) or is_result(f)) and id(f) not in old,
                                                   timeout=90)
                        old.add(id(frame))
                        if is_result(frame):
                            break
                        await answer(sub, frame, "allow")
                finally:
                    await sub.close()
            assert frame["subtype"] == "success", frame
            said = [f for f in sub.frames if f.get("type") == "assistant" and "Tool said" in str(f)]
            assert said and "wrote-inside" in str(said[-1]) and "refused-outside" in str(said[-1]), said
            assert (project / "inside.txt").read_text() == "in\n"
            assert not (outside / "escaped.txt").exists()
