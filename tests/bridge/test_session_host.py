"""The session host end to end: a real `tether server`, a HybridTransport, the scripted stand-in
agent (tests/support/stub_agent.py) as the agent process, and a subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.support.rotation import jwt_exp, redispatch
from tests.support.server import ROOT, ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth, create_session, register, subscribe, take_work, user_message

from tether.bridge.agent_process import AgentSpec
from tether.bridge.attachments import AttachmentFetcher
from tether.bridge.session_host import HostConfig, SessionHost, SessionOutcome, exit_status, initialize_reply
from tether.client.factory import make_transport
from tether.client.hybrid import HybridConfig, HybridTransport
from tether.client.transport import TransportState
from tether.protocol.backoff import Backoff
from tether.protocol.work_secret import decode_work_secret

pytestmark = pytest.mark.anyio

STUB = ROOT / "tests" / "support" / "stub_agent.py"
FAST = HybridConfig(
    ping_interval=0.5,
    reconnect_backoff=lambda: Backoff(0.1, 0.5, 0.25, 600.0, 60.0),
    post_backoff=lambda: Backoff(0.05, 0.5, additive_jitter=0.05),
)


@dataclass
class Rig:
    client: httpx.AsyncClient
    server: ServerProcess
    owner: str
    env: dict[str, Any]
    sid: str
    token: str
    transport: HybridTransport
    host: SessionHost
    sub: Receiver
    agent_log: pathlib.Path
    outcome: SessionOutcome | None = None

    async def prompt(self, text: str, **fields: Any) -> dict[str, Any]:
        msg = {**user_message(text), **fields}
        r = await self.client.post(f"/v1/sessions/{self.sid}/events", json={"events": [msg]},
                                   headers=auth(self.owner))
        assert r.status_code == 200, r.text
        return msg

    async def upload(self, name: str, content: bytes) -> str:
        r = await self.client.post("/v1/files", files={"file": (name, content, "application/octet-stream")},
                                   headers=auth(self.owner))
        assert r.status_code == 200, r.text
        return str(r.json()["file_uuid"])

    async def answer(self, request_id: str, decision: dict[str, Any]) -> None:
        await self.sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": request_id, "response": decision}}))

    async def result(self, sub: Receiver | None = None, **fields: Any) -> dict[str, Any]:
        return await (sub or self.sub).wait_for(
            lambda f: f.get("type") == "result" and all(f.get(k) == v for k, v in fields.items()), timeout=20)

    def agent_stdin(self) -> list[dict[str, Any]]:
        if not self.agent_log.exists():
            return []
        return [json.loads(line) for line in self.agent_log.read_text().splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def hosted(server: ServerProcess, owner: str, tmp_path: pathlib.Path) -> AsyncIterator[Rig]:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner)
        sid = await create_session(client, owner, env["environment_id"])
        item, token = await take_work(client, env)
        agent_log = tmp_path / "agent-stdin.jsonl"
        # v1 (HybridTransport) unless the server hands out v2 work (V2Transport)
        transport = await make_transport(decode_work_secret(item["secret"]), base_url=server.url,
                                         session_id=item["data"]["id"], hybrid_config=FAST)
        spec = AgentSpec([sys.executable, str(STUB)], cwd=str(tmp_path), include_partial_messages=True,
                         env={"STUB_AGENT_LOG": str(agent_log)})
        fetcher = AttachmentFetcher(server.url, token, str(tmp_path), sid)
        host = SessionHost(sid, transport, spec, HostConfig(term_grace=5, eof_grace=5), attachments=fetcher)
        sub = await subscribe(server.ws_url, sid, owner)
        rig = Rig(client, server, owner, env, sid, token, transport, host, sub, agent_log)
        try:
            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(host.run())
                assert await host.wait_started(15)
                assert await transport.wait_connected(15)
                try:
                    yield rig
                finally:
                    host.stop()
                    async with asyncio.timeout(30):
                        rig.outcome = await run
        finally:
            await sub.close()


def durable(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(f["sequence_num"], f["uuid"]) for f in frames
            if f.get("type") in ("user", "assistant", "result", "system", "control_request") and "sequence_num" in f]


def test_exit_status_mapping() -> None:
    assert exit_status(0, stopped_by_host=False) == "completed"
    assert exit_status(1, stopped_by_host=False) == "failed"
    assert exit_status(-15, stopped_by_host=False) == "interrupted"
    assert exit_status(-2, stopped_by_host=False) == "interrupted"
    assert exit_status(-9, stopped_by_host=False) == "failed"
    assert exit_status(0, stopped_by_host=True) == "interrupted"
    assert initialize_reply(None, 7) == {"commands": [], "agents": [], "output_style": "normal",
                                         "available_output_styles": ["normal"], "models": [], "account": {},
                                         "pid": 7}


def test_agent_argv_and_environment_hold_no_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_SESSION_ACCESS_TOKEN", "secret")
    spec = AgentSpec(["claude"], cwd="/tmp", include_partial_messages=True, permission_mode="plan", model="m",
                     env={"CLAUDE_CODE_OAUTH_TOKEN": "x", "EXTRA": "1"})
    assert spec.argv() == ["claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json",
                           "--verbose", "--replay-user-messages", "--permission-prompt-tool", "stdio",
                           "--include-partial-messages", "--permission-mode", "plan", "--model", "m"]
    env = spec.environment()
    assert "CLAUDE_CODE_SESSION_ACCESS_TOKEN" not in env and "CLAUDE_CODE_OAUTH_TOKEN" not in env
    assert env["EXTRA"] == "1"


async def test_a_streamed_turn_end_to_end(server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await eventually(lambda: rig.host.stats.initialize_answered == 1, message="initialize answered")
        assert rig.host.agent_capabilities is not None
        assert rig.host.agent_capabilities["commands"][0]["name"] == "stub"
        prompt = await rig.prompt("hello over the bridge")
        result = await rig.result()
        assert result["subtype"] == "success" and result["result"] == "echo: hello over the bridge"
        # (the server fans a batch's ephemeral events out after its durable ones: wait for the last delta)
        await rig.sub.wait_for(lambda f: f.get("type") == "stream_event" and f["event"]["type"] == "message_stop")
        streamed = "".join(f["event"]["delta"]["text"] for f in rig.sub.frames
                           if f.get("type") == "stream_event" and f["event"]["type"] == "content_block_delta")
        assert streamed == "echo: hello over the bridge"
        said = [f["message"]["content"][0]["text"] for f in rig.sub.frames if f.get("type") == "assistant"]
        assert said == ["echo: hello over the bridge"]
        await rig.sub.wait_for(lambda f: f.get("type") == "delivery_update" and f.get("uuid") == prompt["uuid"]
                               and f.get("status") == "processed")
        assert rig.host.state == "idle" and rig.host.title == "hello over the bridge"
        assert [a.summary for a in rig.host.activities][-1] == "Session completed"
        session = (await rig.client.get(f"/v1/sessions/{rig.sid}", headers=auth(rig.owner))).json()
        assert session["session_status"] == "idle"
        stdin = rig.agent_stdin()
        assert [m["type"] for m in stdin] == ["control_request", "user"]
        assert stdin[0]["request"]["subtype"] == "initialize" and stdin[1]["uuid"] == prompt["uuid"]
        assert rig.token not in rig.agent_log.read_text()
    assert rig.outcome is not None and rig.outcome.status == "interrupted"
    assert rig.transport.state is TransportState.CLOSED


async def test_permission_allowed_from_the_subscriber(server: ServerProcess, owner_token: str,
                                                      tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt("please TOOL the file")
        ask = await rig.sub.wait_for(lambda f: f.get("type") == "control_request")
        assert ask["request"]["subtype"] == "can_use_tool" and ask["request"]["tool_name"] == "Edit"
        await eventually(lambda: rig.host.state == "requires_action", message="requires_action")
        assert rig.host.tracker.pending_permissions == (ask["request_id"],)
        await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})
        result = await rig.result()
        assert result["subtype"] == "success" and result["result"] == "Edited src/app.py."
        tool = next(f for f in rig.sub.frames if f.get("type") == "user" and f.get("tool_use_result"))
        assert tool["message"]["content"][0]["is_error"] is False
        assert "Editing src/app.py" in [a.summary for a in rig.host.activities]
        assert rig.host.state == "idle"
        perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(rig.owner))).json()
        assert [p["status"] for p in perms["data"]] == ["allowed"]


async def test_permission_denied_from_the_subscriber(server: ServerProcess, owner_token: str,
                                                     tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt("TOOL again")
        ask = await rig.sub.wait_for(lambda f: f.get("type") == "control_request")
        await rig.answer(ask["request_id"], {"behavior": "deny", "message": "Not today"})
        result = await rig.result()
        assert result["subtype"] == "success" and len(result["permission_denials"]) == 1
        tool = next(f for f in rig.sub.frames if f.get("type") == "user" and f.get("tool_use_result"))
        assert tool["message"]["content"][0]["is_error"] is True
        assert tool["message"]["content"][0]["content"] == "Not today"
        assert rig.host.state == "idle"


async def test_interrupt_reaches_the_agent_and_redelivery_is_deduplicated(
        server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt("go SLOW")
        await rig.sub.wait_for(lambda f: f.get("type") == "stream_event")
        second = await rig.prompt("after the interrupt")
        await eventually(lambda: rig.host.stats.forwarded_to_agent >= 2, message="both prompts forwarded")
        # the busy agent has not echoed the second prompt yet: the server re-sends it on a new socket
        rig.transport.reconnect()
        await eventually(lambda: rig.host.stats.duplicates_dropped >= 1, message="a re-delivery dropped")
        await rig.sub.ws.send(json.dumps({"type": "control_request", "request_id": "stop-1",
                                          "request": {"subtype": "interrupt"}}))
        first = await rig.result()
        assert first["subtype"] == "error_during_execution"
        await rig.result(result="echo: after the interrupt")
        stdin = rig.agent_stdin()
        assert sum(1 for m in stdin if m.get("uuid") == second["uuid"]) == 1
        assert [m["request"]["subtype"] for m in stdin if m.get("type") == "control_request"] == [
            "initialize", "interrupt"]
        assert rig.host.stats.initialize_answered == 2


async def test_bad_agent_output_is_counted_not_fatal(server: ServerProcess, owner_token: str,
                                                     tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt("GARBAGE please")
        await rig.result(result="after garbage")
        assert rig.host.stats.bad_lines == 2 and rig.host.stats.oversize_lines == 1
        assert rig.host.outcome is None
        await rig.prompt("still alive?")
        await rig.result(result="echo: still alive?")


@pytest.mark.parametrize(("code", "status"), [(0, "completed"), (3, "failed")])
async def test_agent_exit_is_reported(server: ServerProcess, owner_token: str, tmp_path: pathlib.Path,
                                      code: int, status: str) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt(f"EXIT {code}")
        outcome = await asyncio.wait_for(asyncio.shield(_outcome(rig)), 20)
        assert outcome.status == status and outcome.exit_code == code
        assert rig.host.stderr_tail == ("stub agent: exiting on request", f"stub agent: status {code}")
        if status == "failed":
            assert outcome.error == "stub agent: status 3"
        assert rig.transport.state is TransportState.CLOSED


async def _outcome(rig: Rig) -> SessionOutcome:
    await eventually(lambda: rig.host.outcome is not None, timeout=20, message="the host to end")
    assert rig.host.outcome is not None
    return rig.host.outcome


async def test_server_restart_mid_turn_loses_and_duplicates_nothing(server: ServerProcess, owner_token: str,
                                                                    tmp_path: pathlib.Path) -> None:
    srv, owner = server, owner_token
    try:
        async with hosted(srv, owner, tmp_path) as rig:
            flag = tmp_path / "go"
            prompt = await rig.prompt(f"WAITFILE {flag}")
            await rig.sub.wait_for(lambda f: f.get("type") == "assistant")  # "waiting"
            await asyncio.to_thread(srv.stop)
            await asyncio.wait_for(rig.sub.closed, 10)
            produced = rig.host.stats.outbound
            flag.touch()  # the agent carries on while the server is down
            await eventually(lambda: rig.host.stats.outbound >= produced + 6, message="output while down")
            await eventually(lambda: rig.transport.stats.post_retries >= 1, message="a failed POST")
            await asyncio.to_thread(srv.start)
            await eventually(lambda: rig.transport.stats.connects >= 2, timeout=20, message="reconnect")
            seen = durable(rig.sub.frames)
            resumed = await subscribe(srv.ws_url, rig.sid, owner, from_seq=max(s for s, _ in seen))
            try:
                await rig.result(resumed, result="waited")
                seen += durable(resumed.frames)
            finally:
                await resumed.close()
            r = await rig.client.get(f"/v1/sessions/{rig.sid}/events", params={"limit": 1000},
                                     headers=auth(owner))
            stored = [(ev["sequence_num"], ev["uuid"]) for ev in r.json()["data"]]
            assert sorted(seen) == stored, "every stored event seen exactly once"
            assert len({u for _, u in seen}) == len(seen)
            ticks = [f["message"]["content"][0]["text"] for f in resumed.frames if f.get("type") == "assistant"]
            assert ticks == [f"tick {i}" for i in range(5)]
            assert sum(1 for m in rig.agent_stdin() if m.get("uuid") == prompt["uuid"]) == 1
            assert rig.transport.closed_info is None and rig.host.outcome is None
    finally:
        if srv.proc is None:  # leave the module's server running for the next test
            srv.start()


async def test_token_rotation_keeps_the_session_alive(tmp_path: pathlib.Path) -> None:
    srv = ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}, worker_token_ttl_s=3).start()
    try:
        owner = srv.token()
        async with hosted(srv, owner, tmp_path) as rig:
            pid = rig.host.pid
            await rig.prompt("one")
            await rig.result(result="echo: one")
            first_exp, newest = jwt_exp(rig.token), rig.token
            while jwt_exp(newest) < first_exp + 3:  # until the old token is dead and the new one lives on
                newest = await redispatch(rig.client, rig.env, rig.sid, owner)
                rig.host.set_token(newest)

            async def old_token_refused() -> None:
                while True:
                    r = await rig.client.post(f"/v1/session_ingress/session/{rig.sid}/events",
                                              json={"events": []}, headers=auth(rig.token))
                    if r.status_code == 401:
                        return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(old_token_refused(), 10)
            rig.transport.reconnect()  # the next socket must authenticate with the new token
            await eventually(lambda: rig.host.stats.initialize_answered >= 2, message="a fresh socket")
            await rig.prompt("two")
            await rig.result(result="echo: two")
            assert rig.transport.state is TransportState.CONNECTED and rig.transport.closed_info is None
            assert rig.transport.stats.rejected_events == 0 and rig.host.pid == pid
            assert newest not in rig.agent_log.read_text()
    finally:
        srv.stop()


async def test_archiving_the_session_ends_the_agent(server: ServerProcess, owner_token: str,
                                                    tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt("hi")
        await rig.result(result="echo: hi")
        r = await rig.client.post(f"/v1/sessions/{rig.sid}/archive", json={}, headers=auth(rig.owner))
        assert r.status_code == 200, r.text
        outcome = await _outcome(rig)  # the socket closes with 4001, the agent's input ends, it exits 0
        assert outcome.status == "completed" and outcome.exit_code == 0
        assert outcome.transport is not None and (outcome.transport.reason, outcome.transport.code) == (
            "permanent", 4001)


@pytest.mark.parametrize("transport", ["v1", "v2"])
async def test_archiving_after_a_stopped_turn_is_an_interruption_not_a_failure(
        tmp_path: pathlib.Path, transport: str, caplog: pytest.LogCaptureFixture) -> None:
    """A turn stopped from the web, then the session archived there: the agent exits 1 (its last
    turn ended in an error, as the stock CLI's does), but the host ended it because the session is
    gone, so the outcome is an interruption (the bridge does not report a failed session), and
    nothing is logged as a warning (v2 meets 409 already_archived on its next write: that is the
    archive, not a newer worker taking over)."""
    srv = ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}, worker_transport=transport).start()
    try:
        owner = srv.token()
        async with hosted(srv, owner, tmp_path) as rig:
            await rig.prompt("go SLOW")
            await rig.sub.wait_for(lambda f: f.get("type") == "stream_event")
            await rig.sub.ws.send(json.dumps({"type": "control_request", "request_id": "stop-1",
                                              "request": {"subtype": "interrupt"}}))
            assert (await rig.result())["subtype"] == "error_during_execution"
            caplog.clear()
            r = await rig.client.post(f"/v1/sessions/{rig.sid}/archive", json={"reason": "user"},
                                      headers=auth(rig.owner))
            assert r.status_code == 200, r.text
            outcome = await _outcome(rig)
            assert (outcome.status, outcome.exit_code, outcome.error) == ("interrupted", 1, None)
            assert outcome.transport is not None and (outcome.transport.reason, outcome.transport.code) == (
                "permanent", 4001)
            warnings = [r.getMessage() for r in caplog.records
                        if r.levelno >= logging.WARNING and r.name.startswith("tether.")]
            assert warnings == []
    finally:
        srv.stop()


async def test_an_agent_that_cannot_start_fails_cleanly(tmp_path: pathlib.Path) -> None:
    transport = HybridTransport("http://127.0.0.1:9", "session_nobody", "t", config=FAST)
    host = SessionHost("session_nobody", transport, AgentSpec([str(tmp_path / "no-such-agent")], cwd=str(tmp_path)))
    outcome = await asyncio.wait_for(host.run(), 10)
    assert outcome.status == "failed" and outcome.error is not None and "cannot start" in outcome.error
    assert transport.state is TransportState.CLOSED


async def test_an_oversized_permission_request_is_denied_by_the_host(
        server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    """A Write of a 1.5 MiB file: its can_use_tool request cannot reach a client, so the host denies it
    (the agent would otherwise wait for ever); the assistant message and the result go up shortened."""
    limit = HostConfig().max_line_bytes
    async with hosted(server, owner_token, tmp_path) as rig:
        await rig.prompt("HUGETOOL please")
        result = await rig.result()
        answers = [m for m in rig.agent_stdin() if m.get("type") == "control_response"]
        assert len(answers) == 1 and answers[0]["response"]["subtype"] == "success"
        decision = answers[0]["response"]["response"]
        assert decision["behavior"] == "deny" and "too large to relay to remote clients" in decision["message"]
        assert result["subtype"] == "success" and result["result"] == "Understood, not editing."
        assert result["tether_oversize"]["limit"] == limit  # its permission_denials carry the whole input
        assert result["permission_denials"][0]["tool_input"]["content"].endswith("not relayed: too large]")
        tool = next(f for f in rig.sub.frames if f.get("type") == "user" and f.get("tool_use_result"))
        block = tool["message"]["content"][0]
        assert block["is_error"] is True and block["content"] == decision["message"]
        said = next(f for f in rig.sub.frames if f.get("type") == "assistant")
        assert said["message"]["content"][0]["name"] == "Write" and "tether_oversize" in said
        stored = (await rig.client.get(f"/v1/sessions/{rig.sid}/events", params={"limit": 1000},
                                       headers=auth(rig.owner))).json()["data"]
        assert max(len(json.dumps(ev)) for ev in stored) < limit
        assert not [ev for ev in stored if ev.get("type") == "control_request"]
        perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(rig.owner))).json()
        assert perms["data"] == []
        assert (rig.transport.stats.rejected_events, rig.transport.stats.dropped_events) == (0, 0)
        stats = rig.host.stats
        assert (stats.oversize_lines, stats.answered_for_agent, stats.shortened_lines) == (3, 1, 2)
        assert rig.host.state == "idle"
        assert "Too large to relay: Write permission request (1.5 MiB)" in [a.summary for a in rig.host.activities]


async def test_attachments_are_downloaded_and_named_in_the_prompt(server: ServerProcess, owner_token: str,
                                                                  tmp_path: pathlib.Path) -> None:
    """docs/protocol.md §7.1: the files land in the session's folder, the agent gets ``@"path"``
    references in front of the prompt (same uuid, no ``file_attachments``), never the token."""
    async with hosted(server, owner_token, tmp_path) as rig:
        image = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        notes = await rig.upload("my notes.txt", b"SECRET-TEXT-42\n")
        pic = await rig.upload("pic.png", image)
        prompt = await rig.prompt("what is in these?", file_attachments=[
            {"file_uuid": notes, "file_name": "my notes.txt"}, {"file_uuid": pic, "file_name": "pic.png"}])
        await rig.result()
        folder = tmp_path / ".tether" / "attachments" / rig.sid
        notes_path, pic_path = folder / f"{notes[:8]}-my_notes.txt", folder / f"{pic[:8]}-pic.png"
        assert notes_path.read_bytes() == b"SECRET-TEXT-42\n" and pic_path.read_bytes() == image
        assert (tmp_path / ".tether" / "attachments" / ".gitignore").read_text().endswith("*\n")
        sent = [m for m in rig.agent_stdin() if m["type"] == "user"]
        assert len(sent) == 1 and sent[0]["uuid"] == prompt["uuid"] and "file_attachments" not in sent[0]
        assert sent[0]["message"]["content"] == f'@"{notes_path}" @"{pic_path}" what is in these?'
        assert rig.host.stats.attachments_stored == 2 and rig.host.stats.attachments_skipped == 0
        assert rig.token not in rig.agent_log.read_text()
        stored = (await rig.client.get(f"/v1/sessions/{rig.sid}/events", headers=auth(rig.owner))).json()["data"]
        logged = next(e for e in stored if e["type"] == "user" and e.get("uuid") == prompt["uuid"])
        assert logged["file_attachments"][0]["file_uuid"] == notes  # the log keeps what the client sent


async def test_an_attachment_that_cannot_be_had_is_a_warning_not_a_lost_prompt(
        server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path) as rig:
        good = await rig.upload("good.txt", b"fine")
        missing = "00000000-0000-4000-8000-000000000000"
        prompt = await rig.prompt("two files", file_attachments=[
            {"file_uuid": missing, "file_name": "gone.txt"}, {"file_uuid": good, "file_name": "good.txt"}])
        result = await rig.result()
        assert result["subtype"] == "success"
        warning = await rig.sub.wait_for(lambda f: f.get("type") == "system" and f.get("subtype") == "warning")
        assert warning["message"] == ("The attachment gone.txt did not reach the agent: "
                                      "the server answered 404 (No such file.).")
        assert warning["prompt_uuid"] == prompt["uuid"] and warning["attachments"][0]["file_uuid"] == missing
        sent = [m for m in rig.agent_stdin() if m["type"] == "user"]
        path = tmp_path / ".tether" / "attachments" / rig.sid / f"{good[:8]}-good.txt"
        assert sent[0]["message"]["content"] == f'@"{path}" two files'
        assert rig.host.stats.attachments_stored == 1 and rig.host.stats.attachments_skipped == 1


@pytest.mark.parametrize("transport", ["v1", "v2"])
async def test_a_permission_request_expired_by_a_lapsed_lease_is_denied_to_the_agent(
        tmp_path: pathlib.Path, transport: str) -> None:
    """A laptop sleeps past the work lease with a permission prompt open: the server expires the
    request and re-dispatches the session; the same host adopts the re-dispatch, and its agent,
    still waiting for that answer, gets a deny from the host instead of waiting for ever."""
    srv = ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}, lease_ttl_s=1.0,
                        lease_check_interval_s=0.2, worker_transport=transport).start()
    try:
        owner = srv.token()
        async with hosted(srv, owner, tmp_path) as rig:
            await rig.prompt("TOOL while the laptop sleeps")
            ask = await rig.sub.wait_for(lambda f: f.get("type") == "control_request")
            queued = await rig.prompt("a prompt queued behind the open permission")
            _, token = await take_work(rig.client, rig.env)  # delivered, then nobody heartbeats: it lapses
            cancel = await rig.sub.wait_for(lambda f: f.get("type") == "control_cancel_request", timeout=15)
            assert (cancel["request_id"], cancel["reason"]) == (ask["request_id"], "lease_lapsed")
            _, token = await take_work(rig.client, rig.env)  # the machine wakes: the bridge adopts the re-dispatch
            rig.host.set_token(token)
            result = await rig.result()
            assert len(result["permission_denials"]) == 1
            await rig.result(result=f"echo: {queued['message']['content']}")
            tool = next(f for f in rig.sub.frames if f.get("type") == "user" and f.get("tool_use_result"))
            assert tool["message"]["content"][0]["is_error"] is True
            assert "expired on the server (lease_lapsed)" in tool["message"]["content"][0]["content"]
            assert rig.host.state == "idle" and rig.host.stats.answered_for_agent == 1
            perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(rig.owner))).json()
            assert [p["status"] for p in perms["data"]] == ["expired"]
    finally:
        srv.stop()
