"""Scale-out end to end: two `tether server` instances (A, B) on one PostgreSQL database and one
Redis, nginx in front of them with the shipped deploy/nginx settings, real `tether rc` bridges
polling through nginx, `tether agent` children on the offline scripted model, a subscriber socket
and a Chromium page on B.

- SIGKILL of instance A while the worker's connection (v1 socket, or v2 SSE stream) is on A, in
  the middle of a turn that streams many events: the worker comes back through nginx to B and the
  turn finishes; B's subscriber sees every logged event once, numbers contiguous; a page on B, and
  a page through nginx (on A, then back through nginx on B), show the finished turn once; a prompt
  sent after the kill is answered.
- Two bridges through nginx whose polls race for one work item: one starts an agent for it, the
  other never does.
- Two answers to one permission request, sent to different instances: the first wins, the other
  gets the documented ``already_resolved`` error frame (docs/protocol.md §4.6), and the agent gets
  exactly one decision.

nginx pins the worker deterministically: A is the upstream's primary and B its ``backup`` (the
shipped ``upstream`` block otherwise), so everything through nginx goes to A while A is up, and
the test checks A's own gauges before it kills A.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pathlib
import shutil
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.bridge_helpers import answer, is_permission, is_result
from tests.support.bridge import SCRIPTED, BridgeProcess
from tests.support.nginx import Nginx, Upstream, nginx_binary
from tests.support.server import ServerProcess, free_port, wait_until
from tests.support.services import fresh_database, redis_url
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth, subscribe, user_message
from tether.protocol.ids import id_body

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(150)]

ROUNDS = 8
"""Model requests in the long turn: each streams its text slowly, then calls a read-only tool."""


def long_turn_scenario() -> str:
    """The scripted model (tether/agent/scenario.py): ``STREAM`` runs ROUNDS requests, each
    streaming a paced text and a Glob call (read-only: no permission asked), then ends."""
    round_lines = ["chunk 6", "delay 0.05"]
    lines = ["reply when STREAM", *round_lines, 'text "Round 0 of the long turn streams slowly, delta by delta."',
             "tool Glob pattern=*.md"]
    for n in range(1, ROUNDS):
        lines += ["reply after tool", *round_lines, f'text "Round {n} of the long turn streams slowly, too."',
                  "tool Glob pattern=*.md"]
    lines += ["reply after tool", *round_lines, 'text "The long turn is over: FINAL-MARKER."', ECHO]
    return "\n".join(lines) + "\n"


ECHO = 'reply when ECHO\ntext "You said: {prompt}"'
SHORT_SCENARIO = f"""reply after tool
text "The tool answered: {{tool_result}}"

reply when PERMIT
text I'll write the note.
tool Write file_path=note.txt content="written once\\n"

{ECHO}
"""
"""The other tests' model: a permission request (``PERMIT``) and an answer (``ECHO``)."""


def need_binaries() -> None:
    """nginx, and PostgreSQL and Redis unless their URLs are given (scripts/services starts them)."""
    postgres = shutil.which("psql") is not None and (
        bool(os.environ.get("TETHER_TEST_POSTGRES_URL")) or bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")))
    redis = bool(os.environ.get("TETHER_TEST_REDIS_URL")) or shutil.which("redis-server") is not None
    missing = [name for name, found in (("nginx", nginx_binary() is not None), ("PostgreSQL", postgres),
                                        ("redis-server", redis)) if not found]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install-test-deps installs them)")


def need_chromium(path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no Chromium at {path} (scripts/install-test-deps installs it)")


@dataclass
class Cluster:
    """A and B on one database and Redis; ``pinned`` (nginx with A primary, B ``backup``) is the
    instances' public URL; ``shared`` is nginx with the shipped upstream as is (``least_conn``)."""

    a: ServerProcess
    b: ServerProcess
    pinned: Nginx
    shared: Nginx
    token: str
    base: pathlib.Path

    def bridge(self, name: str, *args: str, through: Nginx | None = None,
               long_turn: bool = False) -> BridgeProcess:
        project, home = self.base / name / "project", self.base / name / "home"
        project.mkdir(parents=True)
        (project / "README.md").write_text("scale-out e2e\n")
        scenario = self.base / name / "scenario.txt"
        scenario.write_text(long_turn_scenario() if long_turn else SHORT_SCENARIO)
        agent = f"{SCRIPTED} --scenario {scenario}"
        return BridgeProcess((through or self.pinned).url, self.token, project, home, *args, agent=agent)

    def ensure_up(self) -> None:
        """A again after a test killed it (same port and data directory)."""
        self.use_transport(str(self.a.overrides["worker_transport"]))

    def use_transport(self, transport: str) -> None:
        """Both instances up and handing out ``transport`` work (``--worker-transport``): an instance
        that is down (killed by a test) or on the other transport is (re)started."""
        stale = [s for s in (self.a, self.b) if s.overrides["worker_transport"] != transport
                 or s.proc is None or s.proc.poll() is not None]
        for server in stale:
            server.overrides["worker_transport"] = transport
        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(server.restart) for server in stale]:
                done.result()
        if self.a in stale:  # nginx takes A back once its fail_timeout has passed
            wait_until(lambda: self.pinned.routes_to(self.a.port), 30, 0.2, "nginx to route to A again")


