"""`tether remote-control` end to end: a real `tether server` process, a real bridge process
(`tether rc --json`) and real agent children (`tether agent --backend scripted`, or the stub agent)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import time
from collections.abc import Iterator

import pytest

from tests.e2e.bridge_helpers import (
    Api,
    fresh,
    git,
    in_thread,
    is_permission,
    is_result,
    make_repo,
    open_api,
    turn_with_permission,
)
from tests.e2e.bridge_helpers import answer as answer_permission
from tests.support.bridge import STUB_AGENT, BridgeProcess
from tests.support.cut_proxy import CutProxy
from tests.support.proxy import RecordingProxy
from tests.support.server import ServerProcess
from tether.bridge.pointer import read_pointer
from tether.protocol.ids import id_body

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]

OUTAGE_S = float(os.environ.get("TETHER_TEST_OUTAGE_S", "30"))
"""How long the outage test keeps the server down (30 s as specified; shorter only when asked)."""


@pytest.fixture
def dirs(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    return project, home


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    overrides = getattr(request, "param", {})
    proc = ServerProcess(tmp_path_factory.mktemp("srv"), limits={"rate_per_second": 0}, **overrides).start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_session_round_trip_then_ordered_teardown(server: ServerProcess, owner_token: str,
                                                        dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """Created through the API → picked up → streams to a subscriber → asks for permission →
    answered from the subscriber → completes; SIGTERM → stop, archive, deregister (as the server
    sees them, through a recording proxy) and the session is archived."""
    project, home = dirs
    with RecordingProxy(server.port) as proxy:
        bridge = BridgeProcess(proxy.url, owner_token, project, home, "--no-create-session-in-dir").start()
        try:
            env_id = await in_thread(lambda: bridge.environment_id)
            async with open_api(server, owner_token) as client:
                api = Api(server, owner_token, client)
                sid = await api.create_session(env_id)
                await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == sid)
                sub = await api.subscribe(sid)
                old = fresh(sub)
                await api.prompt(sid, "please write a note")
                request = await sub.wait_for(lambda f: is_permission(f) and id(f) not in old, timeout=30)
                streamed = [f for f in sub.frames if f.get("type") == "stream_event"]
                assert streamed, "the subscriber saw no streaming before the permission request"
                assert request["request"]["tool_name"] == "Write"
                assert (await api.session(sid))["session_status"] == "requires_action"
                await answer_permission(sub, request, "allow")
                result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=30)
                assert result["subtype"] == "success"
                assert (project / "tether-note.txt").read_text().startswith("Hello from Tether")
                session = await api.session(sid)
                assert session["session_status"] == "idle"
                assert session["worker"]["connected"] is True
                signalled = time.monotonic()
                assert await in_thread(bridge.stop, signal.SIGTERM) == 0
                assert (await api.session(sid))["session_status"] == "archived"
                env = next(e for e in await api.environments() if e["id"] == env_id)
                assert env["state"] == "deregistered"
                await sub.close()
        finally:
            bridge.stop()
        after = [c for c in proxy.recorded() if c.at >= signalled]
        kinds = [("stop" if c.path.endswith("/stop") else "archive" if c.path.endswith("/archive")
                  else "deregister" if c.method == "DELETE" else "other") for c in after]
        order = [k for k in kinds if k != "other"]
        assert order == ["stop", "archive", "deregister"], [(c.method, c.path) for c in after]
        steps = [e["step"] for e in bridge.all("teardown")]
        assert steps == ["stop_polling", "terminate_agents", "stop_work", "archive", "deregister"]


@pytest.mark.parametrize("own_server", [{"poll_timeout_s": 0.2, "reclaim_older_than_ms": 100}], indirect=True)
async def test_capacity_one_second_session_starts_at_once_and_no_busy_poll(
        own_server: ServerProcess, dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """Capacity 1, two sessions: the second waits (no polls while at capacity, even with a server
    that answers polls in 0.2 s) and starts within a second of the first one ending."""
    project, home = dirs
    token = own_server.token()
    bridge = BridgeProcess(own_server.url, token, project, home, "--capacity", "1",
                           "--no-create-session-in-dir").start()
    try:
        env_id = await in_thread(lambda: bridge.environment_id)
        async with open_api(own_server, token) as client:
            api = Api(own_server, token, client)
            first = await api.create_session(env_id, "first")
            await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == first)
            second = await api.create_session(env_id, "second")
            polls_before = await api.polls_total()
            sub, result = await turn_with_permission(api, first, "write a note")
            await sub.close()
            assert result["subtype"] == "success"
            await asyncio.sleep(2.0)  # an observation window: a busy poller would poll ~10×/s here
            assert await api.polls_total() - polls_before <= 1
            assert not [e for e in bridge.all("session_started") if e["session_id"] == second]
            await api.archive(first)
            ended = await in_thread(bridge.wait_for, "session_ended", lambda e: e["session_id"] == first)
            started = await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == second)
            assert started["time"] - ended["time"] < 1.0, (ended, started)
            sub, result = await turn_with_permission(api, second, "write a note")
            await sub.close()
            assert result["subtype"] == "success"
    finally:
        assert bridge.stop() == 0


async def test_worktree_mode_creates_and_removes_worktree_and_branch(
        server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    repo = make_repo(tmp_path / "repo")
    bridge = BridgeProcess(server.url, owner_token, repo, tmp_path / "home", "--spawn", "worktree",
                           "--no-create-session-in-dir").start()
    try:
        env_id = await in_thread(lambda: bridge.environment_id)
        async with open_api(server, owner_token) as client:
            api = Api(server, owner_token, client)
            sid = await api.create_session(env_id)
            started = await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == sid)
            path, branch = pathlib.Path(started["worktree"]), started["branch"]
            assert path == repo / ".tether" / "worktrees" / f"bridge-{sid}"
            assert await in_thread(path.is_dir) and started["cwd"] == str(path)
            assert git(repo, "branch", "--list", branch)
            sub, result = await turn_with_permission(api, sid, "write a note")
            await sub.close()
            assert result["subtype"] == "success"
            assert (path / "tether-note.txt").exists() and not (repo / "tether-note.txt").exists()
            await api.archive(sid)
            await in_thread(bridge.wait_for, "worktree_removed", lambda e: e["path"] == str(path))
            assert not await in_thread(path.exists)
            assert git(repo, "branch", "--list", branch) == ""
            assert "bridge-" not in git(repo, "worktree", "list")
    finally:
        assert bridge.stop() == 0


async def test_sigkilled_bridge_resumes_with_continue(server: ServerProcess, owner_token: str,
                                                      dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    project, home = dirs
    first = BridgeProcess(server.url, owner_token, project, home, "--spawn", "session").start()
    second: BridgeProcess | None = None
    try:
        env_id = await in_thread(lambda: first.environment_id)
        sid = (await in_thread(first.wait_for, "session_created"))["session_id"]
        await in_thread(first.wait_for, "session_started", lambda e: e["session_id"] == sid)
        async with open_api(server, owner_token) as client:
            api = Api(server, owner_token, client)
            sub, result = await turn_with_permission(api, sid, "write a note")
            assert result["subtype"] == "success"
            first.kill()  # SIGKILL: no teardown, the pointer stays
            assert (await api.session(sid))["session_status"] != "archived"
            second = BridgeProcess(server.url, owner_token, project, home, "--continue").start()
            registered = await in_thread(second.wait_for, "registered")
            assert registered["environment_id"] == env_id and registered["reattached"] is True
            resumed = await in_thread(second.wait_for, "session_resumed")
            assert resumed["session_id"] == sid
            await in_thread(second.wait_for, "session_started", lambda e: e["session_id"] == sid)
            _, result = await turn_with_permission(api, sid, "write another note", sub)
            assert result["subtype"] == "success"
            assert second.stop() == 0  # a requested stop: the session stays open for the next --continue
            assert second.wait_for("resumable")["session_id"] == sid
            assert (await api.session(sid))["session_status"] != "archived"
            found = read_pointer(project, home)
            assert found is not None and found.pointer.session_id == sid
            await sub.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.mark.parametrize("own_server", [{"args": ("--worker-transport", "v1")},
                                        {"args": ("--worker-transport", "v2")}], indirect=True, ids=["v1", "v2"])
async def test_a_turn_cut_by_a_bridge_sigkill_runs_again_after_continue(
        own_server: ServerProcess, dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """The agent had started the prompt (echoed it, asked for permission) when its bridge was
    SIGKILLed: the prompt is not processed until its turn's result is stored (docs/protocol.md
    §4.4), so the fresh agent of `--continue` gets it again and the prompt is answered (the chaos
    soak found v1 marking it processed at the echo: the prompt never got an answer)."""
    project, home = dirs
    token = own_server.token()
    first = BridgeProcess(own_server.url, token, project, home, "--spawn", "session").start()
    second: BridgeProcess | None = None
    try:
        sid = (await in_thread(first.wait_for, "session_created"))["session_id"]
        await in_thread(first.wait_for, "session_started", lambda e: id_body(e["session_id"]) == id_body(sid))
        async with open_api(own_server, token) as client:
            api = Api(own_server, token, client)
            sub = await api.subscribe(sid, from_seq=0)
            prompt = await api.prompt(sid, "write a note")
            asked = await sub.wait_for(is_permission, 30)  # mid-turn: the agent waits for the answer
            first.kill()
            second = BridgeProcess(own_server.url, token, project, home, "--continue").start()
            await in_thread(second.wait_for, "session_started", lambda e: id_body(e["session_id"]) == id_body(sid))
            again = await sub.wait_for(lambda f: is_permission(f) and f["request_id"] != asked["request_id"], 30)
            await answer_permission(sub, again)
            result = await sub.wait_for(is_result, 30)
            prompts = [f for f in sub.frames if f.get("type") == "user" and f.get("uuid") == prompt["uuid"]]
            assert len(prompts) == 1, "the prompt is in the log once, whoever ran it"
            assert result["subtype"] == "success" and result["sequence_num"] > prompts[0]["sequence_num"]
            await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]
                               and f["status"] == "processed", 30)
            await sub.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_server_down_then_back_bridge_reconnects_without_losing_the_session(
        own_server: ServerProcess, dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    project, home = dirs
    token = own_server.token()
    bridge = BridgeProcess(own_server.url, token, project, home).start()
    try:
        env_id = await in_thread(lambda: bridge.environment_id)
        sid = (await in_thread(bridge.wait_for, "session_created"))["session_id"]
        await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == sid)
        async with open_api(own_server, token) as client:
            api = Api(own_server, token, client)
            sub, result = await turn_with_permission(api, sid, "write a note")
            await sub.close()
            assert result["subtype"] == "success"
            down_at = time.monotonic()
            await in_thread(own_server.stop)
            await in_thread(bridge.wait_for, "poll_error", timeout=30)
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage itself
            await in_thread(own_server.start)
            await in_thread(bridge.wait_for, "reconnected", timeout=120)
            errors = bridge.all("poll_error")
            assert all(e["kind"] == "connection" for e in errors)
            delays = [e["delay"] for e in errors]
            for attempt, delay in enumerate(delays, 1):  # 2 s → 120 s, ±25 %
                assert 0.75 * min(2.0 * 2 ** (attempt - 1), 120) <= delay <= 1.25 * min(2.0 * 2 ** (attempt - 1), 120)
            assert sum(delays[:-1]) < OUTAGE_S + 2
            sub, result = await turn_with_permission(api, sid, "write one more note", timeout=90)
            assert result["subtype"] == "success"
            assert [e["session_id"] for e in bridge.all("session_started")] == [sid]
            assert not bridge.all("session_ended")
            env = next(e for e in await api.environments() if e["id"] == env_id)
            assert env["state"] == "active"
            await sub.close()
    finally:
        assert bridge.stop() == 0


async def test_continue_waits_for_a_server_that_restarts_while_it_resumes(
        own_server: ServerProcess, dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """`tether rc --continue` registered, then its ``bridge/reconnect`` cannot get through (refused
    by the proxy, then the server itself restarting): the bridge retries on its connection budget
    with a countdown instead of exiting 1, and resumes the same session once the server is back."""
    project, home = dirs
    token = own_server.token()
    first = BridgeProcess(own_server.url, token, project, home, "--spawn", "session").start()
    second: BridgeProcess | None = None
    try:
        sid = (await in_thread(first.wait_for, "session_created"))["session_id"]
        await in_thread(first.wait_for, "session_started", lambda e: e["session_id"] == sid)
        first.kill()  # SIGKILL: the pointer stays for --continue
        async with CutProxy(own_server.port) as proxy:
            proxy.refuse_requests(b"/bridge/reconnect", 600.0)
            second = BridgeProcess(proxy.url, token, project, home, "--continue").start()
            assert (await in_thread(second.wait_for, "registered"))["reattached"] is True
            refused = await in_thread(second.wait_for, "start_retry")
            assert refused["kind"] == "connection" and refused["message"].startswith(f"Resuming session {sid} failed")
            await in_thread(own_server.stop)  # the server restarts: the next attempts find nobody
            proxy.refuse_requests(b"/bridge/reconnect", 0.0)
            seen = len(second.events)
            await in_thread(second.wait_for, "start_retry", after=seen, timeout=60)
            await in_thread(own_server.start)
            resumed = await in_thread(second.wait_for, "session_resumed", timeout=90)
            assert resumed["session_id"] == sid
            assert second.proc is not None and second.proc.poll() is None and not second.all("failed")
            retries = second.all("start_retry")
            assert len(retries) >= 2 and [e["attempt"] for e in retries] == list(range(1, len(retries) + 1))
            assert second.all("reconnected")
            await in_thread(second.wait_for, "session_started", lambda e: e["session_id"] == sid, timeout=60)
            async with open_api(own_server, token) as client:
                api = Api(own_server, token, client)
                sub, result = await turn_with_permission(api, sid, "write a note after the restart", timeout=90)
                assert result["subtype"] == "success"
                await sub.close()
            assert second.stop() == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


@pytest.mark.parametrize("own_server", [{"worker_token_ttl_s": 303.0, "lease_ttl_s": 3.0,
                                         "lease_check_interval_s": 0.25}], indirect=True)
async def test_worker_token_refresh_and_heartbeats(own_server: ServerProcess,
                                                   dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """A worker token expiring in 303 s is refreshed 5 minutes before (≈3 s in) through
    bridge/reconnect; the re-dispatched work item reaches the running host as a token update.
    With a 3 s lease, heartbeats (every second) keep the lease: no other re-dispatch happens."""
    project, home = dirs
    token = own_server.token()
    bridge = BridgeProcess(own_server.url, token, project, home).start()
    try:
        sid = (await in_thread(bridge.wait_for, "session_created"))["session_id"]
        started = await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == sid)
        await in_thread(bridge.wait_for, "token_refresh", lambda e: e["session_id"] == sid, timeout=30)
        refreshed = await in_thread(bridge.wait_for, "token_refreshed", lambda e: e["session_id"] == sid)
        assert refreshed["work_id"] != started["work_id"]
        async with open_api(own_server, token) as client:
            api = Api(own_server, token, client)
            sub, result = await turn_with_permission(api, sid, "write a note")
            assert result["subtype"] == "success"
            await asyncio.sleep(4.0)  # an observation window longer than the lease
            _, result = await turn_with_permission(api, sid, "write a note again", sub)
            assert result["subtype"] == "success"
            await sub.close()
        assert len(bridge.all("session_started")) == 1
        assert len(bridge.all("token_refreshed")) == 1, "a lease lapsed (or a token was refreshed twice)"
    finally:
        assert bridge.stop() == 0


async def test_failure_reason_from_stderr_and_session_timeout(server: ServerProcess, owner_token: str,
                                                              dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """An agent that dies: its stderr is the failure reason and the session is archived; a session
    that outlives --session-timeout is stopped by the watchdog."""
    project, home = dirs
    bridge = BridgeProcess(server.url, owner_token, project, home, "--no-create-session-in-dir",
                           "--session-timeout", "3", agent=f"python3 {STUB_AGENT}").start()
    try:
        env_id = await in_thread(lambda: bridge.environment_id)
        async with open_api(server, owner_token) as client:
            api = Api(server, owner_token, client)
            dying = await api.create_session(env_id, "dying")
            await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == dying)
            await api.prompt(dying, "EXIT 3")
            ended = await in_thread(bridge.wait_for, "session_ended", lambda e: e["session_id"] == dying)
            assert ended["status"] == "failed" and ended["exit_code"] == 3
            assert "stub agent: status 3" in ended["reason"]
            assert ended["stderr_tail"][-1] == "stub agent: status 3"
            await in_thread(bridge.wait_for, "session_archived", lambda e: e["session_id"] == dying)
            assert (await api.session(dying))["session_status"] == "archived"
            slow = await api.create_session(env_id, "slow")
            await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"] == slow)
            ended = await in_thread(bridge.wait_for, "session_ended", lambda e: e["session_id"] == slow,
                                    timeout=20)
            assert ended["status"] == "failed" and "--session-timeout" in ended["reason"]
            await in_thread(bridge.wait_for, "session_archived", lambda e: e["session_id"] == slow)
    finally:
        assert bridge.stop() == 0


@pytest.mark.parametrize("own_server", [{"worker_transport": "v2"}], indirect=True)
async def test_v2_dispatch_uses_the_v2_transport(own_server: ServerProcess,
                                                 dirs: tuple[pathlib.Path, pathlib.Path]) -> None:
    """A work secret with use_code_sessions=true: the host runs on the v2 transport (SSE + CCR)."""
    project, home = dirs
    token = own_server.token()
    bridge = BridgeProcess(own_server.url, token, project, home, "--no-create-session-in-dir").start()
    try:
        env_id = await in_thread(lambda: bridge.environment_id)
        async with open_api(own_server, token) as client:
            api = Api(own_server, token, client)
            sid = await api.create_session(env_id)
            started = await in_thread(bridge.wait_for, "session_started",
                                      lambda e: e["session_id"].split("_")[-1] == sid.split("_")[-1])
            assert started["session_id"].startswith("cse_")
            sub, result = await turn_with_permission(api, sid, "write a note")
            assert result["subtype"] == "success"
            await sub.close()
            await api.archive(sid)
            ended = await in_thread(bridge.wait_for, "session_ended")
            assert ended["status"] == "completed"
    finally:
        assert bridge.stop() == 0
