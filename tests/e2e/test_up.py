"""`tether up` end to end: server child, login, bridge, web link, ordered Ctrl-C."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _path_without_claude() -> str:
    dirs = [os.path.dirname(sys.executable), *os.environ.get("PATH", "").split(os.pathsep)]
    return os.pathsep.join(d for d in dict.fromkeys(dirs) if d and not shutil.which("claude", path=d))


class Lines:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.all: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        rx = re.compile(pattern)
        for line in self.all:
            if (m := rx.search(line)) is not None:
                return m
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.all[-60:])) from None
            if line is None:
                raise AssertionError(f"the process ended before {pattern!r}:\n" + "\n".join(self.all[-60:]))
            self.all.append(line)
            if (m := rx.search(line)) is not None:
                return m


def test_up_starts_server_logs_in_runs_a_bridge_and_stops_in_order(tmp_path: pathlib.Path) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(home), PATH=_path_without_claude(), PYTHONUNBUFFERED="1", NO_COLOR="1",
               COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "up", "--port", str(port)], cwd=project,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = Lines(proc)
    try:
        url = f"http://127.0.0.1:{port}"
        lines.wait_for(re.escape(f"Tether is up · web: {url}/code"))
        link = lines.wait_for(r"Log in \(one-time link\): (\S+)").group(1)
        assert link.startswith(f"{url}/login?token=")
        lines.wait_for("█")  # the QR code of the link
        lines.wait_for(r"offline scripted model")
        sid = lines.wait_for(r"Session ((?:session|cse)_\w+) started in").group(1)
        creds = json.loads((home / "credentials.json").read_text())
        assert creds["server"] == url and creds["kind"] == "personal"
        headers = {"Authorization": f"Bearer {creds['access_token']}"}
        envs = httpx.get(f"{url}/v1/environments", headers=headers, timeout=10).json()["data"]
        assert [(e["directory"], e["active_sessions"], e["state"]) for e in envs] == [(str(project), 1, "active")]
        assert httpx.get(f"{url}/v1/sessions/{sid}", headers=headers, timeout=10).json()["session_status"] == "idle"
        assert httpx.get(link, timeout=10, follow_redirects=False).status_code in (200, 302, 303)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        for pattern in (r"Archiving 1 session", r"Environment env_\w+ deregistered", r"Stopping the server",
                        r"Remote Control stopped"):
            lines.wait_for(pattern, timeout=5)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the server is still listening"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server_log = home / "server" / "server.log"
        if proc.returncode not in (0, None) and server_log.exists():
            print(server_log.read_text()[-3000:])
