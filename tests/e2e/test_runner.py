"""The runner end to end, as real processes: `tether server --runner`, `tether --remote`, `tether runner`
with its wall-clock limit, a refused source, and the bridge's `--sandbox` — with a local bare git
repository as the source and the scripted `tether agent` (its Bash really runs)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.attach_helpers import attach_env
from tests.support.bridge import BridgeProcess
from tests.support.runner import RunnerProcess, bare_repo, scenario, scripted_agent
from tests.support.server import ROOT, ServerProcess, wait_until
from tests.support.tmux import TmuxTerminal, squash
from tests.support.worker import auth

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def events(server: ServerProcess, token: str, sid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/v1/sessions/{sid}/events?limit=1000", headers=auth(token), timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def result_of(server: ServerProcess, token: str, sid: str) -> dict[str, Any] | None:
    return next((e for e in events(server, token, sid) if e.get("type") == "result"), None)


def tool_results(evs: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in evs:
        content = (e.get("message") or {}).get("content") if e.get("type") == "user" else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out.append(str(block.get("content")))
    return out


def online_runner(server: ServerProcess, token: str) -> str:
    def find() -> str | None:
        r = httpx.get(f"{server.url}/v1/environments", headers=auth(token), timeout=10)
        return next((e["id"] for e in r.json()["data"] if e["kind"] == "cloud" and e["online"]), None)
    return str(wait_until(find, 60, 0.2, "an online runner"))


def cli_env(server: ServerProcess, token: str, home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(home), TETHER_SERVER=server.url, TETHER_TOKEN=token, NO_COLOR="1")
    return env


@pytest.mark.parametrize("transport", ["v2", "v1"])
def test_remote_prompt_runs_in_a_clone_of_the_repo_and_archive_removes_the_directory(tmp_path: pathlib.Path,
                                                                                     transport: str) -> None:
    repo = bare_repo(tmp_path / "repos", "hello from the repo\n")
    scen = scenario(tmp_path / "scenarios" / "cat.txt", "cat hello.txt; pwd")
    data = tmp_path / "data"
    server = ServerProcess(data, args=("--runner", "--runner-agent", scripted_agent(scen),
                                       "--runner-allow-local", str(repo.parent)), worker_transport=transport)
    with server:
        token = server.token()
        env_id = online_runner(server, token)
        out = subprocess.run([sys.executable, "-m", "tether.cli.main", "--remote", "show me hello", "--repo",
                              str(repo), "--json"], cwd=tmp_path, env=cli_env(server, token, tmp_path / "home"),
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        created = json.loads(out.stdout)
        sid = created["id"]
        assert created["environment_id"] == env_id
        assert created["url"] == f"{server.url}/code/{sid}"
        assert created["sources"] == [{"type": "git_repository", "url": str(repo.resolve())}]
        result = wait_until(lambda: result_of(server, token, sid), 60, 0.1, "the turn's result")
        assert result["subtype"] == "success", result
        evs = events(server, token, sid)
        session_dir = data.resolve() / "runner" / "sessions" / sid.rsplit("_", 1)[1]
        # the agent's Bash ran in the checkout of the repository
        assert tool_results(evs) == [f"hello from the repo\n{session_dir / 'work'}"]
        assert (session_dir / "work" / "hello.txt").read_text() == "hello from the repo\n"
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/archive", json={}, headers=auth(token), timeout=10)
        assert r.status_code == 200, r.text
        wait_until(lambda: not session_dir.exists(), 30, 0.05, "the session directory to be removed")
        code = server.stop()
        assert code == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down gracefully
    log = [json.loads(line) for line in (data / "runner.log").read_text().splitlines() if line.startswith("{")]
    names = [e["event"] for e in log]
    assert names.index("workspace_removed") < names.index("deregistered") < names.index("stopped")
    assert log[0]["event"] == "runner" and log[0]["sandbox"], log[0]  # bubblewrap is installed here


def test_remote_without_a_runner_says_what_to_do(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        token = server.token()
        out = subprocess.run([sys.executable, "-m", "tether.cli.main", "--remote", "hi", "--json"],
                             cwd=tmp_path, env=cli_env(server, token, tmp_path / "home"), capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 1
        assert "No runner is online" in out.stderr and "tether runner" in out.stderr, out.stderr


def test_a_runaway_command_is_stopped_at_the_time_limit(tmp_path: pathlib.Path) -> None:
    marker = uuid.uuid4().hex
    scen = scenario(tmp_path / "scenarios" / "loop.txt", f"echo started; sleep 600 # {marker}")
    with ServerProcess(tmp_path / "data") as server:
        token = server.token()
        with RunnerProcess(server.url, token, tmp_path, tmp_path / "home", "--data-dir", str(tmp_path / "runner"),
                           "--time-limit", "4", "--cpu-limit", "60", agent=scripted_agent(scen)) as runner:
            runner.wait_for("registered")
            r = httpx.post(f"{server.url}/v1/sessions", headers=auth(token), timeout=10, json={
                "target": "runner", "events": [{"type": "user", "uuid": str(uuid.uuid4()),
                                                "message": {"role": "user", "content": "loop"}}]})
            assert r.status_code == 200, r.text
            sid = r.json()["id"]
            ended = runner.wait_for("session_ended", timeout=60)
            assert ended["status"] == "failed"
            assert ended["reason"] == "the session ran longer than the runner's time limit (4 s) and was stopped"
            result = wait_until(lambda: result_of(server, token, sid), 30, 0.1, "the error result")
            assert result["is_error"] and "the runner's time limit (4 s)" in result["errors"][0], result
            runner.wait_for("workspace_removed")
            # nothing of the runaway command is left
            assert not [p for p in pathlib.Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]
            assert list((tmp_path / "runner" / "sessions").iterdir()) == []


def _cmdline_has(proc_dir: pathlib.Path, marker: str) -> bool:
    try:
        return marker in (proc_dir / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_a_refused_source_is_reported_to_the_session_and_it_is_archived(tmp_path: pathlib.Path) -> None:
    repo = bare_repo(tmp_path / "repos", "x\n")
    scen = scenario(tmp_path / "scenarios" / "cat.txt", "true")
    with ServerProcess(tmp_path / "data", worker_transport="v2") as server:  # the product's default
        token = server.token()
        with RunnerProcess(server.url, token, tmp_path, tmp_path / "home", "--data-dir", str(tmp_path / "runner"),
                           agent=scripted_agent(scen)) as runner:  # no --allow-local
            runner.wait_for("registered")
            r = httpx.post(f"{server.url}/v1/sessions", headers=auth(token), timeout=10, json={
                "target": "runner", "session_context": {"sources": [{"url": str(repo)}]},
                "events": [{"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": "go"}}]})
            sid = r.json()["id"]
            failed = runner.wait_for("session_failed", timeout=60)
            assert "does not clone local paths" in failed["reason"]
            result = wait_until(lambda: result_of(server, token, sid), 30, 0.1, "the error result")
            assert result["is_error"] and "--allow-local" in result["errors"][0]
            wait_until(lambda: httpx.get(f"{server.url}/v1/sessions/{sid}", headers=auth(token)).json()[
                "session_status"] == "archived", 30, 0.1, "the session to be archived")
            assert runner.all("session_started") == []  # no agent ran, and no endless re-dispatch


def test_bridge_sandbox_keeps_bash_writes_in_the_work_directory(tmp_path: pathlib.Path) -> None:
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    scen = scenario(tmp_path / "scenarios" / "write.txt",
                    f"echo in > inside.txt && echo wrote-inside; echo out > {outside}/escaped.txt || echo refused")
    with ServerProcess(tmp_path / "data") as server:
        token = server.token()
        with BridgeProcess(server.url, token, project, tmp_path / "home", "--sandbox",
                           agent=scripted_agent(scen)) as bridge:
            sid = bridge.wait_for("session_created")["session_id"]
            bridge.wait_for("session_started")
            r = httpx.post(f"{server.url}/v1/sessions/{sid}/events", headers=auth(token), timeout=10, json={
                "events": [{"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": "w"}}]})
            assert r.status_code == 200, r.text
            wait_until(lambda: result_of(server, token, sid), 60, 0.1, "the turn's result")
            [output] = tool_results(events(server, token, sid))
            assert "wrote-inside" in output and "refused" in output, output
            assert (project / "inside.txt").read_text() == "in\n"
            assert not (outside / "escaped.txt").exists()


def test_remote_attaches_in_a_terminal_and_the_session_goes_on(tmp_path: pathlib.Path) -> None:
    repo = bare_repo(tmp_path / "repos", "hello from the terminal test\n")
    scen = scenario(tmp_path / "scenarios" / "cat.txt", "cat hello.txt")
    with ServerProcess(tmp_path / "data") as server:
        token = server.token()
        with RunnerProcess(server.url, token, tmp_path, tmp_path / "home", "--data-dir", str(tmp_path / "runner"),
                           "--allow-local", str(repo.parent), agent=scripted_agent(scen)) as runner:
            runner.wait_for("registered")
            argv = [sys.executable, "-m", "tether.cli.main", "--remote", "greet me", "--repo", str(repo)]
            with TmuxTerminal(argv, attach_env(server, token, tmp_path / "cli-home"), cwd=str(ROOT)) as term:
                term.wait_for("Tool said: hello from the terminal test", timeout=60)
                assert "on runner env_" in squash(term.scrollback())
                term.line("once more")  # the session goes on: the next prompt runs the same tool again
                wait_until(lambda: squash(term.scrollback()).count("Tool said: hello from the terminal test") >= 2,
                           60, 0.1, "the second turn")
                term.line("/detach")
                assert term.wait_exit(30) == 0
            assert len(runner.all("session_started")) == 1  # one agent for both turns
