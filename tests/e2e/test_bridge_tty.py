"""`tether rc` on a terminal (a pseudo-terminal): the live display, the keys, Ctrl-C."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.bridge import SCRIPTED
from tests.support.server import ServerProcess, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)")


class Terminal:
    def __init__(self, argv: list[str], cwd: pathlib.Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.raw = b""

    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def expect(self, pattern: str, timeout: float = 30.0) -> None:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not rx.search(self.text()[-20000:]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the terminal:\n{self.text()[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:
                    raise AssertionError(f"the terminal closed before {pattern!r}:\n{self.text()[-3000:]}") from None

    def mark(self) -> None:
        """Forget what was shown so far (to look for what comes next)."""
        self.raw = b""

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_live_display_keys_and_ctrl_c(server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(tmp_path / "home"), TETHER_SERVER=server.url, TETHER_TOKEN=owner_token,
               TERM="xterm-256color", COLUMNS="160", LINES="60")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)  # worktree mode is available: `w` works
    term = Terminal([sys.executable, "-m", "tether.cli.main", "rc", "--agent", SCRIPTED, "--name", "tty test"],
                    project, env)
    try:
        term.expect(r"Agent: tether agent")
        term.expect(r"● Connected")
        term.expect(r"Capacity: 1/32 · New sessions will be created in the current directory")
        term.expect(r"• tty test · idle · " + re.escape(server.url) + r"/code/session_\w+")
        term.expect(r"space: QR code · w: same-dir/worktree · Ctrl-C: stop")
        assert "█" not in term.text()
        sid = re.findall(r"/code/(session_\w+)", term.text())[-1]
        assert re.search(rf"Session {sid} started in ", term.text())  # one id costume: the URL's

        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {owner_token}"}, timeout=15) as api:
            ask = prompt_until_permission(api, sid)
            term.expect(r"• tty test · waiting for you · ")
            allow_and_finish_the_turn(api, server, owner_token, sid, ask)
            term.mark()
            # the --name title stays (not the prompt's), and after its turn the session is idle
            term.expect(r"• tty test · idle · " + re.escape(server.url) + rf"/code/{sid}")
            assert "completed" not in term.text() and "another title" not in term.text()

            # the QR code: a one-time login link of this bridge's person that opens this machine's page
            term.mark()
            term.press(b" ")
            term.expect(r"Scan with your phone to log in and open the web client here \(a one-time link, valid "
                        r"for 10 min\)")
            term.expect("█▀▀▀▀▀▀▀█")  # the QR code
            env_id = api.get(f"/v1/sessions/{sid}").json()["environment_id"]
            made = [a for a in api.get("/v1/audit").json()["data"] if a["action"] == "login_link.create"]
            assert made[0]["detail"]["next"] == f"/code?bridge={env_id}"
        term.mark()
        term.press(b"w")
        term.expect(r"New sessions will be created in an isolated worktree")
        term.mark()
        term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        term.expect(r"stays open: resume it with `tether remote-control --continue`")
        term.expect(r"Remote Control stopped")
        assert term.proc.wait(30) == 0
    finally:
        term.close()


def events_of(api: httpx.Client, sid: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.get(f"/v1/sessions/{sid}/events").json()["data"]
    return data


def prompt_until_permission(api: httpx.Client, sid: str) -> dict[str, Any]:
    """A prompt; the scripted agent answers by asking to use Write: that request."""
    prompt = {"type": "user", "uuid": str(uuid.uuid4()), "session_id": "", "parent_tool_use_id": None,
              "message": {"role": "user", "content": "a prompt that would make another title"}}
    assert api.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}).status_code == 200
    ask: dict[str, Any] = wait_until(
        lambda: next((e for e in events_of(api, sid) if e["type"] == "control_request"), None), 30,
        message="the agent's permission request")
    return ask


def allow_and_finish_the_turn(api: httpx.Client, server: ServerProcess, token: str, sid: str,
                              ask: dict[str, Any]) -> None:
    allow = {"type": "control_response", "response": {"subtype": "success", "request_id": ask["request_id"],
             "response": {"behavior": "allow", "updatedInput": ask["request"]["input"]}}}
    with connect(f"{server.ws_url}/v1/sessions/ws/{sid}/subscribe",
                 additional_headers={"authorization": f"Bearer {token}"}, open_timeout=10) as ws:
        ws.send(json.dumps(allow))
        wait_until(lambda: any(e["type"] == "result" for e in events_of(api, sid)), 30,
                   message="the end of the turn")