@contextlib.contextmanager
def running_cluster(base: pathlib.Path, transport: str) -> Iterator[Cluster]:
    """A and B (A first: it migrates and makes the signing keys), then nginx in front of them."""
    need_binaries()
    ports = free_port(), free_port()
    pinned = Nginx(base / "pinned", [Upstream(ports[0]), Upstream(ports[1], backup=True)])
    shared = Nginx(base / "shared", [Upstream(ports[0]), Upstream(ports[1])])
    with fresh_database() as database_url, contextlib.ExitStack() as stack:
        common: dict[str, Any] = {
            "database_url": database_url, "redis_url": redis_url(), "redis_prefix": f"t-{uuid.uuid4().hex[:12]}",
            "limits": {"rate_per_second": 0}, "public_url": pinned.url, "trusted_proxy": "127.0.0.1",
            "worker_transport": transport}
        a, b = (ServerProcess(base / name, port=port, **common) for name, port in zip("ab", ports, strict=True))
        stack.callback(a.stop)
        a.start()
        for proc in (b, pinned, shared):
            stack.callback(proc.stop)
        with ThreadPoolExecutor(4) as pool:  # the rest at once, once A has migrated the database
            token = pool.submit(a.token)
            for started in [pool.submit(proc.start) for proc in (b, pinned, shared)]:
                started.result()
        yield Cluster(a, b, pinned, shared, token.result(), base)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module (each test uses bridges and sessions of its own); a test that
    needs A after another killed it, or the other worker transport, says so first."""
    with running_cluster(tmp_path_factory.mktemp("cluster"), "v1") as found:
        yield found


async def metric(server: ServerProcess, name: str) -> float:
    r = await asyncio.to_thread(httpx.get, f"{server.url}/metrics", timeout=10)
    for line in r.text.splitlines():
        if line.startswith(f"tether_{name} "):
            return float(line.split()[1])
    return 0.0


STATUS_FRAMES = ("session_update", "delivery_update", "error", "keep_alive")
"""Subscribe frames that are not events of the log (docs/protocol.md §8.4)."""


def logged(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored events among a subscriber's frames (not the ephemeral ones, not status frames)."""
    return [f for f in frames if isinstance(f.get("sequence_num"), int) and not f.get("ephemeral")
            and f.get("type") not in STATUS_FRAMES]


async def login_page(browser: Any, url: str, token: str, sid: str) -> Any:
    """A browser context logged in at ``url`` (an instance, or nginx) with a one-time link, showing
    session ``sid``."""
    async with httpx.AsyncClient(base_url=url, timeout=15) as client:
        r = await client.post("/v1/login-links", json={"next": f"/code/{sid}"}, headers=auth(token))
        assert r.status_code == 200, r.text
        path = r.json()["path"]
    context = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    page = await context.new_page()
    await page.goto(path)
    return page


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.async_api")
    need_chromium(CHROMIUM)
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


WORKER_GAUGE = {"v1": "worker_sockets", "v2": "sse_streams"}


