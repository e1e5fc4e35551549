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
import uuid

import httpx
import pytest

from tests.support.server import ServerProcess, free_port, wait_until
from tether.server import runtime

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
        with proc.stdout:  # closed at EOF: nothing left for the garbage collector
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


def up_env(home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(home), PATH=_path_without_claude(), PYTHONUNBUFFERED="1", NO_COLOR="1",
               COLUMNS="200")
    return env


def start_up(project: pathlib.Path, home: pathlib.Path, *args: str) -> tuple[subprocess.Popen[str], Lines]:
    """`tether up ARGS` in ``project`` (no terminal: plain lines, stdout and stderr together)."""
    project.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "up", *args], cwd=project, env=up_env(home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, Lines(proc)


def run_tether(project: pathlib.Path, home: pathlib.Path, *args: str,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    project.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], cwd=project, env=up_env(home),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def stop_all(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def owner_headers(home: pathlib.Path) -> dict[str, str]:
    creds = json.loads((home / "credentials.json").read_text())
    return {"Authorization": f"Bearer {creds['access_token']}"}


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
        for pattern in (r"Environment env_\w+ deregistered",
                        rf"Session \w+_{sid.split('_')[-1]} stays open: resume it with `tether up --continue`",
                        r"Stopping the server", r"Remote Control stopped"):
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


def polls_total(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("tether_polls_total "):
            return float(line.split()[1])
    return 0.0


def test_a_second_bridge_for_a_live_directory_refuses_and_harms_nothing(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 1: `tether rc --continue` (or a second `tether up`) where a bridge runs says
    which process runs it, and neither re-registers its environment nor touches the server."""
    project, home = tmp_path / "project", tmp_path / "home"
    port = free_port()
    proc, lines = start_up(project, home, "--port", str(port))
    try:
        sid = lines.wait_for(r"Session ((?:session|cse)_\w+) started in").group(1)
        env_id = lines.wait_for(r"as (env_\w+)").group(1)
        url = f"http://127.0.0.1:{port}"
        for args in (("rc", "--continue", "--json"), ("rc",), ("up", "--port", str(port))):
            refused = run_tether(project, home, *args)
            assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
            assert f"A bridge is already running in {project} (pid {proc.pid}, environment {env_id}" in refused.stderr
            assert "Stop it first" in refused.stderr or "stop it first" in refused.stderr
            assert "Traceback" not in refused.stderr + refused.stdout
        before = polls_total(url)
        wait_until(lambda: polls_total(url) > before, 30, 0.2, "the first bridge to poll again")
        envs = httpx.get(f"{url}/v1/environments", headers=owner_headers(home), timeout=10).json()["data"]
        assert [(e["id"], e["state"], e["online"]) for e in envs] == [(env_id, "active", True)]
        assert proc.poll() is None and not [ln for ln in lines.all if "failed" in ln.lower()], lines.all
        assert any(sid in ln for ln in lines.all)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        stop_all(proc)


def test_up_on_a_port_held_by_another_server_says_what_to_do(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 5: a fresh TETHER_HOME, a server of another data dir on the port: a clear
    message and no database opened (it used to be a 149-line traceback)."""
    home = tmp_path / "fresh-home"
    with ServerProcess(tmp_path / "elsewhere") as other:
        result = run_tether(tmp_path / "project", home, "up", "--port", str(other.port))
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"A Tether server already listens on {other.url}, but it does not run from {home / 'server'}" in message
    assert f"tether login --server {other.url}" in message and "--port" in message
    assert "Traceback" not in result.stderr and "OperationalError" not in result.stderr
    assert not (home / "server" / "tether.db").exists()


def test_up_continue_with_nothing_to_continue_says_so_before_starting_a_server(tmp_path: pathlib.Path) -> None:
    """No pointer here: the error comes first, with no server started and no login link printed."""
    home = tmp_path / "fresh-home"
    port = free_port()
    result = run_tether(tmp_path / "project", home, "up", "--continue", "--port", str(port))
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "No session to continue here" in message and "without --continue" in message
    assert "/login?token=" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (home / "server" / "tether.db").exists()


def test_up_reuses_a_detached_server_and_leaves_it_running(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 2: `tether server --detach` once; `tether up` in a project uses it and leaves it."""
    project, home = tmp_path / "project", tmp_path / "home"
    port = free_port()
    detached = run_tether(tmp_path, home, "server", "--detach", "--port", str(port))
    assert detached.returncode == 0, detached.stderr
    info = runtime.running_server(home / "server")
    assert info is not None
    try:
        proc, lines = start_up(project, home)  # no --port: the running server says where it is
        try:
            lines.wait_for(re.escape(f"Tether is up · web: {info.url}/code (the server already running from "
                                     f"{home / 'server'}, pid {info.pid})"))
            assert lines.wait_for(r"Log in \(one-time link\): (\S+)").group(1).startswith(f"{info.url}/login?token=")
            lines.wait_for(r"Session ((?:session|cse)_\w+) started in")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
        finally:
            stop_all(proc)
        assert not [ln for ln in lines.all if "Stopping the server" in ln]
        assert runtime.running_server(home / "server") == info
        assert httpx.get(f"{info.url}/readyz", timeout=5).status_code == 200
    finally:
        assert run_tether(tmp_path, home, "server", "stop").returncode == 0
    assert runtime.running_server(home / "server") is None


def test_the_owning_up_says_when_stopping_its_server_disconnects_others(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 2: the `tether up` that started the server names the other bridges on Ctrl-C."""
    home = tmp_path / "home"
    port = free_port()
    owner, owner_lines = start_up(tmp_path / "one", home, "--port", str(port))
    other: subprocess.Popen[str] | None = None
    try:
        owner_lines.wait_for(r"Session ((?:session|cse)_\w+) started in")
        other, other_lines = start_up(tmp_path / "two", home)
        other_lines.wait_for(r"\(the server already running from")
        other_lines.wait_for(r"Session ((?:session|cse)_\w+) started in")
        owner.send_signal(signal.SIGINT)
        assert owner.wait(60) == 0
        owner_lines.wait_for(re.escape(f"warning: 1 other bridge ({socket.gethostname()}:{tmp_path / 'two'}) uses "
                                       "this server; stopping it disconnects it"), timeout=5)
        owner_lines.wait_for(r"Stopping the server", timeout=5)
    finally:
        stop_all(owner, *([other] if other else []))


def test_a_bridge_that_loses_its_environment_keeps_a_server_others_use(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 1 (also): when the owning `tether up`'s environment secret stops being
    recognised, it says why and leaves the server to the other bridges instead of stopping it."""
    home = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    owner, owner_lines = start_up(tmp_path / "one", home, "--port", str(port))
    other: subprocess.Popen[str] | None = None
    try:
        env_id = owner_lines.wait_for(r"as (env_\w+)").group(1)
        owner_lines.wait_for(r"Session ((?:session|cse)_\w+) started in")
        other, other_lines = start_up(tmp_path / "two", home)
        other_env = other_lines.wait_for(r"as (env_\w+)").group(1)
        other_lines.wait_for(r"Session ((?:session|cse)_\w+) started in")
        taken = httpx.post(f"{url}/v1/environments/bridge", headers=owner_headers(home), timeout=10,
                           json={"environment_id": env_id, "machine_name": "elsewhere", "directory": "/x"})
        assert taken.status_code == 200 and taken.json()["environment_id"] == env_id
        assert owner.wait(60) == 1
        owner_lines.wait_for(r"environment secret", timeout=5)
        owner_lines.wait_for(re.escape(f"this bridge stopped after an error, but 1 other bridge "
                                       f"({socket.gethostname()}:{tmp_path / 'two'}) uses the server: it keeps "
                                       f"running at {url}"), timeout=5)
        assert not [ln for ln in owner_lines.all if "Stopping the server" in ln]
        before = polls_total(url)
        wait_until(lambda: polls_total(url) > before, 30, 0.2, "the other bridge to keep polling")
        envs = httpx.get(f"{url}/v1/environments", headers=owner_headers(home), timeout=10).json()["data"]
        assert [e["online"] for e in envs if e["id"] == other_env] == [True]
    finally:
        stop_all(owner, *([other] if other else []))
        run_tether(tmp_path, home, "server", "stop")


def session_of(url: str, home: pathlib.Path, sid: str) -> dict[str, object]:
    body = sid.split("_")[-1]
    resp = httpx.get(f"{url}/v1/sessions/session_{body}", headers=owner_headers(home), timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_ctrl_c_then_up_continue_resumes_and_a_fresh_up_links_the_successor(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 3: Ctrl-C leaves the directory's session open; `tether up --continue` picks
    the same session up; a plain `tether up` archives it as replaced and the server links the new
    session as its successor."""
    project, home = tmp_path / "project", tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    session = r"Session ((?:session|cse)_(\w+)) started in"

    proc, lines = start_up(project, home, "--port", str(port))
    try:
        first = lines.wait_for(session).group(2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        lines.wait_for(rf"Session session_{first} stays open: resume it with `tether up --continue`", timeout=5)
    finally:
        stop_all(proc)

    proc, lines = start_up(project, home, "--port", str(port), "--continue")
    try:
        lines.wait_for(rf"Resuming session session_{first}")
        assert lines.wait_for(session).group(2) == first
        assert session_of(url, home, first)["session_status"] != "archived"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        lines.wait_for(rf"Session session_{first} stays open", timeout=5)
    finally:
        stop_all(proc)

    proc, lines = start_up(project, home, "--port", str(port))
    try:
        lines.wait_for(rf"Archived session session_{first}, which the last bridge here left open")
        second = lines.wait_for(session).group(2)
        assert second != first
        old = session_of(url, home, first)
        assert old["session_status"] == "archived" and old["archive_reason"] == "replaced"
        assert old["successor_session_id"] == f"session_{second}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        stop_all(proc)


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "scenarios"


@pytest.mark.parametrize("name", ["bash.txt", "stream.txt", "long.txt"])
def test_the_example_scenarios_parse(name: str) -> None:
    from tether.agent.scenario import parse_scenario

    assert parse_scenario((EXAMPLES / name).read_text(encoding="utf-8"))


def test_up_with_a_scenario_plays_it_and_refuses_a_broken_one(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 12: `tether up --scenario FILE` makes the offline model ask for Bash."""
    broken = tmp_path / "broken.txt"
    broken.write_text("reply\ntxt oops\n")
    refused = run_tether(tmp_path / "p0", tmp_path / "h0", "up", "--scenario", str(broken))
    assert refused.returncode == 2 and f"{broken}: line 2: unknown directive 'txt'" in refused.stderr
    assert not (tmp_path / "h0" / "server").exists(), "nothing starts before the scenario is checked"
    other = run_tether(tmp_path / "p0", tmp_path / "h0", "up", "--scenario", str(broken), "--agent", "claude")
    assert other.returncode == 2 and "not on --agent claude" in other.stderr

    project, home = tmp_path / "project", tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, lines = start_up(project, home, "--port", str(port), "--scenario", str(EXAMPLES / "bash.txt"))
    try:
        lines.wait_for(re.escape(f"Agent: tether agent (offline scripted model playing {EXAMPLES / 'bash.txt'})"))
        sid = lines.wait_for(r"Session ((?:session|cse)_\w+) started in").group(1).split("_")[-1]
        prompt = {"type": "user", "uuid": str(uuid.uuid4()), "session_id": "", "parent_tool_use_id": None,
                  "message": {"role": "user", "content": "what is here?"}}
        posted = httpx.post(f"{url}/v1/sessions/session_{sid}/events", json={"events": [prompt]},
                            headers=owner_headers(home), timeout=10)
        assert posted.status_code == 200, posted.text

        def pending_bash() -> list[dict[str, object]]:
            got = httpx.get(f"{url}/v1/sessions/session_{sid}/permissions?status=pending",
                            headers=owner_headers(home), timeout=10).json()["data"]
            return [p for p in got if p["tool_name"] == "Bash"]

        request = wait_until(pending_bash, 60, 0.2, "the scenario's Bash permission request")[0]
        assert request["input"]["command"] == "ls -la"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        stop_all(proc)
