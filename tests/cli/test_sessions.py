"""`tether sessions` and `tether attach` as processes against a real server: honest states, --all,
--json, how SESSION is resolved, exit codes, and a viewer following from a pipe."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.server import ROOT, ServerProcess
from tests.support.worker import auth, create_session, register, take_work, worker_post

from tether.cli.sessions import shorten_left

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


def cli_env(server: ServerProcess, token: str, tmp: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(tmp), TETHER_SERVER=server.url, TETHER_TOKEN=token, NO_COLOR="1", COLUMNS="200")
    return env


def tether(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
async def org(server: ServerProcess, tmp_path: Any) -> AsyncIterator[tuple[dict[str, str], httpx.AsyncClient, str]]:
    """A fresh organisation (so the listing holds only this test's sessions) and its owner's token."""
    token = server.token(org=f"org-{uuid.uuid4().hex[:8]}", user=f"{uuid.uuid4().hex[:8]}@example.com")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield cli_env(server, token, tmp_path), http, token


async def test_sessions_shows_honest_states(org: tuple[dict[str, str], httpx.AsyncClient, str]) -> None:
    env, http, token = org
    bridge = await register(http, token, machine_name="laptop", directory="/home/me/app")
    worked = await create_session(http, token, bridge["environment_id"], title="with a worker")
    _item, worker_token = await take_work(http, bridge)
    await worker_post(http, worked, worker_token, {
        "type": "control_request", "request_id": str(uuid.uuid4()), "uuid": str(uuid.uuid4()),
        "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}})
    idle = await create_session(http, token, bridge["environment_id"], title="nothing yet")
    archived = await create_session(http, token, bridge["environment_id"], title="old one")
    assert (await http.post(f"/v1/sessions/{archived}/archive", json={}, headers=auth(token))).status_code == 200

    out = tether(env, "sessions", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {worked, idle}  # archived only with --all
    assert rows[worked]["state"] == "waiting for you" and rows[worked]["title"] == "with a worker"
    assert rows[idle]["state"] == "idle"
    assert rows[worked]["machine"] == "laptop" and rows[worked]["directory"] == "/home/me/app"
    assert rows[worked]["last_activity"] and rows[worked]["last_activity_ago"]

    every = {r["id"]: r["state"] for r in json.loads(tether(env, "sessions", "--all", "--json").stdout)}
    assert every[archived] == "archived"

    table = tether(env, "sessions")
    assert table.returncode == 0
    assert "waiting for you" in table.stdout and "with a worker" in table.stdout and "laptop" in table.stdout


async def test_sessions_table_is_readable_at_80_columns(org: tuple[dict[str, str], httpx.AsyncClient, str]) -> None:
    """Reviewers found the directory column cut to a few letters at 80 columns. There, each session
    takes two lines (id and title; state and last activity; machine and directory), nothing runs
    past column 80, the id stays whole and a long directory keeps its end; a wide terminal keeps
    one line per session."""
    env, http, token = org
    long_dir = "/home/someone/work/clients/acme/project/sub"
    bridge = await register(http, token, machine_name="laptop.example.org", directory=long_dir)
    sid = await create_session(http, token, bridge["environment_id"], title="fix the login flow on the settings page")
    other = await create_session(http, token, None, title="no machine")

    narrow = tether({**env, "COLUMNS": "80"}, "sessions")
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), narrow.stdout
    assert lines[0].split() == ["ID", "/", "TITLE", "STATE", "/", "ACTIVE", "MACHINE", "/", "DIRECTORY"]
    first = next(i for i, line in enumerate(lines) if sid in line)
    assert lines[first].split()[1:] == ["idle", "laptop.example.org"]
    assert "…/clients/acme/project/sub" in lines[first + 1]
    assert "ago" in lines[first + 1] or "just now" in lines[first + 1]
    title_lines = [line[:len(sid)].strip() for line in lines[first + 1:first + 3]]
    assert " ".join(title_lines) == "fix the login flow on the settings page"  # wrapped under the id
    assert other in narrow.stdout and "no machine" in narrow.stdout

    wide = tether({**env, "COLUMNS": "200"}, "sessions")
    row = next(line for line in wide.stdout.splitlines() if sid in line)
    assert wide.stdout.splitlines()[0].split()[-2:] == ["LAST", "ACTIVITY"]
    assert row.split()[:2] == [sid, "idle"] and "fix the login flow on the settings page" in row
    assert "laptop.example.org" in row and "…/someone/work/clients/acme/project/sub" in row  # at most 40 wide


def test_shorten_left_keeps_the_end_of_a_path() -> None:
    assert shorten_left("/srv/app", 20) == "/srv/app"
    assert shorten_left("/home/me/work/acme/project/sub", 16) == "…/project/sub"
    assert shorten_left("/home/me/work/acme/project/sub", 12) == "…/sub"
    assert shorten_left("/data/a-very-long-directory-name", 10) == "…tory-name"
    assert all(len(shorten_left("/x/" + "y" * n, 9)) <= 9 for n in range(30))


async def test_sessions_of_an_offline_machine(org: tuple[dict[str, str], httpx.AsyncClient, str]) -> None:
    env, http, token = org
    bridge = await register(http, token)
    sid = await create_session(http, token, bridge["environment_id"], title="gone")
    r = await http.delete(f"/v1/environments/bridge/{bridge['environment_id']}", headers=auth(token))
    assert r.status_code in (200, 204), r.text
    rows = json.loads(tether(env, "sessions", "--json").stdout)
    assert [(r["id"], r["state"]) for r in rows] == [(sid, "offline")]


async def test_attach_refuses_what_it_cannot_do(org: tuple[dict[str, str], httpx.AsyncClient, str]) -> None:
    env, http, token = org
    await create_session(http, token, None, title="Fix the login bug")
    await create_session(http, token, None, title="Fix the logout bug")
    no_tty = tether(env, "attach", "Fix the login")
    assert no_tty.returncode == 2 and "--viewer" in no_tty.stderr
    ambiguous = tether(env, "attach", "--viewer", "Fix the")
    assert ambiguous.returncode == 2 and "matches 2 sessions" in ambiguous.stderr
    missing = tether(env, "attach", "--viewer", "nothing like this")
    assert missing.returncode == 2 and "tether sessions" in missing.stderr
    unknown_id = tether(env, "attach", "--viewer", "session_01m8y02hfg1r1m7wdjba6wmxx9")
    assert unknown_id.returncode == 2 and "No session" in unknown_id.stderr


async def test_unreachable_server_is_explained(tmp_path: Any) -> None:
    env = {**os.environ, "TETHER_HOME": str(tmp_path), "TETHER_SERVER": "http://127.0.0.1:9",
           "TETHER_TOKEN": "tpt_nothing"}
    out = tether(env, "sessions")
    assert out.returncode == 1 and "Cannot reach http://127.0.0.1:9" in out.stderr


async def test_a_refused_token_says_what_to_do_once(server: ServerProcess, tmp_path: Any) -> None:
    """A TETHER_TOKEN the server does not know: one sentence naming TETHER_TOKEN and the fix, not the
    server's 401 text wrapped in two "Run `tether login`"s; `tether status` says the same."""
    env = cli_env(server, "tpt_not_a_real_token", tmp_path)
    for args in (("sessions",), ("attach", "--viewer", "session_01m8y02hfg1r1m7wdjba6wmxx9"), ("status",)):
        out = tether(env, *args)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.strip() == (
            f"error: {server.url} does not accept TETHER_TOKEN. Set it to a valid personal API token "
            "(`tether admin token create` on the server's machine), or unset it and run `tether login`."), args


async def test_a_viewer_follows_from_a_pipe_until_sigint(org: tuple[dict[str, str], httpx.AsyncClient, str]) -> None:
    env, http, token = org
    bridge = await register(http, token)
    sid = await create_session(http, token, bridge["environment_id"], title="piped")
    _item, worker_token = await take_work(http, bridge)
    await worker_post(http, sid, worker_token, {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {
        "role": "assistant", "content": [{"type": "text", "text": "From history."}]}})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether.cli.main", "attach", "--viewer", f"cse_{sid[8:]}", stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    output = ""

    async def read_until(marker: str) -> None:
        nonlocal output
        async with asyncio.timeout(30):
            while marker not in output:
                line = await proc.stdout.readline()  # type: ignore[union-attr]
                assert line, f"attach ended before {marker!r}:\n{output}"
                output += line.decode()

    try:
        await read_until("Connected; live.")
        assert "From history." in output
        await worker_post(http, sid, worker_token, {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {
            "role": "assistant", "content": [{"type": "text", "text": "Live now."}]}})
        await read_until("Live now.")
        proc.send_signal(signal.SIGINT)
        await read_until("Detached.")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
