"""The bridge loop against a fake API, an injected clock and (for sessions) an in-memory
transport with the stub agent as a real child process."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import random
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from tests.support.server import ROOT
from tests.support.waiting import eventually

from tether.bridge.loop import Bridge, BridgeOptions
from tether.bridge.pointer import BridgePointer, read_pointer, write_pointer
from tether.bridge.session_host import HostConfig
from tether.bridge.spawner import AgentChoice
from tether.bridge.status import RecordingSink
from tether.client.api import BridgeConfig, Registration, WorkItem
from tether.client.transport import Message, TransportClosed, TransportState
from tether.errors import ApiUnavailable
from tether.protocol.poll_config import parse_poll_config
from tether.protocol.work_secret import WorkSecret, encode_work_secret

pytestmark = pytest.mark.anyio

STUB = ROOT / "tests" / "support" / "stub_agent.py"
ENV = "env_01aaaaaaaaaaaaaaaaaaaaaaaa"
SID = "session_01bbbbbbbbbbbbbbbbbbbbbbbb"


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.5


def jwt(exp: float) -> str:
    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'HS256'})}.{enc({'exp': exp})}.sig"


def work(work_id: str, session_id: str = SID, *, secret: str | None = None, kind: str = "session") -> WorkItem:
    if secret is None:
        secret = encode_work_secret(WorkSecret(jwt(time.time() + 4 * 3600), "http://tether.test"))
    return WorkItem(work_id, ENV, "queued", kind, session_id, secret, None)


class FakeApi:
    """The ApiClient calls the bridge makes, recorded in order; polls come from a queue."""

    server = "http://tether.test"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.work: asyncio.Queue[WorkItem | Exception] = asyncio.Queue()
        self.poll_errors = 0
        self.archive_reasons: dict[str, str | None] = {}

    async def register_environment(self, **kw: Any) -> Registration:
        self.calls.append(("register", kw.get("max_sessions"), kw.get("environment_id")))
        return Registration(ENV, "secret", kw.get("environment_id"))

    async def create_session(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("create_session",))
        return {"id": SID}

    async def get_session(self, sid: str) -> dict[str, Any]:
        return {"id": sid, "title": "from the server", "environment_id": ENV, "session_status": "idle"}

    async def poll_for_work(self, env: str, secret: str, **kw: Any) -> WorkItem | None:
        self.calls.append(("poll",))
        try:
            item = await asyncio.wait_for(self.work.get(), 0.2)
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def acknowledge_work(self, env: str, work_id: str, token: str) -> None:
        self.calls.append(("ack", work_id))

    async def stop_work(self, env: str, work_id: str, *, force: bool) -> None:
        self.calls.append(("stop", work_id, force))

    async def heartbeat_work(self, env: str, work_id: str, token: str) -> None:
        self.calls.append(("heartbeat", work_id))

    async def reconnect_session(self, env: str, sid: str) -> str:
        self.calls.append(("reconnect", sid))
        return sid

    async def archive_session(self, sid: str, reason: str | None = None) -> bool:
        self.calls.append(("archive", sid))
        self.archive_reasons[sid] = reason
        return True

    async def deregister_environment(self, env: str) -> None:
        self.calls.append(("deregister", env))

    def named(self, *names: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] in names]


class FakeTransport:
    """An in-memory SessionTransport: the test pushes inbound messages and reads what was written."""

    def __init__(self, session_id: str, token: str) -> None:
        self.session_id = session_id
        self.tokens = [token]
        self.written: list[Message] = []
        self._inbound: asyncio.Queue[Message | None] = asyncio.Queue()
        self._closed = asyncio.Event()
        self.state = TransportState.CONNECTED
        self.closed_info: TransportClosed | None = None

    async def run(self) -> TransportClosed:
        await self._closed.wait()
        return self.closed_info or TransportClosed("closed")

    async def wait_connected(self, timeout: float) -> bool:
        return True

    def write(self, message: Message) -> None:
        self.written.append(message)

    def write_many(self, messages: Iterable[Message]) -> None:
        self.written.extend(messages)

    async def incoming(self) -> AsyncIterator[Message]:
        while (msg := await self._inbound.get()) is not None:
            yield msg

    def push(self, msg: Message) -> None:
        self._inbound.put_nowait(msg)

    def set_token(self, token: str) -> None:
        self.tokens.append(token)

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self, grace: float | None = None) -> None:
        self.closed_info = self.closed_info or TransportClosed("closed")
        self.state = TransportState.CLOSED
        self._inbound.put_nowait(None)
        self._closed.set()


class FakeTime:
    """The bridge's clock and its backoff sleeps: a sleep advances the clock (plus any scripted nap)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.naps: dict[int, float] = {}  # sleep index → extra seconds the machine was suspended

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.naps.get(len(self.sleeps), 0.0)
        await asyncio.sleep(0)


