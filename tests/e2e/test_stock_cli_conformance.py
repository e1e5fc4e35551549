"""Conformance of Tether's CCR v2 worker routes with the STOCK `claude` CLI (the strongest fidelity
check the project has).

The CLI accepts only Anthropic hosts for ``--sdk-url``, so it runs with
``--sdk-url wss://api.anthropic.com/v1/session_ingress/ws/<session id>`` behind a loopback
TLS-intercepting proxy (mitmproxy with a throwaway CA, tests/support/interceptor.py) that answers
for api.anthropic.com by forwarding to the local `tether server` and refuses every other host.
Its model is the fake Messages API on loopback. Nothing leaves the machine.

One turn with a permission prompt answered by a subscriber: worker state, SSE ``client_event``
delivery (the prompt and the permission answer), delivery acks, events, internal events and a
heartbeat must all be accepted — every request the CLI made is recorded and none may get a 4xx/5xx.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_anthropic import FakeAnthropic
from tests.support.interceptor import Interceptor, Traffic
from tests.support.server import ROOT, ServerProcess
from tests.support.worker import auth, subscribe, user_message

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(150)]

CLAUDE = ROOT / ".tools" / "claude" / "node_modules" / ".bin" / "claude"
TURN = 45.0
HEARTBEAT = 40.0  # the CLI's first heartbeat comes 20 s after it initialised
REQUIRED_ROUTES = ("GET /worker", "PUT /worker", "GET /worker/events/stream", "POST /worker/events/delivery",
                   "POST /worker/events", "POST /worker/internal-events", "POST /worker/heartbeat")


def claude_bin() -> pathlib.Path:
    if not os.access(CLAUDE, os.X_OK):
        raise RuntimeError(f"the stock claude CLI is not installed at {CLAUDE}; run scripts/install-test-deps")
    return CLAUDE


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as api:
        yield api


async def wait_traffic(proxy: Interceptor, predicate: object, timeout: float, what: str) -> Traffic:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        traffic = proxy.traffic()
        if predicate(traffic):  # type: ignore[operator]
            return traffic
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; routes seen: {sorted(traffic.by_route())}")
        await asyncio.sleep(0.1)


async def test_stock_cli_completes_a_turn_on_tethers_v2_routes(server: ServerProcess, owner_token: str,
                                                               fake: FakeAnthropic, tmp_path: pathlib.Path) -> None:
    cli = claude_bin()
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/code/sessions", json={"title": "stock CLI", "bridge": {}}, headers=auth(owner_token))
        cse = r.json()["session"]["id"]
        sid = cse.replace("cse_", "session_")  # the costume the CLI fixture used; either is accepted
        worker = (await client.post(f"/v1/code/sessions/{cse}/bridge", json={}, headers=auth(owner_token))).json()
        home, cwd = tmp_path / "home", tmp_path / "project"
        home.mkdir()
        cwd.mkdir()
        sub = await subscribe(server.ws_url, sid, owner_token)
        with Interceptor(tmp_path / "proxy", server.port) as proxy:
            env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "ANTHROPIC_BASE_URL": fake.url,
                   "ANTHROPIC_API_KEY": "sk-test", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                   "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_SESSION_ACCESS_TOKEN": worker["worker_jwt"],
                   "CLAUDE_CODE_WORKER_EPOCH": str(worker["worker_epoch"]), "CLAUDE_CODE_USE_CCR_V2": "1",
                   **proxy.client_env()}
            argv = [str(cli), "-p", "--sdk-url", f"wss://api.anthropic.com/v1/session_ingress/ws/{sid}",
                    "--session-id", sid, "--input-format", "stream-json", "--output-format", "stream-json",
                    "--verbose", "--replay-user-messages"]
            stderr_path = tmp_path / "claude.stderr"
            stderr_file = await asyncio.to_thread(open, stderr_path, "wb")
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file)
            try:
                prompt = user_message("please TOOLBASH now")
                r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]},
                                      headers=auth(owner_token))
                assert r.status_code == 200, r.text
                ask = await sub.wait_for(lambda f: f.get("type") == "control_request"
                                         and f.get("request", {}).get("subtype") == "can_use_tool", TURN)
                assert ask["request"]["tool_name"] == "Bash"
                await sub.ws.send(json.dumps({"type": "control_response", "response": {
                    "subtype": "success", "request_id": ask["request_id"],
                    "response": {"behavior": "allow", "updatedInput": ask["request"]["input"]}}}))
                result = await sub.wait_for(lambda f: f.get("type") == "result", TURN)
                assert result["subtype"] == "success" and "Tool said" in result["result"], result
                assert (cwd / "from_bash.txt").exists()
                await wait_traffic(proxy, lambda t: any(
                    ex.status is not None for ex in t.by_route().get("POST /worker/heartbeat", [])),
                    HEARTBEAT, "the CLI's first heartbeat")
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                stderr_file.close()
                await sub.close()
        traffic = proxy.traffic()
        events = (await client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000},
                                   headers=auth(owner_token))).json()["data"]

    stderr = await asyncio.to_thread(stderr_path.read_text, errors="replace")
    routes = traffic.by_route()
    print("stock CLI → Tether:", {name: sorted({ex.status for ex in exs}, key=str) for name, exs in routes.items()},
          {name: len(exs) for name, exs in routes.items()})
    report = "\n".join(f"{ex.method} {ex.path} → {ex.status} {ex.response_body or ''}" for ex in traffic.exchanges)
    # 1. nothing tried to leave the machine, everything reached Tether, nothing was refused
    assert traffic.refused == [], traffic.refused
    for name in REQUIRED_ROUTES:
        assert name in routes, f"the CLI never called {name}:\n{report}\n{stderr[-2000:]}"
    bad = [ex for ex in traffic.exchanges if (ex.status is None and ex.route != "/worker/events/stream")
           or (ex.status is not None and ex.status >= 400)]
    assert not bad, f"requests Tether answered with an error (or not at all):\n{report}"
    stream_ids = {ex.id for ex in routes["GET /worker/events/stream"]}
    assert all(err["id"] in stream_ids for err in traffic.errors), traffic.errors  # only the stream, at exit
    assert all(ex.headers.get("authorization") == f"Bearer {worker['worker_jwt']}" for ex in traffic.exchanges)
    assert all(ex.path.startswith(f"/v1/session_ingress/ws/{sid}/worker") for ex in traffic.exchanges)

    # 2. worker state: initialised idle, then running and idle again; epoch on every write
    puts = [ex.body for ex in routes["PUT /worker"]]
    assert puts[0]["worker_status"] == "idle" and puts[0]["worker_epoch"] == worker["worker_epoch"]
    statuses = [p["worker_status"] for p in puts if "worker_status" in p]
    assert "running" in statuses and statuses[-1] in ("idle", "running")
    writes = [ex for ex in traffic.exchanges if ex.method in ("PUT", "POST")]
    assert all(ex.body.get("worker_epoch") == worker["worker_epoch"] for ex in writes)

    # 3. SSE delivery and the acks: received by event_id, processing/processed by payload uuid
    acks = [(u["event_id"], u["status"]) for ex in routes["POST /worker/events/delivery"] for u in ex.body["updates"]]
    assert (prompt["uuid"], "processing") in acks and (prompt["uuid"], "processed") in acks, acks
    assert sum(1 for _, status in acks if status == "received") >= 2, acks  # the prompt and the answer

    # 4. its output reached the log and the subscriber: init, the tool call, the answer, the result
    posted = [e["payload"] for ex in routes["POST /worker/events"] for e in ex.body["events"]]
    kinds = [p["type"] for p in posted]
    for kind in ("system", "assistant", "control_request", "user", "result"):
        assert kind in kinds, kinds
    stored_types = [e.get("type", e.get("payload", {}).get("type")) for e in events]
    assert stored_types.count("result") == 1 and "assistant" in stored_types
    internal = [e for ex in routes["POST /worker/internal-events"] for e in ex.body["events"]]
    assert internal and all(isinstance(e["payload"].get("type"), str) for e in internal)
    heartbeat = routes["POST /worker/heartbeat"][0].body
    assert heartbeat == {"session_id": sid, "worker_epoch": worker["worker_epoch"]}
