"""The REPL in a real terminal (tmux: send-keys / capture-pane) against a real `tether server`, both
REPL bridge generations: five turns then `/rc` (a subscriber gets the five turns once each, in
order, then live turns), a prompt typed on the web, the permission race both ways, the title rules,
mirror mode, and a laptop-sleep simulation (SIGSTOP past the thresholds, which the test turns down
through TETHER_REPL_BRIDGE_JSON and the server's lease TTL, then SIGCONT)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.api import mint_token
from tests.support.server import ServerProcess
from tests.support.tmux_pane import PaneTerminal
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth, subscribe, user_message

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(180)]

SCENARIO = """\
reply after tool
text Tool said: {tool_result}

reply when SLOW
text Thinking
pause 60
more done

reply when WRITE
text Writing the file.
tool Write file_path=note.txt content="hello\\n"

reply on prompt
text Answer to: {prompt}
"""
URL = r"(http://127\.0\.0\.1:\d+/code/(session_[0-9a-z]+))"
TERMINAL_KNOBS = {"ws_ping_s": 1, "ws_sleep_threshold_s": 2, "oversleep_s": 2, "status_tick_s": 0.1}


@pytest.fixture(scope="module", params=["v1", "v2"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """v1: the server leaves repl_v2 off; v2: on. Short lease and heartbeat TTLs for the sleep test."""
    with ServerProcess(tmp_path_factory.mktemp(f"term-{request.param}"), worker_transport=request.param,
                       lease_ttl_s=3, lease_check_interval_s=0.5, worker_heartbeat_ttl_s=3,
                       limits={"rate_per_second": 0}) as proc:
        yield proc, mint_token(proc.data_dir)


@dataclass
class Repl:
    term: PaneTerminal
    server: ServerProcess
    token: str
    http: httpx.AsyncClient

    async def prompt(self, text: str, answer: str | None = None) -> None:
        """Type a prompt and wait for its turn to end (✓ or ✗ after it)."""
        before = self.term.count(r"[✓✗] ")
        await asyncio.to_thread(self.term.type, text)
        if answer is not None:
            await self.wait(r"Allow Write\?")
            await asyncio.to_thread(self.term.type, answer)
        await self.wait(r"[✓✗] ", count=before + 1)

    async def wait(self, pattern: str, timeout: float = 30.0, count: int = 1, screen: bool = False) -> re.Match[str]:
        return await asyncio.to_thread(self.term.wait_for, pattern, timeout, count=count, screen=screen)

    async def session_id(self) -> str:
        return (await self.wait(r"(?:Remote Control active|Mirroring) · " + URL)).group(2)

    async def subscribe(self, sid: str, from_seq: int | None = 0) -> Receiver:
        return await subscribe(self.server.ws_url, sid, self.token, from_seq)

    async def post(self, sid: str, text: str) -> tuple[httpx.Response, dict[str, Any]]:
        msg = user_message(text)
        resp = await self.http.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(self.token))
        return resp, msg

    async def session(self, sid: str) -> dict[str, Any]:
        resp = await self.http.get(f"/v1/sessions/{sid}", headers=auth(self.token))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


@pytest.fixture
async def repl_factory(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> AsyncIterator[Any]:
    server, token = srv
    terms: list[PaneTerminal] = []

    async def start(*args: str, knobs: dict[str, float] | None = None) -> Repl:
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir(exist_ok=True)
        home.mkdir(exist_ok=True)
        scenario = tmp_path / "scenario.txt"
        scenario.write_text(SCENARIO)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TERM": "xterm-256color",
               "LANG": "C.UTF-8", "TETHER_HOME": str(home), "TETHER_SERVER": server.url, "TETHER_TOKEN": token,
               "TETHER_REPL_BRIDGE_JSON": json.dumps({**TERMINAL_KNOBS, **(knobs or {})}), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "tether.cli.main", "--agent",
                f"tether agent --backend scripted --scenario {scenario}", *args]
        term = await asyncio.to_thread(PaneTerminal, argv, project, env, tmp_path)
        terms.append(term)
        repl = Repl(term, server, token, http)
        await repl.wait(r"/help for commands")
        return repl

    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        try:
            yield start
        finally:
            for term in terms:
                await asyncio.to_thread(term.close)


def conversation(sub: Receiver) -> list[tuple[str, str]]:
    out = []
    for f in sub.frames:
        if f.get("type") == "user":
            content = f["message"]["content"]
            out.append(("user", content if isinstance(content, str) else "tool_result"))
        elif f.get("type") == "assistant":
            out.append(("assistant", " ".join(b.get("text", b.get("name", "")) for b in f["message"]["content"])))
    return out


def uuids(sub: Receiver) -> list[str]:
    return [f["uuid"] for f in sub.frames if f.get("type") in ("user", "assistant")]


async def test_five_turns_then_rc_history_once_in_order_then_live(repl_factory: Any, srv: Any) -> None:
    repl: Repl = await repl_factory()
    for i in range(5):
        await repl.prompt(f"question {i}")
    await asyncio.to_thread(repl.term.type, "/rc")
    sid = await repl.session_id()
    sub = await repl.subscribe(sid)
    expected = [item for i in range(5) for item in (("user", f"question {i}"), ("assistant", f"Answer to: question {i}"))]
    await eventually(lambda: len(conversation(sub)) >= 10, 30, message="the five turns")
    assert conversation(sub) == expected
    await eventually(lambda: any(f.get("type") == "result" for f in sub.frames), 10, message="the closing result")
    assert (await repl.session(sid))["session_status"] == "idle"
    await repl.prompt("question 5")
    await eventually(lambda: len(conversation(sub)) >= 12, 30, message="the live turn")
    assert conversation(sub) == [*expected, ("user", "question 5"), ("assistant", "Answer to: question 5")]
    assert len(uuids(sub)) == len(set(uuids(sub)))
    assert "Remote Control active" in repl.term.screen()
    await asyncio.to_thread(repl.term.type, "/rc qr")
    await repl.wait(r"█▀▀▀▀▀▀▀█")  # the QR code of the session URL
    await asyncio.to_thread(repl.term.type, "/rc")
    await repl.wait(r"Remote Control is off")
    assert (await repl.session(sid))["session_status"] == "archived"
    await sub.close()
    await asyncio.to_thread(repl.term.keys, "C-d")
    assert await asyncio.to_thread(repl.term.wait_exit) == 0


async def test_web_prompt_and_the_permission_race_both_ways(repl_factory: Any) -> None:
    repl: Repl = await repl_factory("--rc")
    sid = await repl.session_id()
    sub = await repl.subscribe(sid, None)
    resp, msg = await repl.post(sid, "typed on the web")
    assert resp.status_code == 200
    await repl.wait(r"remote ❯ typed on the web")
    await repl.wait(r"Answer to: typed on the web")
    # the web answers first: the terminal's question goes away
    resp, _ = await repl.post(sid, "WRITE from the web")
    ask = await sub.wait_for(lambda f: f.get("type") == "control_request", 30)
    await repl.wait(r"Allow Write\? \[y/a/n/d")
    await sub.ws.send(json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": ask["request_id"], "response": {"behavior": "allow", "updatedInput": {}}}}))
    await repl.wait(r"allowed Write on another device")
    await repl.wait(r"Tool said: File created successfully")
    assert "Allow Write?" not in repl.term.screen().splitlines()[-3]  # the prompt is back to normal
    # the terminal answers first: the web's prompt is cancelled, a late web answer refused
    before = len(sub.frames)
    await asyncio.to_thread(repl.term.type, "WRITE again")
    ask2 = await sub.wait_for(lambda f: f.get("type") == "control_request" and f["request_id"] != ask["request_id"], 30)
    await repl.wait(r"\? Allow Write:", count=2)
    await asyncio.to_thread(repl.term.type, "n")
    await sub.wait_for(lambda f: f.get("type") == "control_cancel_request" and f["request_id"] == ask2["request_id"], 30)
    await sub.ws.send(json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": ask2["request_id"], "response": {"behavior": "allow", "updatedInput": {}}}}))
    error = await sub.wait_for(lambda f: f.get("type") == "error", 30)
    assert error["error"]["type"] == "already_resolved"
    perms = (await repl.http.get(f"/v1/sessions/{sid}/permissions", headers=auth(repl.token))).json()["data"]
    assert [(p["status"], p["answered_by"]) for p in perms][-1] == ("denied", "local")
    await repl.wait(r"User denied permission")
    assert len(sub.frames) > before
    # an interrupt from the web stops a turn waiting on a question
    await asyncio.to_thread(repl.term.type, "WRITE once more")
    await repl.wait(r"\? Allow Write:", count=3)
    await sub.ws.send(json.dumps({"type": "control_request", "request_id": "stop-1", "request": {"subtype": "interrupt"}}))
    await repl.wait(r"Stopped from another device")
    await repl.wait(r"✗ interrupted")
    assert repl.term.count(r"remote ❯ typed on the web") == 1
    await sub.close()


async def test_keys_multiline_and_local_commands(repl_factory: Any) -> None:
    """Ctrl-C stops a turn (and only clears a line when idle), a line ending in \\ continues,
    /cost /status /help /clear work, Ctrl-D leaves."""
    repl: Repl = await repl_factory()
    await asyncio.to_thread(repl.term.type, "SLOW please")
    await repl.wait(r"· working ·", screen=True)
    await asyncio.to_thread(repl.term.keys, "C-c")
    await repl.wait(r"Interrupting…")
    await repl.wait(r"✗ interrupted")
    await repl.wait(r"· idle ·", screen=True)
    await asyncio.to_thread(repl.term.type, "half typed", False)
    await asyncio.to_thread(repl.term.keys, "C-c")  # idle: Ctrl-C clears the line
    await asyncio.to_thread(repl.term.type, "first line\\")
    await repl.prompt("second line")
    await repl.wait(r"Answer to: .*first line\s+second line")
    assert "half typed" not in repl.term.text()
    await asyncio.to_thread(repl.term.type, "/cost")
    await repl.wait(r"Total cost: \$0\.0000 · 2 turns")
    await asyncio.to_thread(repl.term.type, "/status")
    await repl.wait(r"Remote Control: off")
    await asyncio.to_thread(repl.term.type, "/help")
    await repl.wait(r"/remote-control \[name\] \[--mirror\] \(/rc\)")
    await asyncio.to_thread(repl.term.type, "/nope")
    await repl.wait(r"Unknown command /nope · /help lists the commands")
    await asyncio.to_thread(repl.term.type, "/clear")
    await repl.wait(r"Conversation cleared: the agent starts fresh\.")
    await repl.prompt("after the clear")
    await asyncio.to_thread(repl.term.keys, "C-d")
    assert await asyncio.to_thread(repl.term.wait_exit) == 0


async def test_titles_placeholder_regenerated_and_rename(repl_factory: Any) -> None:
    repl: Repl = await repl_factory("--rc")
    sid = await repl.session_id()
    assert (await repl.session(sid))["title"].startswith("remote-control-")
    await repl.prompt("Fix the flaky login test. It times out.")
    await eventually_title(repl, sid, "Fix the flaky login test.")
    await repl.wait(r"· Fix the flaky login test\. ", screen=True)  # the footer shows it too
    await repl.prompt("login test again")
    await repl.prompt("and the login docs")
    await eventually_title(repl, sid, "Fix flaky login test times docs")  # no model to ask: the summary
    await asyncio.to_thread(repl.term.type, "/rename Login work")
    await eventually_title(repl, sid, "Login work")
    for i in range(3):
        await repl.prompt(f"more about login {i}")
    assert (await repl.session(sid))["title"] == "Login work"
    listed = (await repl.http.get("/v1/sessions", headers=auth(repl.token))).json()["data"]
    assert next(s["title"] for s in listed if s["id"] == sid) == "Login work"
    assert "Login work" in repl.term.screen()


async def eventually_title(repl: Repl, sid: str, title: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while (current := (await repl.session(sid))["title"]) != title:
        assert asyncio.get_running_loop().time() < deadline, f"title is {current!r}, not {title!r}"
        await asyncio.sleep(0.05)


async def test_named_session_keeps_its_name(repl_factory: Any) -> None:
    repl: Repl = await repl_factory("--rc", "--name", "Chosen at start")
    sid = await repl.session_id()
    for i in range(3):
        await repl.prompt(f"prompt number {i}")
    assert (await repl.session(sid))["title"] == "Chosen at start"


async def test_mirror_mode_refuses_client_input(repl_factory: Any) -> None:
    repl: Repl = await repl_factory("--mirror")
    sid = await repl.session_id()
    await repl.wait(r"Remote Control mirror \(outbound only\)", screen=True)
    await repl.prompt("watch this")
    sub = await repl.subscribe(sid)
    await eventually(lambda: ("assistant", "Answer to: watch this") in conversation(sub), 30)
    resp, _ = await repl.post(sid, "let me type")
    assert resp.status_code == 403
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert "mirror" in body["error"]["message"]
    await sub.ws.send(json.dumps({"type": "control_request", "request_id": "i1", "request": {"subtype": "interrupt"}}))
    frame = await sub.wait_for(lambda f: f.get("type") == "error", 20)
    assert frame["error"]["type"] == "permission_error"
    assert repl.term.count("remote ❯") == 0
    await sub.close()


async def test_laptop_sleep_recovers_without_duplicates(repl_factory: Any, srv: Any) -> None:
    server, _ = srv
    v1 = server.overrides["worker_transport"] == "v1"
    repl: Repl = await repl_factory("--rc")
    sid = await repl.session_id()
    sub = await repl.subscribe(sid)
    await repl.prompt("before the nap")
    if v1:  # a question stays open over the nap: the server withdraws it once the lease lapsed
        await asyncio.to_thread(repl.term.type, "WRITE during the nap")
        await repl.wait(r"Allow Write\?")
        await sub.wait_for(lambda f: f.get("type") == "control_request", 20)
    os.kill(repl.term.pid, signal.SIGSTOP)
    try:
        if v1:  # the server gave up on the worker: its lease lapsed and the session was re-dispatched
            await sub.wait_for(lambda f: f.get("type") == "control_cancel_request"
                               and f.get("reason") == "lease_lapsed", 30)
        else:
            await eventually(lambda: not _connected(server, sid, repl.token), 30, message="the worker to be gone")
        resp, web = await repl.post(sid, "sent while the laptop slept")
        assert resp.status_code == 200
    finally:
        os.kill(repl.term.pid, signal.SIGCONT)
    if v1:
        await repl.wait(r"Allow Write\?")
        await asyncio.to_thread(repl.term.type, "y")
    await repl.wait(r"remote ❯ sent while the laptop slept")
    await repl.wait(r"Answer to: sent while the laptop slept")
    await eventually(lambda: ("assistant", "Answer to: sent while the laptop slept") in conversation(sub), 40)
    await repl.prompt("after the nap")
    await eventually(lambda: ("assistant", "Answer to: after the nap") in conversation(sub), 30)
    assert len(uuids(sub)) == len(set(uuids(sub))), conversation(sub)
    assert repl.term.count(r"remote ❯ sent while the laptop slept") == 1
    users = [c for c in conversation(sub) if c[0] == "user" and c[1] != "tool_result"]
    assert users.count(("user", "sent while the laptop slept")) == 1
    await repl.wait(r"Remote Control active", screen=True)
    await sub.close()


def _connected(server: ServerProcess, sid: str, token: str) -> bool:
    resp = httpx.get(f"{server.url}/v1/sessions/{sid}", headers=auth(token), timeout=10)
    return bool(resp.json()["worker"]["connected"])