def options(tmp_path: pathlib.Path, **kw: Any) -> BridgeOptions:
    base: dict[str, Any] = dict(
        directory=tmp_path, agent=AgentChoice((sys.executable, str(STUB)), "custom", "stub"),
        spawn_mode="same-dir", max_sessions=2, machine_name="test-box", create_initial_session=False,
        home=tmp_path / "home", shutdown_grace_s=5.0)
    base.update(kw)
    return BridgeOptions(**base)


def make_bridge(api: FakeApi, tmp_path: pathlib.Path, fake_time: FakeTime | None = None,
                transports: list[FakeTransport] | None = None, **kw: Any) -> tuple[Bridge, RecordingSink]:
    sink = RecordingSink()
    made = transports if transports is not None else []

    async def factory(secret: WorkSecret, *, base_url: str, session_id: str, **_: Any) -> FakeTransport:
        t = FakeTransport(session_id, secret.session_ingress_token)
        made.append(t)
        return t

    extra: dict[str, Any] = {}
    if fake_time is not None:
        extra.update(clock=fake_time.clock, sleep=fake_time.sleep)
    bridge = Bridge(api, options(tmp_path, **kw), BridgeConfig(parse_poll_config(None), {}), sink,  # type: ignore[arg-type]
                    rnd=NoJitter(), transport_factory=factory, host_config=HostConfig(term_grace=5.0), **extra)
    return bridge, sink


async def test_sleep_detection_with_an_injected_clock(tmp_path: pathlib.Path) -> None:
    """Poll failures back off 2, 4, 8 … s; a suspend of 400 s during a wait restarts the budget
    (no give-up although more than 10 minutes passed on the clock); a success reconnects."""
    api, ft = FakeApi(), FakeTime()
    for _ in range(7):
        api.work.put_nowait(ApiUnavailable("connection refused"))
    ft.naps = {4: 400.0}  # the machine slept during the 4th backoff wait
    bridge, sink = make_bridge(api, tmp_path, ft)
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: "reconnected" in sink.names(), timeout=10)
    bridge.request_shutdown("test")
    assert await task == 0
    errors = [f for name, _, f in sink.events if name == "poll_error"]
    assert [e["delay"] for e in errors] == [2.0, 4.0, 8.0, 16.0, 2.0, 4.0, 8.0]
    assert [e["slept"] for e in errors] == [False] * 4 + [True, False, False]
    assert "sleep_detected" in sink.names() and "failed" not in sink.names()
    assert ft.now - 1000.0 > 400.0


async def test_gives_up_after_ten_minutes_and_stays_resumable(tmp_path: pathlib.Path) -> None:
    api, ft = FakeApi(), FakeTime()
    for _ in range(40):
        api.work.put_nowait(ApiUnavailable("connection refused"))
    bridge, sink = make_bridge(api, tmp_path, ft, create_initial_session=True)
    assert await asyncio.wait_for(bridge.run(), 30) == 1
    assert bridge.state == "failed" and "Gave up" in (bridge.failure or "")
    assert 600 <= ft.now - 1000.0 < 800
    # resumable: nothing archived or deregistered, the pointer stays for --continue
    assert not api.named("archive", "deregister")
    found = read_pointer(tmp_path, tmp_path / "home")
    assert found is not None and found.pointer.session_id == SID
    assert "resumable" in sink.names()


