"""The status display, the event sinks, the agent choice and the flag rules of `tether rc` / `tether up`."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib

import httpx
import pytest
from rich.console import Console
from tests.support.server import ServerProcess
from tests.support.waiting import eventually

from tether.bridge.display import (
    JsonSink,
    LiveDisplay,
    PlainSink,
    QrView,
    ShownLink,
    login_link_due,
    next_path,
    qr_text,
    render_status,
)
from tether.bridge.settings import load_spawn_mode, save_spawn_mode
from tether.bridge.spawner import TETHER_AGENT, AgentChoice, AgentNotFound, choose_agent
from tether.bridge.status import BridgeSnapshot, SessionView, connect_url, session_url
from tether.cli.remote_control import RcArgs, UsageProblem, validate
from tether.cli.up_run import pick_agent
from tether.client.api import ApiClient
from tether.client.credentials import Credentials

SERVER = "http://127.0.0.1:8787"


def text_of(snap: BridgeSnapshot, show_qr: bool = False, qr: QrView | None = None) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_status(snap, show_qr=show_qr, qr=qr))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def snap(**kw: object) -> BridgeSnapshot:
    base: dict[str, object] = dict(state="ready", server=SERVER, environment_id="env_1",
                                   connect_url=connect_url(SERVER, "env_1"), spawn_mode="same-dir", max_sessions=4,
                                   worktree_available=True)
    base.update(kw)
    return BridgeSnapshot(**base)  # type: ignore[arg-type]


def view(sid: str, title: str, activity: str | None, state: str = "running") -> SessionView:
    return SessionView(sid, session_url(SERVER, sid), title, activity, state, 0.0, "/p")


def test_urls() -> None:
    assert connect_url(SERVER, "env_1") == f"{SERVER}/code?bridge=env_1"
    assert session_url(SERVER + "/", "cse_abc") == f"{SERVER}/code/session_abc"


def test_ready_state_capacity_line_and_keys() -> None:
    out = text_of(snap())
    assert "● Ready" in out
    assert f"Code everywhere with the web client: {SERVER}/code?bridge=env_1" in out
    assert "Capacity: 0/4 · New sessions will be created in the current directory" in out
    assert "space: QR code · w: same-dir/worktree · Ctrl-C: stop" in out


def test_connected_with_one_line_per_session() -> None:
    out = text_of(snap(state="connected", spawn_mode="worktree", sessions=(
        view("session_a", "Fix the tests", "Editing src/app.py"),
        view("session_b", "Attached", None, "requires_action"))))
    assert "● Connected" in out and "Capacity: 2/4 · New sessions will be created in an isolated worktree" in out
    assert f"• Fix the tests · Editing src/app.py · {SERVER}/code/session_a" in out
    assert f"• Attached · waiting for you · {SERVER}/code/session_b" in out


def test_reconnecting_and_failed() -> None:
    out = text_of(snap(state="reconnecting", retry_in=4.2, disconnected_for=75.0))
    assert "● Reconnecting · retrying in 4s · disconnected 1m 15s" in out
    out = text_of(snap(state="failed", failure="The environment is gone"))
    assert "● Failed · The environment is gone" in out and "Something went wrong" in out


def test_single_session_line_and_qr_toggle() -> None:
    s = snap(spawn_mode="session", max_sessions=1, state="connected",
             sessions=(view("session_a", "Attached", None),), worktree_available=False)
    out = text_of(s)
    assert "Single session · exits when complete" in out and "w: same-dir" not in out
    assert "█" not in out
    with_qr = text_of(s, show_qr=True)
    assert qr_text(f"{SERVER}/code/session_a") in with_qr  # single session: the QR is the session's link


def test_idle_live_sessions_say_idle() -> None:
    out = text_of(snap(state="connected", sessions=(
        view("session_a", "Fix the tests", None, "idle"),
        view("session_b", "Deploy", "Running npm test", "running"))))
    assert f"• Fix the tests · idle · {SERVER}/code/session_a" in out
    assert f"• Deploy · Running npm test · {SERVER}/code/session_b" in out
    assert "completed" not in out


def test_the_qr_shows_what_it_is_given() -> None:
    s = snap()
    link = f"{SERVER}/login?token=tll_x&next=%2Fcode%3Fbridge%3Denv_1"
    out = text_of(s, show_qr=True, qr=QrView(link, "Scan with your phone to log in"))
    assert qr_text(link) in out and "Scan with your phone to log in" in out
    waiting = text_of(s, show_qr=True, qr=QrView("", "Getting a one-time login link for your phone…"))
    assert "Getting a one-time login link" in waiting and "█" not in waiting
    assert qr_text(f"{SERVER}/code?bridge=env_1") in text_of(s, show_qr=True)  # no minter: the plain link


def test_when_a_login_link_is_due() -> None:
    shown = ShownLink("http://s/code?bridge=env_1", "http://s/login?token=tll_a", expires_at=1000.0)
    assert login_link_due(None, shown.target, 0.0)
    assert not login_link_due(shown, shown.target, 900.0)
    assert login_link_due(shown, shown.target, 940.0)  # a minute before it expires: time to scan a new one
    assert login_link_due(shown, "http://s/code/session_a", 0.0)  # another page (the session appeared)
    assert next_path("http://s:8787/code?bridge=env_1") == "/code?bridge=env_1"
    assert next_path("http://s:8787/code/session_a") == "/code/session_a"
    assert next_path("http://s:8787") == "/"


@pytest.mark.anyio
async def test_the_qr_code_is_a_login_link_of_the_bridge_credential(server: ServerProcess,
                                                                      owner_token: str) -> None:
    creds = Credentials(server=server.url, access_token=owner_token, kind="personal")
    snapshot = snap(server=server.url, connect_url=connect_url(server.url, "env_01qr"))
    target = snapshot.web_url
    async with ApiClient(server.url, creds) as api:
        console = Console(file=io.StringIO(), width=200, color_system=None)
        live = LiveDisplay(lambda: snapshot, console,
                           login_links=lambda page: api.create_login_link(next_path(page)))
        shown = asyncio.create_task(live.run())
        try:
            live.toggle_qr()
            view = await eventually(lambda: (v := live.qr_view(snapshot)) and v.url and v, message="a login link")
            assert view.url.startswith(f"{server.url}/login?token=tll_") and "valid for 10 min" in view.caption
            assert qr_text(view.url) in text_of(snapshot, show_qr=True, qr=view)
            live.toggle_qr()
            live.toggle_qr()  # shown again: a fresh link (the first may have been used by now)
            again = await eventually(lambda: (v := live.qr_view(snapshot)) and v.url and v, message="a new link")
            assert again.url != view.url
        finally:
            shown.cancel()
            await asyncio.gather(shown, return_exceptions=True)
    assert "█" not in console.file.getvalue()  # type: ignore[attr-defined]  # no live credential left behind
    async with httpx.AsyncClient(base_url=server.url) as phone:
        opened = await phone.get(view.url)
        assert opened.status_code == 303 and opened.headers["location"] == "/code?bridge=env_01qr"
        assert (await phone.get(target)).status_code == 200


@pytest.mark.anyio
async def test_without_a_login_link_the_qr_says_to_log_in_first(server: ServerProcess) -> None:
    creds = Credentials(server=server.url, access_token="tpt_revoked-or-never-issued", kind="personal")
    snapshot = snap(server=server.url, connect_url=connect_url(server.url, "env_01qr"))
    async with ApiClient(server.url, creds) as api:
        live = LiveDisplay(lambda: snapshot, Console(file=io.StringIO()),
                           login_links=lambda page: api.create_login_link(next_path(page)))
        shown = asyncio.create_task(live.run())
        try:
            live.toggle_qr()
            view = await eventually(lambda: (v := live.qr_view(snapshot)) and v.url and v, message="a fallback")
        finally:
            shown.cancel()
            await asyncio.gather(shown, return_exceptions=True)
    assert view.url == snapshot.web_url and view.caption.startswith("Log in on your phone first: no login link (")


def test_sinks() -> None:
    buf = io.StringIO()
    JsonSink(buf).event("session_started", "Session x started.", session_id="session_x", active=1)
    line = json.loads(buf.getvalue())
    assert line["event"] == "session_started" and line["session_id"] == "session_x" and line["active"] == 1
    assert isinstance(line["time"], float) and line["message"] == "Session x started."
    buf = io.StringIO()
    PlainSink(buf).event("registered", "Registered.", environment_id="env_1")
    assert buf.getvalue().endswith(" Registered.\n")


def test_choose_agent() -> None:
    found = {"claude": "/opt/bin/claude", "my-agent": "/usr/bin/my-agent"}
    assert choose_agent(None, which=found.get).kind == "claude"
    assert choose_agent(None, which=lambda _: None).command == TETHER_AGENT
    assert choose_agent("tether", which=found.get).worker_type == "tether_agent"
    scripted = choose_agent("tether agent --backend scripted", which=found.get)
    assert scripted.command == (*TETHER_AGENT, "--backend", "scripted") and scripted.kind == "tether"
    custom = choose_agent("my-agent --flag 'two words'", which=found.get)
    assert custom.command == ("/usr/bin/my-agent", "--flag", "two words") and custom.worker_type == "custom"
    with pytest.raises(AgentNotFound):
        choose_agent("claude", which=lambda _: None)
    with pytest.raises(AgentNotFound):
        choose_agent("nope --x", which=lambda _: None)


def test_debug_file_goes_to_the_stock_cli_only(tmp_path: pathlib.Path) -> None:
    claude = AgentChoice(("/bin/claude",), "claude", "claude")
    assert claude.with_debug_file(tmp_path / "bridge.log", "session_abc") == (
        "/bin/claude", "--debug-file", str(tmp_path / "bridge-abc.log"))
    tether = AgentChoice(TETHER_AGENT, "tether", "tether agent")
    assert tether.with_debug_file(tmp_path / "bridge.log", "session_abc") == TETHER_AGENT


def test_up_picks_claude_then_the_api_then_scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tether.cli.up_run.shutil.which", lambda name: "/opt/claude" if name == "claude" else None)
    agent, note = pick_agent(None, {})
    assert agent.kind == "claude" and note is None
    monkeypatch.setattr("tether.cli.up_run.shutil.which", lambda name: None)
    agent, note = pick_agent(None, {"ANTHROPIC_API_KEY": "sk-x"})
    assert agent.command[-2:] == ("--backend", "anthropic") and note is None
    agent, note = pick_agent(None, {})
    assert agent.command[-2:] == ("--backend", "scripted") and note and "scripted" in note


@pytest.mark.parametrize(("args", "message"), [
    (RcArgs(capacity=0), "positive"),
    (RcArgs(spawn="session", capacity=2), "--spawn session"),
    (RcArgs(resume=True, session_id="session_x"), "together"),
    (RcArgs(resume=True, spawn="worktree"), "cannot be used with --spawn"),
    (RcArgs(permission_mode="yolo"), "--permission-mode"),
    (RcArgs(session_timeout=-1), "--session-timeout"),
])
def test_flag_rules(args: RcArgs, message: str) -> None:
    with pytest.raises(UsageProblem, match=message):
        validate(args)
    validate(RcArgs(spawn="worktree", capacity=3, permission_mode="acceptEdits", session_timeout=0))


def test_saved_spawn_mode(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    assert load_spawn_mode(tmp_path, home) is None
    save_spawn_mode(tmp_path, "worktree", home)
    assert load_spawn_mode(tmp_path, home) == "worktree"