async def test_two_bridges_race_for_one_work_item_one_wins(cluster: Cluster) -> None:
    """Bridge X hosts the session it created; bridge Y resumes it (``--session-id``): Y registers
    the environment again (a new secret) and re-queues the session while X's long poll, begun
    before, waits on the other instance (the shipped ``least_conn`` upstream). Both polls race for
    the one work item: Y's gets it, X's is refused, X stops its agent and leaves the environment,
    the session and the work to Y — which answers a prompt."""
    c = cluster
    await asyncio.to_thread(c.ensure_up)
    x = await asyncio.to_thread(c.bridge("x", through=c.shared).start)
    y: BridgeProcess | None = None
    sub: Receiver | None = None
    try:
        first = await asyncio.to_thread(x.wait_for, "session_started")
        sid = first["session_id"]
        y = await asyncio.to_thread(c.bridge("y", "--session-id", sid, through=c.shared).start)
        started = await asyncio.to_thread(y.wait_for, "session_started",
                                          lambda e: id_body(e["session_id"]) == id_body(sid))
        work_id = started["work_id"]
        assert work_id != first["work_id"]
        failed = await asyncio.to_thread(x.wait_for, "failed")
        assert "registered again by another bridge" in failed["message"], failed
        assert await asyncio.to_thread(x.wait) == 1
        # X never took the item, never started a second agent, and left the server's state alone
        assert not [e for e in x.events if e.get("work_id") == work_id], x.describe()
        assert len(x.all("session_started")) == 1
        assert [e["step"] for e in x.all("teardown")] == ["stop_polling", "terminate_agents", "clear_pointer"]
        async with httpx.AsyncClient(base_url=c.shared.url, timeout=15) as client:
            session = (await client.get(f"/v1/sessions/{sid}", headers=auth(c.token))).json()
            assert session["session_status"] != "archived", session
            sub = await subscribe(c.b.ws_url, sid, c.token)
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("ECHO to Y")]},
                                  headers=auth(c.token))
            assert r.status_code == 200, r.text
            await sub.wait_for(lambda f: f.get("type") == "assistant" and "You said: ECHO to Y" in str(f), 30)
            envs = (await client.get("/v1/environments?all=true", headers=auth(c.token))).json()["data"]
            env = next(e for e in envs if e["id"] == started.get("environment_id", y.environment_id))
            assert env["state"] == "active", env
    finally:
        if sub is not None:
            await sub.close()
        for proc in (x, y):
            if proc is not None:
                await asyncio.to_thread(proc.stop, signal.SIGTERM)


async def test_answers_to_one_permission_on_two_instances_one_wins(cluster: Cluster) -> None:
    c = cluster
    await asyncio.to_thread(c.ensure_up)
    bridge = await asyncio.to_thread(c.bridge("perm", "--no-create-session-in-dir").start)
    subs: list[Receiver] = []
    try:
        env_id = await asyncio.to_thread(lambda: bridge.environment_id)
        async with httpx.AsyncClient(base_url=c.shared.url, timeout=15) as client:
            r = await client.post("/v1/sessions", json={"environment_id": env_id, "title": "race"},
                                  headers=auth(c.token))
            assert r.status_code == 200, r.text
            sid = r.json()["id"]
            await asyncio.to_thread(bridge.wait_for, "session_started",
                                    lambda e: id_body(e["session_id"]) == id_body(sid))
            subs = [await subscribe(c.a.ws_url, sid, c.token), await subscribe(c.b.ws_url, sid, c.token)]
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [user_message("PERMIT a note")]},
                                  headers=auth(c.token))
            assert r.status_code == 200, r.text
            asks = [await sub.wait_for(is_permission, timeout=30) for sub in subs]
            assert asks[0]["request_id"] == asks[1]["request_id"]
            await asyncio.gather(answer(subs[0], asks[0], "allow"), answer(subs[1], asks[1], "deny"))
            result = await subs[0].wait_for(is_result, timeout=30)

            def conflict(sub: Receiver) -> dict[str, Any] | None:
                return next((f for f in sub.frames if f.get("type") == "error"), None)

            loser = await eventually(lambda: next((s for s in subs if conflict(s)), None), timeout=15,
                                     message="the losing answer's error frame")
            error = conflict(loser)
            assert error is not None and error["error"]["type"] == "already_resolved", error
            assert error.get("request_id") in (None, asks[0]["request_id"])
            winner = subs[1] if loser is subs[0] else subs[0]
            assert conflict(winner) is None
            allowed = winner is subs[0]
            # the agent got the winner's decision, once
            assert (bridge.cwd / "note.txt").exists() == allowed, result
            events = (await client.get(f"/v1/sessions/{sid}/events", params={"limit": 200},
                                       headers=auth(c.token))).json()["data"]
            answers = [e for e in events if e.get("type") == "control_response"]
            assert len(answers) == 1, answers
            perms = (await client.get(f"/v1/sessions/{sid}/permissions", headers=auth(c.token))).json()["data"]
            assert [p["status"] for p in perms] == ["allowed" if allowed else "denied"]
    finally:
        for sub in subs:
            await sub.close()
        await asyncio.to_thread(bridge.stop, signal.SIGTERM)