async def test_bad_secret_is_released_and_healthcheck_acked(tmp_path: pathlib.Path) -> None:
    api = FakeApi()
    api.work.put_nowait(work("work_bad", secret="not*base64"))
    api.work.put_nowait(work("work_hc", kind="healthcheck"))
    bridge, sink = make_bridge(api, tmp_path)
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: ("ack", "work_hc") in api.calls, timeout=10)
    bridge.request_shutdown("test")
    assert await task == 0
    assert ("stop", "work_bad", False) in api.calls and ("ack", "work_bad") not in api.calls
    assert "work_rejected" in sink.names() and "session_started" not in sink.names()


async def test_redispatch_goes_to_the_running_host_then_teardown_in_order(tmp_path: pathlib.Path) -> None:
    api = FakeApi()
    transports: list[FakeTransport] = []
    bridge, sink = make_bridge(api, tmp_path, transports=transports)
    task = asyncio.create_task(bridge.run())
    api.work.put_nowait(work("work_1"))
    await eventually(lambda: "session_started" in sink.names(), timeout=10)
    fresh = jwt(time.time() + 4 * 3600 + 60)
    api.work.put_nowait(work("work_2", secret=encode_work_secret(WorkSecret(fresh, "http://tether.test"))))
    await eventually(lambda: "token_refreshed" in sink.names(), timeout=10)
    assert len(transports) == 1 and transports[0].tokens[-1] == fresh
    assert bridge.sessions[SID.split("_")[1]].work_id == "work_2"
    # the agent still answers through the same host
    transports[0].push({"type": "user", "uuid": "u-1", "session_id": "", "parent_tool_use_id": None,
                        "message": {"role": "user", "content": "hello"}})
    await eventually(lambda: any(m.get("type") == "result" for m in transports[0].written), timeout=20)
    bridge.request_shutdown("test")
    assert await task == 0
    order = [c for c in api.calls if c[0] in ("ack", "stop", "archive", "deregister")]
    assert order == [("ack", "work_1"), ("ack", "work_2"), ("stop", "work_2", True), ("archive", SID),
                     ("deregister", ENV)]
    steps = [f["step"] for name, _, f in sink.events if name == "teardown"]
    assert steps == ["stop_polling", "terminate_agents", "stop_work", "archive", "deregister"]
    assert [f["status"] for name, _, f in sink.events if name == "session_ended"] == ["interrupted"]


async def test_capacity_held_work_starts_when_a_session_ends(tmp_path: pathlib.Path) -> None:
    """At capacity a re-delivered item is held (not acked); a session end wakes the loop at once."""
    api = FakeApi()
    transports: list[FakeTransport] = []
    bridge, sink = make_bridge(api, tmp_path, transports=transports, max_sessions=1)
    task = asyncio.create_task(bridge.run())
    api.work.put_nowait(work("work_1"))
    await eventually(lambda: "session_started" in sink.names(), timeout=10)
    polls = len(api.named("poll"))
    await asyncio.sleep(1.0)  # an observation window: at capacity the loop must not poll
    assert len(api.named("poll")) == polls
    other = "session_01cccccccccccccccccccccccc"
    api.work.put_nowait(work("work_2", other))
    bridge._wake.set()  # e.g. a liveness poll is due: the item arrives while still at capacity
    bridge._awaiting_redispatch.add("x")
    await eventually(lambda: "work_held" in sink.names(), timeout=10)
    bridge._awaiting_redispatch.clear()
    assert ("ack", "work_2") not in api.calls
    await transports[0].close()  # the first session ends (its transport closed for good)
    await eventually(lambda: len([n for n in sink.names() if n == "session_started"]) == 2, timeout=20)
    ended = next(f for n, _, f in sink.events if n == "session_ended")
    assert ended["status"] == "completed"
    assert ("stop", "work_1", False) in api.calls and ("archive", SID) in api.calls
    assert ("ack", "work_2") in api.calls
    bridge.request_shutdown("test")
    assert await task == 0


