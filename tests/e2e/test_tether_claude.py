"""`tether claude` end to end: the STOCK `claude` TUI (the pinned CLI, installed by
scripts/install-test-deps) in tmux, offline against the fake Messages API, shared with a real
`tether server` (v2 env-less core, the product default), watched and driven by a subscriber:

desk → two turns typed in the TUI (the second asks permission at the terminal: clients see "waiting
at the terminal") appear once each → phone: a prompt with a file attached hands off, is answered by
the headless run (whose model reads the file) and streams; a permission asked remotely is answered from the subscriber → desk: a key takes it back,
the TUI restarts with --resume and shows the remote turns, a third turn typed there is mirrored →
/exit. Finally the transcript file and the session's event log hold the same messages, each once,
in the same order."""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.api import mint_token
from tests.support.claude_home import (
    seed_claude_home,
    tether_claude_argv,
    tether_claude_env,
    transcript_records,
)
from tests.support.fake_anthropic import (
    FakeAnthropic,
    Reply,
    Text,
    keyword_reply,
    last_user_message,
    user_text,
)
from tests.support.server import ServerProcess, wait_until
from tests.support.tmux_pane import PaneTerminal
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth, subscribe, user_message
from tether.protocol.claude_transcript import ChainOrder, map_record, project_slug

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(300)]
TUI_READY = r"\? for shortcuts"
TUI_BACK = r"back at the terminal[\s\S]*\? for shortcuts"  # the TUI, restarted after a hand-back


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as api:
        yield api


def text_of(frame: dict[str, Any]) -> str:
    content = (frame.get("message") or {}).get("content")
    if isinstance(content, str):
        return content
    return "".join(str(b.get("text") or b.get("content") or "") for b in content or [] if isinstance(b, dict))


def conversation(sub: Receiver) -> list[tuple[str, str]]:
    return [(f["type"], text_of(f)) for f in sub.frames if f.get("type") in ("user", "assistant")
            and not f.get("ephemeral") and not f.get("isReplay")]


def terminal_states(sub: Receiver) -> list[dict[str, Any]]:
    return [f for f in sub.frames if f.get("type") == "system" and f.get("subtype") == "tether_terminal"]


async def answered(sub: Receiver, prompt: str, answer: str, timeout: float = 60) -> None:
    """``prompt`` and then ``answer`` appear, and a ``result`` after them."""
    def done() -> bool:
        convo = conversation(sub)
        asked = [i for i, (kind, text) in enumerate(convo) if kind == "user" and text == prompt]
        if not asked or not any(answer in text for _, text in convo[asked[-1]:]):
            return False
        seq = next(f["sequence_num"] for f in sub.frames if f.get("type") == "user" and text_of(f) == prompt)
        return any(f.get("type") == "result" and f.get("sequence_num", 0) > seq for f in sub.frames)
    await eventually(done, timeout, message=f"the answer to {prompt!r}")