@pytest.mark.parametrize("transport", ["v1", "v2"])
async def test_instance_killed_mid_stream_the_worker_resumes_on_the_other(
        transport: str, cluster: Cluster, browser: Any) -> None:
    from playwright.async_api import expect

    c = cluster
    await asyncio.to_thread(c.use_transport, transport)
    bridge = c.bridge(f"kill-{transport}", "--no-create-session-in-dir", long_turn=True)
    await asyncio.to_thread(bridge.start)
    sub: Receiver | None = None
    try:
        env_id = await asyncio.to_thread(lambda: bridge.environment_id)
        async with httpx.AsyncClient(base_url=c.b.url, timeout=15) as on_b:
            r = await on_b.post("/v1/sessions", json={"environment_id": env_id, "title": "kill A"},
                                headers=auth(c.token))
            assert r.status_code == 200, r.text
            sid = r.json()["id"]
            await asyncio.to_thread(bridge.wait_for, "session_started",
                                    lambda e: id_body(e["session_id"]) == id_body(sid))
            # the worker's connection is on A (nginx's primary), none on B
            await eventually_async(lambda: metric(c.a, WORKER_GAUGE[transport]), message="the worker on A")
            assert await metric(c.b, WORKER_GAUGE[transport]) == 0
            sub = await subscribe(c.b.ws_url, sid, c.token)
            page = await login_page(browser, c.b.url, c.token, sid)
            # a second page through nginx: its socket is on A, and must come back through nginx to B
            away = await login_page(browser, c.pinned.url, c.token, sid)
            for p in (page, away):
                await expect(p.locator("body")).to_have_attribute("data-socket", "open")

            prompt = user_message("STREAM a long turn")
            r = await on_b.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}, headers=auth(c.token))
            assert r.status_code == 200, r.text
            # mid-stream: round 1 of ROUNDS is logged, round 2 streams (deltas carry 6 characters each)
            await sub.wait_for(lambda f: f.get("type") == "assistant" and "Round 1 of" in str(f), timeout=30)
            assert not [f for f in sub.frames if is_result(f)]
            await asyncio.to_thread(c.a.kill)
            rounds_before = sum(f.get("type") == "assistant" and "of the long turn" in str(f) for f in sub.frames)
            assert rounds_before < ROUNDS - 2  # most of the turn streams after the kill

            result = await sub.wait_for(is_result, timeout=60)
            assert result["subtype"] == "success"
            # the worker came back through nginx to B
            await eventually_async(lambda: metric(c.b, WORKER_GAUGE[transport]), message="the worker on B")
            for p in (page, away):
                final = p.locator("#transcript .msg.assistant").filter(has_text="FINAL-MARKER")
                await expect(final).to_have_count(1, timeout=30_000)
                await expect(p.locator("#transcript .meta.result")).to_have_count(1)
            assert int(await away.locator("body").get_attribute("data-connects") or 0) >= 2  # it reconnected

            after = user_message("ECHO after the kill")
            r = await on_b.post(f"/v1/sessions/{sid}/events", json={"events": [after]}, headers=auth(c.token))
            assert r.status_code == 200, r.text
            echoed = await sub.wait_for(lambda f: f.get("type") == "assistant" and "ECHO after the kill" in str(f),
                                        timeout=30)
            await sub.wait_for(lambda f: is_result(f) and f is not result, timeout=30)
            for p in (page, away):
                await expect(p.locator("#transcript")).to_contain_text("You said: ECHO after the kill")

            frames = logged(sub.frames)
            seqs = [f["sequence_num"] for f in frames]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # once each, in order, no gap
            uuids = Counter(f.get("uuid") for f in frames if f.get("uuid"))
            assert all(n == 1 for n in uuids.values()), uuids
            texts = [str(f) for f in frames if f.get("type") == "assistant"]
            for n in range(ROUNDS):
                assert sum(f"Round {n} of the long turn" in t for t in texts) == 1, n
            assert echoed in frames
            assert len([f for f in frames if is_result(f)]) == 2  # no prompt was delivered twice
            for p in (page, away):  # each page shows every message once
                shown = await p.eval_on_selector_all(
                    "#transcript [data-uuid]", "els => els.map(e => e.dataset.uuid + ':' + (e.dataset.block || ''))")
                assert all(n == 1 for n in Counter(shown).values()), Counter(shown)
                text = await p.locator("#transcript").inner_text()
                assert all(text.count(f"Round {n} of the long turn") == 1 for n in range(ROUNDS)), text
            assert len(bridge.all("session_started")) == 1 and not bridge.all("session_ended")  # one agent
            page_ = await on_b.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}, headers=auth(c.token))
            stored = [e["sequence_num"] for e in page_.json()["data"]]
            assert stored == list(range(1, len(stored) + 1))
            assert set(seqs) <= set(stored)
            for p in (page, away):
                await p.context.close()
    finally:
        if sub is not None:
            await sub.close()
        await asyncio.to_thread(bridge.stop, signal.SIGTERM)


async def eventually_async(probe: Any, timeout: float = 30.0, message: str = "condition") -> Any:
    """The first truthy result of the async ``probe`` (polled, like tests/support/waiting.py)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.05)
