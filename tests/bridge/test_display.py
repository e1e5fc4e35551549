"""The status display, the event sinks, the agent choice and the flag rules of `tether rc` / `tether up`."""

from __future__ import annotations

import io
import json
import pathlib

import pytest
from rich.console import Console

from tether.bridge.display import JsonSink, PlainSink, qr_text, render_status
from tether.bridge.settings import load_spawn_mode, save_spawn_mode
from tether.bridge.spawner import TETHER_AGENT, AgentChoice, AgentNotFound, choose_agent
from tether.bridge.status import BridgeSnapshot, SessionView, connect_url, session_url
from tether.cli.remote_control import RcArgs, UsageProblem, validate
from tether.cli.up_run import pick_agent

SERVER = "http://127.0.0.1:8787"


def text_of(snap: BridgeSnapshot, show_qr: bool = False) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render_status(snap, show_qr=show_qr))
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