async def test_desk_phone_desk(fake: FakeAnthropic, tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "srv", worker_transport="v2", limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir()
        seed_claude_home(home, project)
        env = tether_claude_env(home=home, tether_home=tmp_path / "tether-home", server_url=server.url, token=token,
                                anthropic_url=fake.url)
        argv = tether_claude_argv(log_file=tmp_path / "tether-claude.log")
        term = await asyncio.to_thread(PaneTerminal, argv, project, env, tmp_path, 140, 50)
        wait = term.wait_for
        try:
            match = await asyncio.to_thread(wait, r"Remote Control active · \S+/code/(session_[0-9a-z]+)", 60)
            sid = match.group(1)
            await asyncio.to_thread(wait, TUI_READY, 60)
            sub = await subscribe(server.ws_url, sid, token, 0)
            await eventually(lambda: terminal_states(sub) and terminal_states(sub)[-1]["state"] == "local", 30,
                             message="'at the terminal'")
            assert terminal_states(sub)[-1]["detail"] == "At the terminal"

            # ---- at the desk: two turns, the second asks permission in the TUI -----------------------------
            await asyncio.to_thread(term.type, "hello one")
            await answered(sub, "hello one", "Hello from the fake model.")
            await asyncio.to_thread(term.type, "please TOOLBASH")
            await asyncio.to_thread(wait, r"Do you want to proceed\?", 60, screen=True)
            waiting = await eventually(lambda: [s for s in terminal_states(sub) if s.get("waiting_at_terminal")], 30,
                                       message="'waiting at the terminal'")
            assert waiting[-1]["waiting_at_terminal"] == "Bash" and waiting[-1]["state"] == "local"
            await asyncio.to_thread(term.keys, "Enter")  # "1. Yes", answered at the terminal
            await answered(sub, "please TOOLBASH", "TOOL_RESULT:hi")
            assert (project / "from_bash.txt").exists()
            assert terminal_states(sub)[-1]["waiting_at_terminal"] is None

            # ---- from the phone: a prompt hands off and streams; a permission answered remotely ------------
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                async def post(text: str, **fields: Any) -> None:
                    r = await http.post(f"/v1/sessions/{sid}/events", json={"events": [
                        {**user_message(text), **fields}]}, headers=auth(token))
                    assert r.status_code == 200, r.text

                up = await http.post("/v1/files", files={"file": ("notes.txt", b"PHONE-ATTACHED-2291\n", "text/plain")},
                                     headers=auth(token))
                assert up.status_code == 200, up.text
                attached = {"file_uuid": up.json()["file_uuid"], "file_name": "notes.txt"}
                await post("remote hello", file_attachments=[attached])
                await asyncio.to_thread(wait, r"continues on another device", 60)
                await answered(sub, "remote hello", "Hello from the fake model.")
                stored = project / ".tether" / "attachments" / sid / f"{attached['file_uuid'][:8]}-notes.txt"
                assert stored.read_bytes() == b"PHONE-ATTACHED-2291\n"
                assert any("PHONE-ATTACHED-2291" in json.dumps(q.body) for q in fake.message_requests()), \
                    "the headless run's model never saw the file attached on the phone"
                prompt_seq = next(f["sequence_num"] for f in sub.frames if text_of(f) == "remote hello")
                assert any(f.get("type") == "stream_event" and f.get("ephemeral") and f["sequence_num"] >= prompt_seq
                           for f in sub.frames), "the headless turn streams"
                assert [s["state"] for s in terminal_states(sub)][-2:] == ["handing_off", "remote"]

                await post("please TOOLWRITE")
                ask = await sub.wait_for(lambda f: f.get("type") == "control_request"
                                         and f["request"].get("subtype") == "can_use_tool", 60)
                assert ask["request"]["tool_name"] == "Write"
                await sub.ws.send(_allow(ask))
                await answered(sub, "please TOOLWRITE", "TOOL_RESULT:File created")
                assert (project / "hello.txt").read_text() == "hello from fake model\n"
                await asyncio.to_thread(wait, r"answered on another device", 10)

            # ---- back at the desk: a key, the TUI resumes the same session ------------------------------
            await asyncio.to_thread(term.type, "x", False)
            await eventually(lambda: terminal_states(sub)[-1]["state"] == "local", 60, message="back at the terminal")
            await asyncio.to_thread(wait, TUI_BACK, 60)
            await asyncio.to_thread(wait, r"(?m)^❯ please TOOLWRITE", 30)  # the TUI shows the remote turns
            await asyncio.to_thread(wait, r'(?m)^❯ @"[^"]+-notes\.txt"\s+remote hello', 5)  # (with its reference)
            await asyncio.to_thread(term.type, "hello three")
            await answered(sub, "hello three", "Hello from the fake model.")

            await asyncio.to_thread(term.type, "/exit")
            assert await asyncio.to_thread(term.wait_exit, 60) == 0
            await sub.close()

            # ---- nothing lost, nothing twice --------------------------------------------------------------
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                r = await http.get(f"/v1/sessions/{sid}/events?limit=1000", headers=auth(token))
                assert r.status_code == 200
                events = r.json()["data"]
                assert (await http.get(f"/v1/sessions/{sid}", headers=auth(token))).json()["session_status"] \
                    == "archived"
            logged = [e["uuid"] for e in events if e["type"] in ("user", "assistant")]
            assert [u for u, n in collections.Counter(logged).items() if n > 1] == []
            assert logged == _mirrorable(transcript_records(home, project))
        finally:
            await asyncio.to_thread(term.close)


def _allow(ask: dict[str, Any]) -> str:
    return json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": ask["request_id"],
        "response": {"behavior": "allow", "updatedInput": ask["request"]["input"]}}})


def _mirrorable(records: list[dict[str, Any]]) -> list[str]:
    """The uuids of the transcript's messages, in conversation order."""
    order = ChainOrder()
    ordered: list[dict[str, Any]] = []
    for record in records:
        ordered += order.push(record, 0.0)
    ordered += order.flush()
    return [str(r["uuid"]) for r in ordered if map_record(r).kind == "message"]


