"""The bridge with the STOCK `claude` CLI as the agent (installed at a pinned version by
scripts/install-test-deps into .tools/claude), offline: ANTHROPIC_BASE_URL points at the fake
Messages API of tests/support/fake_anthropic.py, no telemetry, a throwaway HOME.

A real `tether server`, a real `tether rc --json` and real `claude` children: a streamed turn, a
permission prompt answered from a subscriber (allow, and deny), an interrupt while a tool runs, a
web-composer attachment that the model gets to read."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.bridge_helpers import Api, answer, fresh, in_thread, is_permission, is_result, open_api
from tests.support.bridge import BridgeProcess, claude_bin
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import Receiver

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def claude_version() -> str:
    out = subprocess.run([str(claude_bin()), "--version"], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ.get("PATH", ""), "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as api:
        yield api


@dataclass
class Rig:
    bridge: BridgeProcess
    project: pathlib.Path
    env_id: str


@pytest.fixture(scope="module")
def rig(server: ServerProcess, owner_token: str, fake: FakeAnthropic, claude_version: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("claude-bridge")
    project, home, user_home = root / "project", root / "tether-home", root / "home"
    for d in (project, home, user_home):
        d.mkdir()
    env = {"HOME": str(user_home), "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "dummy",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1"}
    bridge = BridgeProcess(server.url, owner_token, project, home, "--no-create-session-in-dir", "--capacity", "4",
                           agent=str(claude_bin()), env=env).start()
    try:
        yield Rig(bridge, project, bridge.environment_id)
    finally:
        assert bridge.stop() == 0


@pytest.fixture
async def session(rig: Rig, server: ServerProcess, owner_token: str) -> AsyncIterator[tuple[Api, str, Receiver]]:
    """A fresh session on the claude bridge, its subscriber; archived afterwards."""
    async with open_api(server, owner_token) as client:
        api = Api(server, owner_token, client)
        sid = await api.create_session(rig.env_id)
        await in_thread(rig.bridge.wait_for, "session_started", lambda e: e["session_id"] == sid)
        sub = await api.subscribe(sid)
        try:
            yield api, sid, sub
        finally:
            await sub.close()
            await api.archive(sid)
            await in_thread(rig.bridge.wait_for, "session_ended", lambda e: e["session_id"] == sid)


async def test_streamed_turn(session: tuple[Api, str, Receiver], rig: Rig, claude_version: str) -> None:
    api, sid, sub = session
    assert claude_version.startswith("2.1.197")
    old = fresh(sub)
    await api.prompt(sid, "hello")
    result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=60)
    assert result["subtype"] == "success" and result["result"] == "Hello from the fake model."
    new = [f for f in sub.frames if id(f) not in old]
    deltas = [f for f in new if f.get("type") == "stream_event"
              and (f.get("event") or {}).get("type") == "content_block_delta"]
    assert len(deltas) >= 2, "the subscriber saw no streamed deltas"
    assert any(f.get("type") == "assistant" for f in new)
    assert any(f.get("type") == "system" and f.get("subtype") == "init" for f in new)
    assert (await api.session(sid))["session_status"] == "idle"


async def _bash_turn(api: Api, sid: str, sub: Receiver, behavior: str) -> dict[str, object]:
    old = fresh(sub)
    await api.prompt(sid, "TOOLBASH please")
    request = await sub.wait_for(lambda f: is_permission(f) and id(f) not in old, timeout=60)
    assert request["request"]["tool_name"] == "Bash"
    assert "touch from_bash.txt" in request["request"]["input"]["command"]
    assert (await api.session(sid))["session_status"] == "requires_action"
    await answer(sub, request, behavior)
    return await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=60)


async def test_permission_allowed_from_a_subscriber(session: tuple[Api, str, Receiver], rig: Rig) -> None:
    api, sid, sub = session
    (rig.project / "from_bash.txt").unlink(missing_ok=True)
    result = await _bash_turn(api, sid, sub, "allow")
    assert result["subtype"] == "success" and not result["permission_denials"]
    assert "TOOL_RESULT:hi" in str(result["result"])
    assert (rig.project / "from_bash.txt").exists()


async def test_permission_denied_from_a_subscriber(session: tuple[Api, str, Receiver], rig: Rig) -> None:
    api, sid, sub = session
    (rig.project / "from_bash.txt").unlink(missing_ok=True)
    result = await _bash_turn(api, sid, sub, "deny")
    denials = result["permission_denials"]
    assert isinstance(denials, list) and denials and denials[0]["tool_name"] == "Bash"
    assert not (rig.project / "from_bash.txt").exists()


def _sleeping_tool_pids() -> list[int]:
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"time.sleep(30)" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


async def test_interrupt_while_a_tool_runs(session: tuple[Api, str, Receiver]) -> None:
    api, sid, sub = session
    old = fresh(sub)
    await api.prompt(sid, "SLEEPTOOL now")
    request = await sub.wait_for(lambda f: is_permission(f) and id(f) not in old, timeout=60)
    await answer(sub, request, "allow")
    await eventually(_sleeping_tool_pids, timeout=30, message="the tool to run")
    interrupt_id = str(uuid.uuid4())
    await sub.ws.send(json.dumps({"type": "control_request", "request_id": interrupt_id,
                                  "request": {"subtype": "interrupt"}}))
    result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=30)
    assert result["subtype"] == "error_during_execution" and result["is_error"] is True
    acks = [f for f in sub.frames if f.get("type") == "control_response"
            and (f.get("response") or {}).get("request_id") == interrupt_id]
    assert acks and all(a["response"]["subtype"] == "success" for a in acks)
    await eventually(lambda: not _sleeping_tool_pids(), timeout=10, message="the tool to be killed")
    markers = [f for f in sub.frames if id(f) not in old and f.get("type") == "user"
               and "interrupted" in json.dumps(f.get("message", {}))]
    assert markers, "no '[Request interrupted by user]' marker reached the subscriber"
    # the session goes on after the interrupt
    old = fresh(sub)
    await api.prompt(sid, "hello again")
    result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=60)
    assert result["subtype"] == "success"


async def test_an_attached_file_reaches_the_model(session: tuple[Api, str, Receiver], rig: Rig,
                                                  fake: FakeAnthropic) -> None:
    """docs/protocol.md §7.1 with the stock CLI: the bridge downloads the upload, names it ``@"path"`` in
    the prompt, and `claude` sends its content to the model; a file that is gone is a warning."""
    api, sid, sub = session
    attached = await api.upload("notes.txt", b"ATTACHED-CONTENT-7731\nsecond line\n")
    gone = {"file_uuid": "00000000-0000-4000-8000-000000000000", "file_name": "gone.txt"}
    old = fresh(sub)
    prompt = await api.prompt(sid, "what does the file say?", file_attachments=[attached, gone])
    result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=60)
    assert result["subtype"] == "success"
    seen = [text_of(r.body["messages"]) for r in fake.message_requests()]
    seen = [t for t in seen if "ATTACHED-CONTENT-7731" in t]
    assert seen, "the model never saw the attached file's content"
    warning = await sub.wait_for(lambda f: f.get("type") == "system" and f.get("subtype") == "warning"
                                 and id(f) not in old, timeout=10)
    assert "gone.txt" in warning["message"] and warning["prompt_uuid"] == prompt["uuid"]
    stored = rig.project / ".tether" / "attachments" / sid / f"{attached['file_uuid'][:8]}-notes.txt"
    assert stored.read_bytes() == b"ATTACHED-CONTENT-7731\nsecond line\n"
    assert f'Called the Read tool with the following input: {{"file_path":"{stored}"}}' in seen[0]


def text_of(messages: list[dict[str, object]]) -> str:
    """All the text a Messages request carries (string contents and text blocks)."""
    parts = []
    for msg in messages:
        content = msg.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        parts += [str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(parts)
