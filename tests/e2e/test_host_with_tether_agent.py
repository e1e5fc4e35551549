"""Issue 3 end to end: a real `tether server`, a session created through the API, a SessionHost with
HybridTransport and the real `tether agent` (scripted or anthropic backend) as its agent process, and a
subscriber on the session's subscribe socket. Every wait is a condition wait."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import pathlib
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.agent.harness import STREAM_ARGS, AgentProc, clean_env, is_type, user, wait_until
from tests.support.api import mint_token
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.rotation import jwt_exp, redispatch
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth, create_session, register, subscribe, take_work, user_message
from tether.agent import wire
from tether.bridge.agent_process import AgentSpec
from tether.bridge.session_host import HostConfig, SessionHost, SessionOutcome
from tether.client.hybrid import HybridConfig, HybridTransport
from tether.client.transport import TransportState
from tether.protocol.backoff import Backoff

pytestmark = pytest.mark.anyio

AGENT = (sys.executable, "-m", "tether.cli.main", "agent")
FAST = HybridConfig(
    ping_interval=0.5,
    reconnect_backoff=lambda: Backoff(0.1, 0.5, 0.25, 600.0, 60.0),
    post_backoff=lambda: Backoff(0.05, 0.5, additive_jitter=0.05),
)
TURN = 30.0  # generous: other suites share the two cores

Frame = dict[str, Any]

# --- scenarios (format: src/tether/agent/scenario.py) -------------------------------------

WRITE_SCENARIO = """\
reply after tool
text The Write tool said: {tool_result}

reply when alpha
chunk 4
text Writing the alpha note now.
tool Write file_path=alpha.txt content="alpha from tether\\n"

reply when beta
text Editing the alpha note now.
tool Edit file_path=alpha.txt old_string=alpha new_string=omega

reply
text No tool for this one.
"""

BASH_SCENARIO = """\
reply after tool
text The command ended: {tool_result}

reply when hang
text Starting a long command.
tool Bash command='echo $$ > bash.pid; sleep 300 & echo $! > child.pid; wait' description='Sleep for a long time'

reply
text Back to you: {prompt}
"""

RESTART_SCENARIO = """\
reply after tool
chunk 3
text The wait is over: {tool_result}
text second block
tool Write file_path=restart.txt content="written after the restart\\n"

reply after tool
text third block

reply when wait
text Waiting for the flag file.
tool Bash command='while [ ! -e go ]; do sleep 0.02; done; echo released'

reply
text echo: {prompt}
"""


# --- the rig ------------------------------------------------------------------------------


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
    workdir: pathlib.Path
    outcome: SessionOutcome | None = None

    async def prompt(self, text: str) -> Frame:
        msg = user_message(text)
        await self.post(msg)
        return msg

    async def post(self, *events: Frame) -> httpx.Response:
        r = await self.client.post(f"/v1/sessions/{self.sid}/events", json={"events": list(events)},
                                   headers=auth(self.owner))
        assert r.status_code == 200, r.text
        return r

    async def answer(self, request_id: str, decision: Frame) -> None:
        await self.sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": request_id, "response": decision}}))

    async def ask(self, tool: str, after: int = 0) -> Frame:
        """The first ``can_use_tool`` for ``tool`` at or after index ``after`` of the subscriber's frames."""
        return await frame_after(self.sub, after, lambda f: f.get("type") == "control_request" and f["request"].get(
            "subtype") == "can_use_tool" and f["request"].get("tool_name") == tool)

    async def result(self, sub: Receiver | None = None, after: int = 0) -> Frame:
        """The first ``result`` frame at or after index ``after`` of the subscriber's frames."""
        return await frame_after(sub or self.sub, after, lambda f: f.get("type") == "result")

    async def session(self) -> Frame:
        r = await self.client.get(f"/v1/sessions/{self.sid}", headers=auth(self.owner))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def stored(self) -> list[Frame]:
        r = await self.client.get(f"/v1/sessions/{self.sid}/events", params={"limit": 1000},
                                  headers=auth(self.owner))
        assert r.status_code == 200, r.text
        return list(r.json()["data"])


async def frame_after(receiver: Receiver, index: int, predicate: Callable[[Frame], bool]) -> Frame:
    """The first frame at or after position ``index`` of ``receiver.frames`` that matches ``predicate``."""
    before = {id(f) for f in receiver.frames[:index]}
    return await receiver.wait_for(lambda f: id(f) not in before and predicate(f), timeout=TURN)