async def test_stop_from_a_client_and_clear_at_the_terminal(tmp_path: pathlib.Path) -> None:
    """A client's Stop interrupts the turn running in the TUI (its Esc); after /clear the TUI writes
    a new session (its SessionStart hook says which): it is mirrored into the same Tether session,
    and a hand-off resumes the new one."""
    held = Reply([Text("tick tick tick tick tick ", chunk=5)], hold_after=2)

    def respond(body: Any) -> Reply:  # the TUI's own side requests (no tools) are answered as usual
        if isinstance(body, dict) and body.get("tools") and user_text(last_user_message(body)).endswith("count slowly"):
            return held
        return keyword_reply(body)

    with FakeAnthropic(respond) as fake, \
            ServerProcess(tmp_path / "srv", worker_transport="v2", limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir()
        seed_claude_home(home, project)
        env = tether_claude_env(home=home, tether_home=tmp_path / "tether-home", server_url=server.url, token=token,
                                anthropic_url=fake.url)
        term = await asyncio.to_thread(PaneTerminal, tether_claude_argv(log_file=tmp_path / "tether-claude.log"),
                                       project, env, tmp_path, 140, 50)
        wait = term.wait_for
        try:
            sid = (await asyncio.to_thread(wait, r"Remote Control active · \S+/code/(session_[0-9a-z]+)", 60)).group(1)
            await asyncio.to_thread(wait, TUI_READY, 60)
            sub = await subscribe(server.ws_url, sid, token, 0)
            await asyncio.to_thread(term.type, "count slowly")
            assert await asyncio.to_thread(held.reached_hold.wait, 60)
            await sub.wait_for(lambda f: f.get("type") == "user" and text_of(f) == "count slowly", 30)
            await sub.ws.send(json.dumps({"type": "control_request", "request_id": "stop-1",
                                          "request": {"subtype": "interrupt"}}))
            await sub.wait_for(lambda f: f.get("type") == "user" and "[Request interrupted by user" in text_of(f), 30)
            stopped = await sub.wait_for(lambda f: f.get("type") == "result", 30)
            assert stopped["is_error"] and stopped["errors"] == ["Interrupted at the terminal"]

            first = set(_transcripts(home, project))
            assert len(first) == 1
            await asyncio.to_thread(term.type, "/clear")
            await eventually(lambda: set(_transcripts(home, project)) - first, 30, message="the new session's file")
            await asyncio.to_thread(term.type, "after clear")
            await answered(sub, "after clear", "Hello from the fake model.")
            new = set(_transcripts(home, project)) - first
            assert len(new) == 1

            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                remote = user_message("remote after clear")
                r = await http.post(f"/v1/sessions/{sid}/events", json={"events": [remote]}, headers=auth(token))
                assert r.status_code == 200, r.text
            await answered(sub, "remote after clear", "Hello from the fake model.")
            new_file = _transcripts(home, project)[next(iter(new))]
            # the headless run resumed the new session (its transcript line may land after the answer)
            await asyncio.to_thread(wait_until, lambda: remote["uuid"] in new_file.read_text(), 15.0, 0.05,
                                    "the resumed session's transcript to hold the remote prompt")

            await asyncio.to_thread(term.type, "x", False)
            await asyncio.to_thread(wait, TUI_BACK, 60)
            await asyncio.to_thread(term.type, "/exit")
            assert await asyncio.to_thread(term.wait_exit, 60) == 0
            await sub.close()
        finally:
            held.release()
            await asyncio.to_thread(term.close)


def _transcripts(home: pathlib.Path, project: pathlib.Path) -> dict[str, pathlib.Path]:
    folder = home / ".claude" / "projects" / project_slug(str(project))
    return {p.stem: p for p in folder.glob("*.jsonl")}


async def test_job_control_and_the_terminal_left_as_found(fake: FakeAnthropic, tmp_path: pathlib.Path) -> None:
    """In an interactive shell: Ctrl-Z stops `tether claude` and its TUI together, `fg` brings both
    back (the TUI redraws and takes prompts); after /exit the shell's terminal is in cooked mode again."""
    with ServerProcess(tmp_path / "srv", worker_transport="v2", limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir()
        seed_claude_home(home, project)
        env = tether_claude_env(home=home, tether_home=tmp_path / "tether-home", server_url=server.url, token=token,
                                anthropic_url=fake.url, PS1="SHELL$ ")
        shell = ["bash", "--norc", "--noprofile", "-i"]
        term = await asyncio.to_thread(PaneTerminal, shell, project, env, tmp_path, 140, 50)
        wait = term.wait_for
        try:
            await asyncio.to_thread(wait, r"SHELL\$", 30)
            command = shlex.join(tether_claude_argv(log_file=tmp_path / "tether-claude.log"))
            await asyncio.to_thread(term.type, command)
            await asyncio.to_thread(wait, TUI_READY, 60)
            await asyncio.to_thread(term.keys, "C-z")
            await asyncio.to_thread(wait, r"Stopped\s+\S*python\S* -m tether.cli.main claude", 30)
            await asyncio.to_thread(term.type, "fg")
            await asyncio.to_thread(wait, r"SHELL\$ fg[\s\S]*" + TUI_READY, 60)  # redrawn
            await asyncio.to_thread(term.type, "hello after fg")
            await asyncio.to_thread(wait, r"Hello from the fake model\.", 60)
            await asyncio.to_thread(term.type, "/exit")
            await asyncio.to_thread(wait, r"Resume this session with[\s\S]*SHELL\$", 60)  # the shell again
            await asyncio.to_thread(term.type, "echo EXIT=$?")
            await asyncio.to_thread(wait, r"(?m)^EXIT=0", 30)
            await asyncio.to_thread(term.type, "stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo|opost)' | sort | "
                                               "tr '\\n' ' '; echo")
            await asyncio.to_thread(wait, r"(?m)^echo icanon opost\s*$", 30)  # cooked mode, as before
        finally:
            await asyncio.to_thread(term.close)


async def test_continue_flushes_the_conversation_so_far(fake: FakeAnthropic, tmp_path: pathlib.Path) -> None:
    """`tether claude --continue`: the TUI picks the session (its SessionStart hook tells Tether which);
    the conversation so far reaches the session before the next turn, which is mirrored."""
    with ServerProcess(tmp_path / "srv", worker_transport="v2", limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir()
        seed_claude_home(home, project)
        env = tether_claude_env(home=home, tether_home=tmp_path / "tether-home", server_url=server.url, token=token,
                                anthropic_url=fake.url)
        first = tmp_path / "first"
        first.mkdir()
        term = await asyncio.to_thread(PaneTerminal, tether_claude_argv(log_file=first / "tc.log"), project, env, first,
                                       140, 50)
        try:  # an earlier conversation (`claude -p` sessions are not offered to --continue)
            await asyncio.to_thread(term.wait_for, TUI_READY, 60)
            await asyncio.to_thread(term.type, "an earlier question")
            await asyncio.to_thread(term.wait_for, r"Hello from the fake model\.", 60)
            # the TUI writes a new session's first turn a little later than it shows it
            await eventually(lambda: "Hello from the fake model." in "".join(
                p.read_text() for p in _transcripts(home, project).values()), 30, message="the first turn on disk")
            await asyncio.to_thread(term.type, "/exit")
            assert await asyncio.to_thread(term.wait_exit, 60) == 0
        finally:
            await asyncio.to_thread(term.close)
        term = await asyncio.to_thread(PaneTerminal, tether_claude_argv("--continue", log_file=tmp_path / "tc.log"),
                                       project, env, tmp_path, 140, 50)
        try:
            sid = (await asyncio.to_thread(term.wait_for, r"Remote Control active · \S+/code/(session_[0-9a-z]+)",
                                           60)).group(1)
            await asyncio.to_thread(term.wait_for, TUI_READY, 60)
            sub = await subscribe(server.ws_url, sid, token, 0)
            await asyncio.to_thread(term.type, "a later question")
            await answered(sub, "a later question", "Hello from the fake model.")
            model = [m for m in conversation(sub) if m[0] == "user" or m[1] == "Hello from the fake model."]
            assert model == [  # (the first run's /exit and its goodbye may come between, as the TUI wrote them)
                ("user", "an earlier question"), ("assistant", "Hello from the fake model."),
                ("user", "a later question"), ("assistant", "Hello from the fake model.")]
            assert len(_transcripts(home, project)) == 1  # the same Claude Code session, continued
            await asyncio.to_thread(term.type, "/exit")
            assert await asyncio.to_thread(term.wait_exit, 60) == 0
            await sub.close()
        finally:
            await asyncio.to_thread(term.close)