async def test_what_the_terminal_shows_of_a_session(tmp_path: pathlib.Path) -> None:
    """One id costume (the web URL's ``session_…``, also for ``cse_`` work), the server's title over
    the one the host derives, and a live session after its turn is idle, not "completed"."""
    api = FakeApi()
    transports: list[FakeTransport] = []
    bridge, sink = make_bridge(api, tmp_path, transports=transports)
    task = asyncio.create_task(bridge.run())
    body = SID.split("_", 1)[1]
    api.work.put_nowait(work("work_1", f"cse_{body}"))
    await eventually(lambda: "session_started" in sink.names(), timeout=10)
    transports[0].push({"type": "user", "uuid": "u-1", "session_id": "", "parent_tool_use_id": None,
                        "message": {"role": "user", "content": "a title the host would derive"}})
    await eventually(lambda: any(m.get("type") == "result" for m in transports[0].written), timeout=20)
    assert bridge.sessions[body].host.title == "a title the host would derive"
    await eventually(lambda: bridge.snapshot().sessions[0].state == "idle", timeout=10)
    session = bridge.snapshot().sessions[0]
    assert session.title == "from the server" and session.activity is None
    assert session.url == f"http://tether.test/code/{SID}"
    bridge.request_shutdown("test")
    assert await task == 0
    messages = [m for _, m, _ in sink.events if body in m]
    assert messages and all(SID in m and f"cse_{body}" not in m for m in messages), messages


async def test_ctrl_c_leaves_the_directory_session_open_for_continue(tmp_path: pathlib.Path) -> None:
    """Issue #10 item 3: a requested stop keeps the pointer's session (not archived, pointer kept,
    the environment deregistered) and says how to resume it; other sessions are archived as
    ``bridge_stopped``."""
    api = FakeApi()
    bridge, sink = make_bridge(api, tmp_path, create_initial_session=True,
                               resume_command="tether up --continue")
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: bridge.state == "ready", timeout=10)
    other = "session_01cccccccccccccccccccccccc"
    api.work.put_nowait(work("work_2", other))
    await eventually(lambda: "session_started" in sink.names(), timeout=10)
    bridge.request_shutdown("SIGINT")
    assert await task == 0
    assert api.named("archive") == [("archive", other)] and api.archive_reasons[other] == "bridge_stopped"
    assert api.named("deregister") == [("deregister", ENV)]
    found = read_pointer(tmp_path, tmp_path / "home")
    assert found is not None and found.pointer.session_id == SID
    resumable = next(f for n, m, f in sink.events if n == "resumable")
    assert resumable["session_id"] == SID
    assert "`tether up --continue`" in next(m for n, m, _ in sink.events if n == "resumable")
    assert [f["step"] for n, _, f in sink.events if n == "teardown"] == [
        "stop_polling", "terminate_agents", "stop_work", "archive", "deregister"]


async def test_a_session_that_ended_is_archived_with_why(tmp_path: pathlib.Path) -> None:
    api = FakeApi()
    transports: list[FakeTransport] = []
    bridge, sink = make_bridge(api, tmp_path, transports=transports, create_initial_session=True,
                               spawn_mode="session", max_sessions=1)
    task = asyncio.create_task(bridge.run())
    api.work.put_nowait(work("work_1"))
    await eventually(lambda: "session_started" in sink.names(), timeout=10)
    await transports[0].close()  # the single session ends: the bridge stops and archives it
    assert await task == 0
    assert api.archive_reasons == {SID: "session_ended"}
    assert read_pointer(tmp_path, tmp_path / "home") is None and "resumable" not in sink.names()


async def test_a_bridge_whose_environment_was_registered_again_leaves_it_to_the_other(
        tmp_path: pathlib.Path) -> None:
    """The poll's secret is refused (401): another bridge registered the environment again and owns
    it, its sessions and their work now. This one stops its agents and touches nothing on the server
    (archiving the session or deregistering would end the other bridge's)."""
    from tether.errors import BridgeFatalError

    api = FakeApi()
    api.work.put_nowait(BridgeFatalError("The environment secret is not recognised.", status=401,
                                         error_type="authentication_error"))
    bridge, sink = make_bridge(api, tmp_path, create_initial_session=True)
    assert await asyncio.wait_for(bridge.run(), 30) == 1
    assert api.archive_reasons == {}
    names = [c[0] for c in api.calls]
    assert "deregister" not in names and "stop" not in names, names
    steps = [f["step"] for n, _, f in sink.events if n == "teardown"]
    assert steps == ["stop_polling", "terminate_agents", "clear_pointer"]
    assert read_pointer(tmp_path, tmp_path / "home") is None  # a bridge here later must not take it back
    failure = bridge.failure or ""
    assert "environment secret" in failure and ENV in failure and "login is not the problem" in failure