def agent_spec(workdir: pathlib.Path, scenario: str | None, *, backend: str = "scripted",
               env: dict[str, str] | None = None, args: Sequence[str] = ()) -> AgentSpec:
    command = [*AGENT, "--backend", backend, *args]
    if scenario is not None:
        path = workdir.parent / f"scenario-{workdir.name}.txt"
        path.write_text(scenario)
        command += ["--scenario", str(path)]
    return AgentSpec(command, cwd=str(workdir), include_partial_messages=True,
                     env={"HOME": str(workdir.parent), "PYTHONUNBUFFERED": "1", **(env or {})})


@contextlib.asynccontextmanager
async def hosted(server: ServerProcess, owner: str, tmp_path: pathlib.Path,
                 spec_of: Callable[[pathlib.Path], AgentSpec]) -> AsyncIterator[Rig]:
    """A session on ``server`` hosted by a SessionHost running the agent of ``spec_of(workdir)``, with a
    subscriber from sequence 0. On the way out the host is stopped; then nothing may have been lost."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner)
        sid = await create_session(client, owner, env["environment_id"])
        _, token = await take_work(client, env)
        transport = HybridTransport(server.url, sid, token, config=FAST)
        host = SessionHost(sid, transport, spec_of(workdir), HostConfig(term_grace=5, eof_grace=5))
        sub = await subscribe(server.ws_url, sid, owner, from_seq=0)
        rig = Rig(client, server, owner, env, sid, token, transport, host, sub, workdir)
        try:
            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(host.run())
                assert await host.wait_started(TURN)
                assert await transport.wait_connected(TURN)
                try:
                    yield rig
                finally:
                    host.stop()
                    async with asyncio.timeout(TURN):
                        rig.outcome = await run
        finally:
            await sub.close()
    stats = rig.transport.stats
    assert (stats.dropped_events, stats.rejected_events, stats.bad_frames) == (0, 0, 0), stats
    assert (host.stats.bad_lines, host.stats.oversize_lines, host.stats.write_failures) == (0, 0, 0), host.stats
    assert not [line for line in host.stderr_tail if "Traceback" in line or "error" in line], host.stderr_tail
    assert rig.outcome is not None and rig.outcome.status == "interrupted", rig.outcome


def scripted(scenario: str, **kw: Any) -> Callable[[pathlib.Path], AgentSpec]:
    return lambda workdir: agent_spec(workdir, scenario, **kw)


def of_type(frames: Sequence[Frame], kind: str) -> list[Frame]:
    return [f for f in frames if f.get("type") == kind]


def stored_frames(frames: Sequence[Frame]) -> list[tuple[int, str]]:
    """(sequence_num, uuid) of every stored event a subscriber received (not live-only frames)."""
    return [(f["sequence_num"], f["uuid"]) for f in frames
            if "sequence_num" in f and "uuid" in f and not f.get("ephemeral")
            and f.get("type") not in ("delivery_update", "session_update")]


def process_group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    alive = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def pid_alive(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def activity_texts(rig: Rig) -> list[str]:
    return [a.summary for a in rig.host.activities]


# --- the turn, permissions ----------------------------------------------------------------


async def test_streamed_turn_allow_deny_and_mode_change(server: ServerProcess, owner_token: str,
                                                       tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path, scripted(WRITE_SCENARIO)) as rig:
        await eventually(lambda: rig.host.stats.initialize_answered == 1, timeout=TURN, message="initialize")
        caps = rig.host.agent_capabilities
        assert caps is not None and caps["pid"] == rig.host.pid and caps["models"]

        # 1. alpha: streamed text + a Write that needs permission → allowed from the subscriber → written
        alpha = await rig.prompt("please write the alpha note")
        ask = await rig.ask("Write")
        assert ask["request"]["input"] == {"file_path": "alpha.txt", "content": "alpha from tether\n"}
        await eventually(lambda: rig.host.state == "requires_action", timeout=TURN, message="requires_action")
        assert rig.host.tracker.pending_permissions == (ask["request_id"],)
        assert (await rig.session())["session_status"] == "requires_action"
        assert not (rig.workdir / "alpha.txt").exists()
        frames = rig.sub.frames
        kinds = [f.get("type") for f in frames]
        first_delta = next(i for i, f in enumerate(frames) if f.get("type") == "stream_event"
                           and f["event"]["type"] == "content_block_delta")
        assert first_delta < kinds.index("assistant"), "stream events reach the subscriber before the message"
        assert frames[first_delta].get("ephemeral") is True
        streamed = "".join(f["event"]["delta"]["text"] for f in frames if f.get("type") == "stream_event"
                           and f["event"]["type"] == "content_block_delta" and f["event"]["delta"]["type"] == "text_delta")
        assert streamed == "Writing the alpha note now."
        assert len([f for f in frames if f.get("type") == "stream_event"
                    and f["event"]["type"] == "content_block_delta"]) > 3, "chunked into several deltas"
        # the agent's isReplay echo carries the prompt's uuid: the server keeps the prompt once
        assert [f["uuid"] for f in frames if f.get("type") == "user"] == [alpha["uuid"]]
        await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})
        result = await rig.result()
        assert result["subtype"] == "success" and not result["is_error"]
        assert result["result"].startswith("The Write tool said:") and "alpha.txt" in result["result"]
        assert (rig.workdir / "alpha.txt").read_text() == "alpha from tether\n"
        tool = next(f for f in rig.sub.frames if f.get("type") == "user" and f.get("tool_use_result"))
        assert tool["message"]["content"][0]["is_error"] is False
        await frame_after(rig.sub, next(i for i, f in enumerate(rig.sub.frames) if f is result),
                          lambda f: f.get("type") == "session_update" and f.get("status") == "idle")
        statuses = [f["status"] for f in rig.sub.frames if f.get("type") == "session_update"]
        after_prompt = statuses[statuses.index("running"):]
        assert "requires_action" in after_prompt and after_prompt[-1] == "idle", statuses
        assert (await rig.session())["session_status"] == "idle"
        assert rig.host.state == "idle" and rig.host.title == "please write the alpha note"
        acts = activity_texts(rig)
        assert acts[:2] == ["Writing the alpha note now.", "Writing alpha.txt"]
        assert acts[-1] == "Session completed"

        # 2. beta: an Edit, denied from the subscriber → the tool does not run
        mark = len(rig.sub.frames)
        await rig.prompt("now the beta change")
        ask = await rig.ask("Edit")
        await eventually(lambda: rig.host.state == "requires_action", timeout=TURN, message="requires_action")
        assert "Editing alpha.txt" in activity_texts(rig)
        await rig.answer(ask["request_id"], {"behavior": "deny", "message": "Not that file"})
        result = await rig.result(after=mark)
        assert result["subtype"] == "success" and len(result["permission_denials"]) == 1
        assert result["permission_denials"][0]["tool_name"] == "Edit"
        assert (rig.workdir / "alpha.txt").read_text() == "alpha from tether\n"
        tool = next(f for f in rig.sub.frames[mark:] if f.get("type") == "user" and f.get("tool_use_result"))
        assert tool["message"]["content"][0]["is_error"] is True
        assert tool["message"]["content"][0]["content"] == "Not that file"
        perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(rig.owner))).json()
        assert sorted(p["status"] for p in perms["data"]) == ["allowed", "denied"]
        assert rig.host.title == "please write the alpha note", "the title is the first prompt's"
        assert (await rig.session())["title"] == rig.host.title
        assert rig.host.state == "idle"

        # 3. the card is open, and the person switches to acceptEdits: the agent settles the request
        #    by its own rules, withdraws it (every card disappears), and the Write runs
        (rig.workdir / "alpha.txt").unlink()
        mark = len(rig.sub.frames)
        await rig.prompt("write the alpha note once more")
        ask = await rig.ask("Write", after=mark)
        await rig.sub.ws.send(json.dumps({"type": "control_request", "request_id": "mode-1",
                                          "request": {"subtype": "set_permission_mode", "mode": "acceptEdits"}}))
        cancel = await rig.sub.wait_for(lambda f: f.get("type") == "control_cancel_request", timeout=TURN)
        assert cancel["request_id"] == ask["request_id"]
        assert (await rig.result(after=mark))["subtype"] == "success"
        assert (rig.workdir / "alpha.txt").read_text() == "alpha from tether\n"
        perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(rig.owner))).json()
        assert sorted(p["status"] for p in perms["data"]) == ["allowed", "cancelled", "denied"]
        assert rig.host.tracker.pending_permissions == () and rig.host.state == "idle"
    assert rig.transport.state is TransportState.CLOSED and rig.host.pid is not None
    assert not pid_alive(rig.host.pid), "the agent is gone once the host stopped"


async def interrupt(rig: Rig, request_id: str) -> None:
    await rig.sub.ws.send(json.dumps({"type": "control_request", "request_id": request_id,
                                      "request": {"subtype": "interrupt"}}))
    ack = await rig.sub.wait_for(lambda f: f.get("type") == "control_response"
                                 and f["response"].get("request_id") == request_id, timeout=TURN)
    assert ack["response"]["subtype"] == "success"


async def test_interrupt_while_asking_then_mid_tool(server: ServerProcess, owner_token: str,
                                                    tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path, scripted(BASH_SCENARIO)) as rig:
        # 1. Stop while the permission card is open: the agent withdraws it, every card disappears
        await rig.prompt("hang around for a while")
        ask = await rig.ask("Bash")
        await eventually(lambda: rig.host.state == "requires_action", timeout=TURN, message="requires_action")
        await interrupt(rig, "stop-0")
        cancel = await rig.sub.wait_for(lambda f: f.get("type") == "control_cancel_request", timeout=TURN)
        assert cancel["request_id"] == ask["request_id"]
        result = await rig.result()
        assert result["subtype"] == "error_during_execution" and result["errors"] == ["Interrupted by user"]
        await eventually(lambda: rig.host.state == "idle", timeout=TURN, message="idle after the interrupt")
        assert rig.host.tracker.pending_permissions == ()
        perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(rig.owner))).json()
        assert [p["status"] for p in perms["data"]] == ["cancelled"]
        await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})  # too late
        late = await rig.sub.wait_for(lambda f: f.get("type") == "error", timeout=TURN)
        assert late["error"]["type"] == "already_resolved"
        assert not (rig.workdir / "bash.pid").exists()

        # 2. Stop while the command runs: its whole process group is gone afterwards
        mark = len(rig.sub.frames)
        await rig.prompt("hang around once more")
        ask = await rig.ask("Bash", after=mark)
        await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})
        bash_pid_file, child_pid_file = rig.workdir / "bash.pid", rig.workdir / "child.pid"
        await eventually(lambda: child_pid_file.exists() and child_pid_file.read_text().strip(), timeout=TURN,
                         message="the command to start")
        bash_pid = int(bash_pid_file.read_text())
        child_pid = int(child_pid_file.read_text())
        assert pid_alive(bash_pid) and pid_alive(child_pid)
        assert rig.host.state == "running"
        assert any(a.startswith("Running echo $$ > bash.pid") for a in activity_texts(rig))

        mark = len(rig.sub.frames)
        await interrupt(rig, "stop-1")
        result = await rig.result(after=mark)
        assert result["subtype"] == "error_during_execution" and result["is_error"] is True
        assert result["errors"] == ["Interrupted by user"]
        assert not pid_alive(bash_pid) and not pid_alive(child_pid), "the command is gone"
        assert process_group_alive(bash_pid) == [], "nothing of its process group survives"
        stopped = next(f for f in rig.sub.frames[mark:] if f.get("type") == "user" and f.get("tool_use_result"))
        assert stopped["message"]["content"][0]["content"] == wire.STOPPED_WHILE_RUNNING_TEXT
        await eventually(lambda: rig.host.state == "idle", timeout=TURN, message="idle after the interrupt")
        assert activity_texts(rig)[-1] == "Interrupted by user"

        # the agent lives on and takes the next prompt
        mark = len(rig.sub.frames)
        await rig.prompt("are you still there")
        again = await rig.result(after=mark)  # (the model sees the interrupt marker before the new prompt)
        assert again["subtype"] == "success" and again["result"].endswith("\nare you still there")
        assert rig.host.outcome is None

        # 3. The host stops the session (bridge shutdown) while a command runs: nothing survives either
        bash_pid_file.unlink()
        child_pid_file.unlink()
        mark = len(rig.sub.frames)
        await rig.prompt("hang around one last time")
        ask = await rig.ask("Bash", after=mark)
        await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})
        await eventually(lambda: child_pid_file.exists() and child_pid_file.read_text().strip(), timeout=TURN,
                         message="the command to start")
        bash_pid, agent_pid = int(bash_pid_file.read_text()), rig.host.pid
        rig.host.stop()
        outcome = await asyncio.wait_for(_outcome(rig), TURN)
        assert outcome.status == "interrupted" and agent_pid is not None
        assert not pid_alive(agent_pid) and process_group_alive(bash_pid) == []
        assert process_group_alive(agent_pid) == []


async def _outcome(rig: Rig) -> SessionOutcome:
    await eventually(lambda: rig.host.outcome is not None, timeout=TURN, message="the host to end")
    assert rig.host.outcome is not None
    return rig.host.outcome


# --- server restart mid-turn ---------------------------------------------------------------


async def test_server_restart_mid_turn_every_event_exactly_once(server: ServerProcess, owner_token: str,
                                                                tmp_path: pathlib.Path) -> None:
    """The server goes away while a command runs; meanwhile the agent finishes the command, streams,
    and asks for a Write. After the restart the host replays it all, the permission request is
    pending on the server, a resumed subscriber answers it, and every event is seen exactly once."""
    srv, owner = server, owner_token
    try:
        async with hosted(srv, owner, tmp_path, scripted(RESTART_SCENARIO, args=("--allowedTools", "Bash"))) as rig:
            prompt = await rig.prompt("wait for the flag")
            await rig.sub.wait_for(lambda f: f.get("type") == "assistant"
                                   and f["message"]["content"][0]["type"] == "tool_use", timeout=TURN)
            assert any(a.startswith("Running while [ ! -e go ]") for a in activity_texts(rig))
            await asyncio.to_thread(srv.stop)
            closed = await asyncio.wait_for(rig.sub.closed, TURN)
            assert closed[0] == 1012
            produced = rig.host.stats.outbound
            (rig.workdir / "go").touch()  # the agent carries on while the server is down
            await eventually(lambda: rig.host.state == "requires_action", timeout=TURN,
                             message="the agent to ask for the Write while the server is down")
            assert rig.host.stats.outbound >= produced + 5
            await eventually(lambda: rig.transport.stats.post_retries >= 1, timeout=TURN, message="a failed POST")
            assert rig.transport.pending_writes > 0
            await asyncio.to_thread(srv.start)
            await eventually(lambda: rig.transport.stats.connects >= 2, timeout=TURN, message="the reconnect")
            await eventually(lambda: rig.transport.pending_writes == 0, timeout=TURN, message="the replay")
            assert (await rig.session())["session_status"] == "requires_action"
            seen = stored_frames(rig.sub.frames)
            resumed = await subscribe(srv.ws_url, rig.sid, owner, from_seq=max(s for s, _ in seen))
            try:
                ask = await resumed.wait_for(lambda f: f.get("type") == "control_request"
                                             and f["request"].get("tool_name") == "Write", timeout=TURN)
                await resumed.ws.send(json.dumps({"type": "control_response", "response": {
                    "subtype": "success", "request_id": ask["request_id"],
                    "response": {"behavior": "allow", "updatedInput": {}}}}))
                result = await rig.result(resumed)
                assert result["subtype"] == "success" and result["result"] == "third block"
                assert (rig.workdir / "restart.txt").read_text() == "written after the restart\n"
                # a later turn proves the resumed stream has caught up with the log
                probe = await rig.prompt("after the restart")
                await resumed.wait_for(lambda f: f.get("type") == "result"
                                       and f.get("result") == "echo: after the restart", timeout=TURN)
                seen += stored_frames(resumed.frames)
            finally:
                await resumed.close()
            events = await rig.stored()
            stored = [(ev["sequence_num"], ev["uuid"]) for ev in events]
            assert [s for s, _ in stored] == list(range(1, len(stored) + 1)), "gap-free sequence numbers"
            assert sorted(seen) == stored, "every stored event seen exactly once"
            assert len({u for _, u in stored}) == len(stored), "no event stored twice"
            texts = [f["message"]["content"][0].get("text") for f in of_type(events, "assistant")]
            assert texts == ["Waiting for the flag file.", None, "The wait is over: released", "second block", None,
                             "third block", "echo: after the restart"]
            prompts = [ev["uuid"] for ev in events if ev["type"] == "user" and "tool_use_result" not in ev]
            assert prompts == [prompt["uuid"], probe["uuid"]]
            assert len(of_type(events, "result")) == 2
            perms = (await rig.client.get(f"/v1/sessions/{rig.sid}/permissions", headers=auth(owner))).json()
            assert [p["status"] for p in perms["data"]] == ["allowed"]
            assert rig.transport.closed_info is None and rig.host.outcome is None
    finally:
        if srv.proc is None:  # leave the module's server running for the next test
            srv.start()


# --- token rotation --------------------------------------------------------------------------


async def test_token_rotation_keeps_the_session_alive(tmp_path: pathlib.Path) -> None:
    srv = ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}, worker_token_ttl_s=6).start()
    try:
        owner = await asyncio.to_thread(mint_token, srv.data_dir)
        async with hosted(srv, owner, tmp_path, scripted(WRITE_SCENARIO)) as rig:
            pid, first = rig.host.pid, rig.token
            tokens = [first]

            async def refresh_loop() -> None:
                """The bridge's job (docs/flows.md §5): before the token expires, bridge/reconnect (E7),
                take the re-dispatched work item, hand its token to the live host."""
                while True:
                    if jwt_exp(tokens[-1]) - time.time() < 3.5:
                        token = await redispatch(rig.client, rig.env, rig.sid, owner)
                        rig.host.set_token(token)
                        tokens.append(token)
                    await asyncio.sleep(0.1)  # the poll interval of the condition above

            async def refused(token: str) -> bool:
                r = await rig.client.post(f"/v1/session_ingress/session/{rig.sid}/events", json={"events": []},
                                          headers=auth(token))
                return r.status_code == 401

            refresher = asyncio.create_task(refresh_loop())
            try:
                await rig.prompt("first turn")
                assert (await rig.result())["result"] == "No tool for this one."
                async with asyncio.timeout(TURN):
                    while not await refused(first):  # the first token expires; the session lives on
                        assert not refresher.done()
                        await asyncio.sleep(0.1)
                assert len(tokens) >= 2 and not await refused(tokens[-1])
                rig.transport.reconnect()  # the next socket must authenticate with a fresh token
                await eventually(lambda: rig.transport.stats.connects >= 2
                                 and rig.transport.state is TransportState.CONNECTED, timeout=TURN,
                                 message="a fresh socket")
                mark = len(rig.sub.frames)
                await rig.prompt("please write the alpha note")
                ask = await rig.ask("Write", after=mark)
                await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})
                assert (await rig.result(after=mark))["subtype"] == "success"
                assert not refresher.done()
            finally:
                refresher.cancel()
            assert (rig.workdir / "alpha.txt").exists()
            assert rig.transport.closed_info is None and rig.host.pid == pid and rig.host.outcome is None
            assert rig.transport.current_token() == tokens[-1]
    finally:
        srv.stop()


# --- the anthropic backend ----------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("anthropic") is None, reason="the anthropic SDK is not installed")
async def test_the_same_turn_with_the_anthropic_backend(server: ServerProcess, owner_token: str,
                                                        tmp_path: pathlib.Path) -> None:
    with FakeAnthropic() as api:
        spec = lambda workdir: agent_spec(workdir, None, backend="anthropic",  # noqa: E731
                                          env={"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-test"})
        async with hosted(server, owner_token, tmp_path, spec) as rig:
            await rig.prompt("TOOLBASH please")
            ask = await rig.ask("Bash")
            assert ask["request"]["input"]["command"] == "touch from_bash.txt && echo hi"
            await rig.answer(ask["request_id"], {"behavior": "allow", "updatedInput": {}})
            result = await rig.result()
            assert result["subtype"] == "success" and result["result"] == "Tool said: TOOL_RESULT:hi"
            assert result["num_turns"] == 2 and result["total_cost_usd"] > 0
            assert (rig.workdir / "from_bash.txt").exists()
            deltas = [f for f in rig.sub.frames if f.get("type") == "stream_event"
                      and f["event"]["type"] == "content_block_delta"]
            assert deltas and deltas[0]["event"]["delta"]["type"] == "input_json_delta"
            assert "Running touch from_bash.txt && echo hi" in activity_texts(rig)
            assert rig.host.title == "TOOLBASH please" and rig.host.state == "idle"
            assert len(api.message_requests()) == 2


# --- bad input ---------------------------------------------------------------------------------


async def test_bad_client_input_never_reaches_or_kills_the_agent(server: ServerProcess, owner_token: str,
                                                                 tmp_path: pathlib.Path) -> None:
    async with hosted(server, owner_token, tmp_path, scripted(BASH_SCENARIO)) as rig:
        pid = rig.host.pid
        # events no agent can take are refused by the server before anything is stored
        for bad in ({"type": "user", "message": "not an object"},
                    {"type": "user", "message": {"role": "user", "content": 42}},
                    {"type": "teleport", "to": "mars"},
                    {"type": "control_request", "request": {"subtype": "interrupt"}}):
            r = await rig.client.post(f"/v1/sessions/{rig.sid}/events", json={"events": [bad]},
                                      headers=auth(rig.owner))
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
        assert rig.host.state == "idle" and rig.host.title is None
        # subscriber frames the server refuses
        for raw in ("{not json", "[1, 2]", json.dumps({"type": "teleport"}),
                    json.dumps({"type": "control_request", "request_id": "x", "request": {"subtype": "rm -rf"}})):
            await rig.sub.ws.send(raw)
        await eventually(lambda: len(of_type(rig.sub.frames, "error")) >= 4, timeout=TURN, message="error frames")
        await rig.prompt("still fine")
        assert (await rig.result())["result"] == "Back to you: still fine"
        assert rig.host.pid == pid and rig.host.outcome is None
        # an oversize frame ends only that subscriber's socket (1009)
        await rig.sub.ws.send(json.dumps({"type": "keep_alive", "pad": "x" * (1 << 20)}))
        code, _ = await asyncio.wait_for(rig.sub.closed, TURN)
        assert code == 1009
        sub2 = await subscribe(server.ws_url, rig.sid, owner_token)
        try:
            await rig.prompt("and again")
            assert (await rig.result(sub2))["result"] == "Back to you: and again"
        finally:
            await sub2.close()
        assert rig.host.pid == pid and rig.host.outcome is None



class FakeIngress:
    """Session ingress v1 on loopback (a thread running uvicorn) whose socket sends scripted frames:
    what a broken or hostile server could send, which the real server never does."""

    def __init__(self, frames: Sequence[str | bytes]) -> None:
        self.frames = list(frames)
        self.posted: list[Frame] = []
        self.connections = 0
        app = Starlette(routes=[
            WebSocketRoute("/v2/session_ingress/ws/{sid}", self._socket),
            Route("/v2/session_ingress/session/{sid}/events", self._events, methods=["POST"]),
        ])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws_max_size=4 << 20))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _socket(self, ws: WebSocket) -> None:
        await ws.accept()
        self.connections += 1
        for frame in self.frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame)
        with contextlib.suppress(WebSocketDisconnect):
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass

    async def _events(self, request: Request) -> JSONResponse:
        self.posted.extend((await request.json())["events"])
        return JSONResponse({})

    def __enter__(self) -> FakeIngress:
        self._thread.start()
        wait_until(lambda: self._server.started, what="the fake ingress")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


async def test_bad_frames_on_the_worker_socket_are_counted_never_fatal(tmp_path: pathlib.Path) -> None:
    prompt = user_message("and yet it works")
    frames: list[str | bytes] = [
        "{not json\n",
        "[1, 2]\n",
        b"\xff\xfe\n",  # a binary frame that is not UTF-8
        json.dumps({"type": "user", "pad": "x" * (1 << 20)}) + "\n",  # over the 1 MiB line limit
        json.dumps({"type": "teleport"}) + "\n",  # unknown type
        json.dumps({"type": "user", "uuid": "bad-1", "message": "not an object"}) + "\n",  # the agent cannot read it
        json.dumps({"type": "control_request", "request_id": "init-1", "request": {"subtype": "initialize"}}) + "\n",
        "{also bad\n" + json.dumps(prompt) + "\n",  # a good line after a bad one in the same frame
    ]
    workdir = tmp_path / "work"
    workdir.mkdir()
    with FakeIngress(frames) as fake:
        transport = HybridTransport(fake.url, "session_fake", "token", config=FAST)
        host = SessionHost("session_fake", transport, agent_spec(workdir, BASH_SCENARIO),
                           HostConfig(term_grace=5, eof_grace=5))
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(host.run())
            try:
                result = await eventually(lambda: next((e for e in fake.posted if e.get("type") == "result"), None),
                                          timeout=TURN, message="the prompt's result")
                assert result["result"] == "Back to you: and yet it works"
            finally:
                host.stop()
                outcome = await asyncio.wait_for(run, TURN)
        assert transport.stats.bad_frames == 5
        assert host.stats.rejected_inbound == 1 and host.stats.ignored_inbound == 1
        assert host.stats.initialize_answered == 1 and host.title == "and yet it works"
        answer = next(e for e in fake.posted if e.get("type") == "control_response")
        assert answer["response"]["request_id"] == "init-1" and answer["response"]["subtype"] == "success"
        assert outcome.status == "interrupted" and fake.connections == 1
        assert not [line for line in host.stderr_tail if "error" in line or "Traceback" in line]

# --- bad input on the agent's stdin (what tests/agent/test_bad_input.py does not cover) -------------


def spawn_agent(tmp_path: pathlib.Path, scenario: str, *extra: str) -> AgentProc:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    path = tmp_path / "scenario.txt"
    path.write_text(scenario)
    return AgentProc([*STREAM_ARGS, "--backend", "scripted", "--scenario", str(path), *extra], workdir,
                     clean_env(tmp_path))


@pytest.mark.parametrize("bad", [
    pytest.param(b"{oops\n", id="invalid-json"),
    pytest.param(b'{"type": "update_environment_variables", "variables": {"A=B": "x"}}\n', id="bad-variables"),
    pytest.param(b'{"type": "user", "pad": "' + b"x" * (1 << 20) + b'"}\n', id="oversize"),
])
def test_bad_stdin_while_asking_keeps_every_accepted_prompt(tmp_path: pathlib.Path, bad: bytes) -> None:
    """A bad line with a permission open and a prompt queued: the request is withdrawn (nobody can answer
    it any more), the running turn ends, the queued prompt still runs, then exit 1 with a clear message."""
    proc = spawn_agent(tmp_path, WRITE_SCENARIO)
    try:
        proc.send(user("please write the alpha note", "u1"))
        ask = proc.expect(is_type("control_request", "can_use_tool"))
        proc.send(user("and a second prompt", "u2"))  # queued behind the open turn
        proc.send_raw(bad)
        cancel = proc.expect(is_type("control_cancel_request"))
        assert cancel["request_id"] == ask["request_id"]
        first = proc.result()
        assert first["subtype"] == "success" and first["permission_denials"][0]["tool_name"] == "Write"
        echo = proc.expect(lambda m: m.get("isReplay") is True and m.get("uuid") == "u2")
        assert echo["message"]["content"] == "and a second prompt"
        assert proc.result()["result"] == "No tool for this one."
        assert proc.wait_exit() == 1
        assert "tether agent: error: stdin line 3" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.bad_lines == []
        assert not (proc.cwd / "alpha.txt").exists()
    finally:
        proc.kill()


def test_bad_stdin_while_a_tool_runs_lets_the_turn_finish(tmp_path: pathlib.Path) -> None:
    proc = spawn_agent(tmp_path, RESTART_SCENARIO, "--allowedTools", "Bash")
    try:
        proc.send(user("wait for the flag", "u1"))
        proc.expect(lambda m: m.get("type") == "assistant" and m["message"]["content"][0]["type"] == "tool_use")
        proc.send_raw(b"\xff\n")
        wait_until(lambda: "not valid UTF-8" in proc.stderr, what="the error on stderr")
        assert proc.proc.poll() is None, "the acknowledged turn is still running"
        (proc.cwd / "go").touch()
        result = proc.result()  # the Write it then wants cannot be asked for any more: denied
        assert result["subtype"] == "success" and result["result"] == "third block"
        assert [d["tool_name"] for d in result["permission_denials"]] == ["Write"]
        assert not (proc.cwd / "restart.txt").exists()
        assert proc.wait_exit() == 1
        assert "tether agent: error: stdin line 2: line is not valid UTF-8" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        proc.kill()


async def test_an_event_over_one_mib_of_utf8_is_refused(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid = await create_session(client, owner_token)
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("é" * 600_000)]},
                              headers=auth(owner_token))
        assert r.status_code == 413, "1.2 MB of UTF-8 is over the 1 MiB limit (docs/protocol.md §4.8)"