async def test_a_failed_bridge_archives_as_bridge_failed(tmp_path: pathlib.Path) -> None:
    from tether.errors import BridgeFatalError

    api = FakeApi()
    api.work.put_nowait(BridgeFatalError("The environment is gone.", status=410, error_type="not_found_error"))
    bridge, sink = make_bridge(api, tmp_path, create_initial_session=True)
    assert await asyncio.wait_for(bridge.run(), 30) == 1
    assert api.archive_reasons == {SID: "bridge_failed"}
    assert "The environment is gone" in (bridge.failure or "")
    assert read_pointer(tmp_path, tmp_path / "home") is None


async def test_a_fresh_start_replaces_the_session_the_last_bridge_left(tmp_path: pathlib.Path) -> None:
    """The pointer of an earlier run (however old) names a session nobody resumed: a new bridge
    archives it as ``replaced`` before it creates the new one (the server links them)."""
    old = "session_01dddddddddddddddddddddddd"
    path = write_pointer(tmp_path, BridgePointer(old, ENV), tmp_path / "home")
    stale = time.time() - 10 * 3600
    os.utime(path, (stale, stale))
    api = FakeApi()
    bridge, sink = make_bridge(api, tmp_path, create_initial_session=True)
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: bridge.state == "ready", timeout=10)
    names = [c[0] for c in api.calls]
    assert names.index("archive") < names.index("register") < names.index("create_session")
    assert api.archive_reasons == {old: "replaced"} and "session_replaced" in sink.names()
    found = read_pointer(tmp_path, tmp_path / "home")
    assert found is not None and found.pointer.session_id == SID
    bridge.request_shutdown("SIGTERM")
    assert await task == 0


async def test_items_that_start_no_agent(tmp_path: pathlib.Path) -> None:
    """Each row of classify_work as the adapter applies it: an unknown type is acknowledged and
    skipped, an invalid session id released, the hosted session's item again acknowledged once
    more (its first ack was lost), never a second agent."""
    api = FakeApi()
    transports: list[FakeTransport] = []
    bridge, sink = make_bridge(api, tmp_path, transports=transports)
    task = asyncio.create_task(bridge.run())
    api.work.put_nowait(work("work_future", kind="future_thing"))
    api.work.put_nowait(work("work_bad_id", "../etc/passwd"))
    api.work.put_nowait(work("work_1"))
    await eventually(lambda: "session_started" in sink.names(), timeout=10)
    api.work.put_nowait(work("work_1"))
    await eventually(lambda: api.named("ack").count(("ack", "work_1")) == 2, timeout=10)
    api.work.put_nowait(work("work_bad_id", "../etc/passwd"))  # released before: ignored
    polls = len(api.named("poll"))
    await eventually(lambda: len(api.named("poll")) > polls + 1, timeout=10)
    bridge.request_shutdown("test")
    assert await task == 0
    assert ("ack", "work_future") in api.calls
    assert api.named("stop")[0] == ("stop", "work_bad_id", False) and ("ack", "work_bad_id") not in api.calls
    assert api.named("stop").count(("stop", "work_bad_id", False)) == 1
    rejected = [m for n, m, _ in sink.events if n == "work_rejected"]
    assert rejected == ["Work work_bad_id names an invalid session id; releasing it."]
    assert len(transports) == 1 and sink.names().count("session_started") == 1
    assert "token_refreshed" not in sink.names()


class FlakyReconnectApi(FakeApi):
    """``bridge/reconnect`` fails with the scripted errors first (a server restarting), then works."""

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__()
        self.failures = failures

    async def reconnect_session(self, env: str, sid: str) -> str:
        self.calls.append(("reconnect", sid))
        if self.failures:
            raise self.failures.pop(0)
        return sid


async def test_continue_retries_a_failed_reconnect_on_the_connection_budget(tmp_path: pathlib.Path) -> None:
    """Issue: `--continue` exited 1 at once when E7 failed after registering. Now the start retries
    it on the poll loop's connection track (2, 4, 8 s), shows reconnecting with a countdown while
    it waits, and resumes the session once the server answers."""
    from tether.errors import ApiError

    api, ft = FlakyReconnectApi([ApiUnavailable("connection refused"), ApiUnavailable("connection refused"),
                                 ApiError("busy", status=429)]), FakeTime()
    bridge, sink = make_bridge(api, tmp_path, ft, resume_session_id=SID)
    states: list[tuple[str, float | None]] = []
    real_event = sink.event

    def watch(name: str, message: str, /, **fields: Any) -> None:
        real_event(name, message, **fields)
        if name == "start_retry":
            snap = bridge.snapshot()
            states.append((snap.state, snap.retry_in))

    sink.event = watch  # type: ignore[method-assign]
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: bridge.state == "ready", timeout=10)
    retries = [(m, f) for n, m, f in sink.events if n == "start_retry"]
    assert [f["kind"] for _, f in retries] == ["connection", "connection", "general"]
    assert [f["delay"] for _, f in retries] == [2.0, 4.0, 0.5]  # the general track starts at 500 ms
    assert retries[0][0] == f"Resuming session {SID} failed (connection refused); retrying in 2.0 s."
    assert states == [("reconnecting", 2.0), ("reconnecting", 4.0), ("reconnecting", 0.5)]
    assert api.named("reconnect") == [("reconnect", SID)] * 4 and len(api.named("register")) == 1
    names = sink.names()
    assert names.index("reconnected") < names.index("session_resumed") and "failed" not in names
    bridge.request_shutdown("test")
    assert await task == 0


async def test_continue_gives_up_after_the_budget_and_keeps_the_session(tmp_path: pathlib.Path) -> None:
    api, ft = FlakyReconnectApi([ApiUnavailable("connection refused") for _ in range(40)]), FakeTime()
    write_pointer(tmp_path, BridgePointer(SID, ENV), tmp_path / "home")
    bridge, sink = make_bridge(api, tmp_path, ft, resume_session_id=SID)
    assert await asyncio.wait_for(bridge.run(), 30) == 1
    assert bridge.state == "failed"
    assert 600 <= ft.now - 1000.0 < 800
    failure = bridge.failure or ""
    assert failure.startswith(f"Resuming session {SID} failed; gave up reaching the server after 6")
    assert "`tether remote-control --continue` again once the server is back" in failure
    found = read_pointer(tmp_path, tmp_path / "home")
    assert found is not None and found.pointer.session_id == SID
    assert not api.named("archive") and "session_resumed" not in sink.names()


async def test_a_stop_while_the_start_waits_to_retry_ends_at_once(tmp_path: pathlib.Path) -> None:
    api = FlakyReconnectApi([ApiUnavailable("connection refused") for _ in range(40)])
    bridge, sink = make_bridge(api, tmp_path, resume_session_id=SID)  # the real clock: a 2 s wait
    task = asyncio.create_task(bridge.run())
    await eventually(lambda: "start_retry" in sink.names(), timeout=10)
    started = time.monotonic()
    bridge.request_shutdown("SIGINT")
    assert await asyncio.wait_for(task, 10) == 0
    assert time.monotonic() - started < 1.5
    stopped = next(m for n, m, _ in sink.events if n == "stopped")
    assert stopped.startswith("Stopped (SIGINT) before the bridge was up")


async def test_continue_fails_at_once_when_the_server_refuses_the_reconnect(tmp_path: pathlib.Path) -> None:
    from tether.errors import BridgeFatalError

    api = FlakyReconnectApi([BridgeFatalError("Session is archived.", status=410)])
    bridge, sink = make_bridge(api, tmp_path, resume_session_id=SID)
    assert await asyncio.wait_for(bridge.run(), 10) == 1
    assert bridge.failure == f"Cannot resume {SID}: Session is archived."
    assert "start_retry" not in sink.names()
