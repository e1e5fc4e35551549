"""CCRClient: initialise, uploaders, retries and stops against a scripted server; heartbeat
liveness against a real one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from tests.support.api import mint_token
from tests.support.fake_http import FakeHTTP, Reply, Request
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import auth

from tether.client.ccr import SESSION_ARCHIVED, CCRClient, CCRConfig, CCRError, CCRInitError, CCRStopped
from tether.protocol.backoff import Backoff

pytestmark = pytest.mark.anyio

FAST = CCRConfig(heartbeat_interval=3600.0, retry_backoff=lambda: Backoff(0.01, 0.05),
                 init_state_wait=2.0, close_grace=2.0)
Handler = Callable[[Request], Awaitable[Reply]]


def ok_handler(overrides: dict[str, Handler] | None = None) -> Handler:
    async def handler(req: Request) -> Reply:
        for suffix, fn in (overrides or {}).items():
            method, _, path = suffix.partition(" ")
            if req.method == method and req.path.endswith(path):
                return await fn(req)
        if req.method == "GET" and req.path.endswith("/worker"):
            return Reply(200, {"worker": {"external_metadata": {}}})
        return Reply(200, {})
    return handler


@contextlib.asynccontextmanager
async def ccr_running(server: FakeHTTP, *, config: CCRConfig = FAST, epoch: int = 3,
                      token: str = "tok") -> AsyncIterator[tuple[CCRClient, asyncio.Task[CCRStopped]]]:
    ccr = CCRClient(f"{server.url}/v1/code/sessions/cse_x", token, epoch, config=config)
    await ccr.initialize()
    task = asyncio.create_task(ccr.run())
    try:
        yield ccr, task
    finally:
        await ccr.close(1.0)
        await task


def assistant(i: int) -> dict[str, Any]:
    return {"type": "assistant", "uuid": f"a{i}", "message": {"role": "assistant", "content": f"m{i}"}}


def posted_events(server: FakeHTTP) -> list[dict[str, Any]]:
    return [e for r in server.matching("POST", "/worker/events") for e in r.json()["events"]]


async def test_initialize_reads_the_previous_state_then_reports_idle() -> None:
    async def get_worker(req: Request) -> Reply:
        return Reply(200, {"worker": {"external_metadata": {"permission_mode": "plan"}}})

    async with FakeHTTP(ok_handler({"GET /worker": get_worker})) as server:
        ccr = CCRClient(f"{server.url}/v1/code/sessions/cse_x", "tok", 3, config=FAST)
        assert await ccr.initialize() == {"permission_mode": "plan"}
        await ccr.close(0)
        get, put = server.requests[:2]
        assert (get.method, get.path, put.method, put.path) == (
            "GET", "/v1/code/sessions/cse_x/worker", "PUT", "/v1/code/sessions/cse_x/worker")
        assert put.json() == {"worker_status": "idle", "worker_epoch": 3,
                              "external_metadata": {"pending_action": None, "task_summary": None}}
        for r in (get, put):
            assert r.headers["authorization"] == "Bearer tok" and r.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("status,attempts", [(400, 1), (503, 3)])
async def test_initialize_fails_when_put_worker_never_succeeds(status: int, attempts: int) -> None:
    async def put(req: Request) -> Reply:
        return Reply(status, {})

    async with FakeHTTP(ok_handler({"PUT /worker": put})) as server:
        cfg = CCRConfig(init_attempts=3, retry_backoff=FAST.retry_backoff, init_state_wait=1.0)
        ccr = CCRClient(f"{server.url}/v1/code/sessions/cse_x", "tok", 1, config=cfg)
        with pytest.raises(CCRInitError) as info:
            await ccr.initialize()
        assert info.value.http_status == status
        assert len(server.matching("PUT", "/worker")) == attempts


async def test_events_go_in_order_in_batches_of_at_most_100() -> None:
    async with FakeHTTP(ok_handler()) as server, ccr_running(server) as (ccr, _):
        for i in range(250):
            ccr.write_event(assistant(i))
        assert await ccr.flush(10)
        events = posted_events(server)
        assert [e["payload"]["uuid"] for e in events] == [f"a{i}" for i in range(250)]
        sizes = [len(r.json()["events"]) for r in server.matching("POST", "/worker/events")]
        assert max(sizes) <= 100 and sum(sizes) == 250
        assert all(r.json()["worker_epoch"] == 3 for r in server.matching("POST", "/worker/events"))


async def test_stream_events_coalesce_and_are_ephemeral() -> None:
    async with FakeHTTP(ok_handler()) as server, ccr_running(server) as (ccr, _):
        for i in range(5):
            ccr.write_event({"type": "stream_event", "event": {"i": i}})
        ccr.write_event(assistant(1))  # flushes the coalescing deltas first: order is kept
        await server.wait_for(lambda rs: len(posted_events(server)) >= 6)
        events = posted_events(server)
        assert [e.get("ephemeral", False) for e in events] == [True] * 5 + [False]
        assert [e["payload"]["type"] for e in events] == ["stream_event"] * 5 + ["assistant"]
        assert all(isinstance(e["payload"]["uuid"], str) for e in events)  # a uuid is added
        # alone, deltas wait for the 100 ms window, then go together
        t0 = time.monotonic()
        for i in range(3):
            ccr.write_event({"type": "stream_event", "event": {"i": i}})
        await server.wait_for(lambda rs: len(posted_events(server)) >= 9)
        assert time.monotonic() - t0 >= 0.09
        assert len(server.matching("POST", "/worker/events")[-1].json()["events"]) == 3


async def test_failures_are_retried_retry_after_is_honoured_and_400_drops() -> None:
    answers = [Reply(500, {}), Reply(429, {}, headers={"Retry-After": "1"}), Reply(200, {}), Reply(400, {})]

    async def events(req: Request) -> Reply:
        return answers.pop(0) if answers else Reply(200, {})

    cfg = CCRConfig(heartbeat_interval=3600.0, retry_backoff=lambda: Backoff(0.01, 5.0), init_state_wait=1.0)
    async with FakeHTTP(ok_handler({"POST /worker/events": events})) as server, \
            ccr_running(server, config=cfg) as (ccr, _):
        ccr.write_event(assistant(1))
        assert await ccr.flush(10)
        ccr.write_event(assistant(2))  # answered 400: dropped, the uploader goes on
        assert await ccr.flush(10)
        ccr.write_event(assistant(3))
        assert await ccr.flush(10)
        posts = server.matching("POST", "/worker/events")
        assert [r.json()["events"][0]["payload"]["uuid"] for r in posts] == ["a1", "a1", "a1", "a2", "a3"]
        assert ccr.stats.dropped_events == 1 and ccr.stats.retries == 2
    times = [r for r in server.requests if r.path.endswith("/worker/events")]
    assert len(times) == 5


async def test_retry_after_sets_the_delay() -> None:
    stamps: list[float] = []

    async def events(req: Request) -> Reply:
        stamps.append(time.monotonic())
        return Reply(429, {}, headers={"Retry-After": "1"}) if len(stamps) == 1 else Reply(200, {})

    cfg = CCRConfig(heartbeat_interval=3600.0, retry_backoff=lambda: Backoff(0.01, 5.0), init_state_wait=1.0)
    async with FakeHTTP(ok_handler({"POST /worker/events": events})) as server, \
            ccr_running(server, config=cfg) as (ccr, _):
        ccr.write_event(assistant(1))
        assert await ccr.flush(10)
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.95


async def test_409_stops_the_client_with_4090() -> None:
    async def conflict(req: Request) -> Reply:
        return Reply(409, {"type": "error", "error": {"type": "epoch_superseded", "message": "newer"}})

    async with FakeHTTP(ok_handler({"POST /worker/events": conflict})) as server, \
            ccr_running(server) as (ccr, task):
        ccr.write_event(assistant(1))
        stopped = await asyncio.wait_for(task, 10)
        assert (stopped.reason, stopped.code) == ("permanent", 4090)
        assert "superseded" in stopped.detail
        with pytest.raises(CCRError):
            ccr.write_event(assistant(2))
        assert len(server.matching("POST", "/worker/events")) == 1  # never retried


async def test_409_already_archived_stops_the_client_as_gone() -> None:
    """A write to a session someone archived: the session is gone (4001, as the v1 socket closes),
    not taken over by a newer worker, and the stop says so in words, not the raw answer."""
    async def archived(req: Request) -> Reply:
        return Reply(409, {"type": "error", "error": {"type": "already_archived", "message": "The session is archived."}})

    async with FakeHTTP(ok_handler({"POST /worker/events": archived})) as server, \
            ccr_running(server) as (ccr, task):
        ccr.write_event(assistant(1))
        stopped = await asyncio.wait_for(task, 10)
        assert (stopped.reason, stopped.code, stopped.detail) == ("permanent", 4001, SESSION_ARCHIVED)
        assert len(server.matching("POST", "/worker/events")) == 1  # never retried


def jwt(exp: float) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256'})}.{part({'exp': exp})}.sig"


@pytest.mark.parametrize("token,requests", [(jwt(time.time() + 3600), 10), (jwt(time.time() - 10), 1)])
async def test_auth_failures_stop_after_ten_or_at_once_when_the_token_expired(token: str, requests: int) -> None:
    async def refused(req: Request) -> Reply:
        return Reply(401, {})

    async with FakeHTTP(ok_handler({"POST /worker/events": refused})) as server, \
            ccr_running(server, token=token) as (ccr, task):
        ccr.write_event(assistant(1))
        stopped = await asyncio.wait_for(task, 10)
        assert (stopped.reason, stopped.code) == ("permanent", 4003)
        assert len(server.matching("POST", "/worker/events")) == requests


async def test_worker_state_uploads_one_at_a_time_and_coalesces() -> None:
    release = asyncio.Event()
    puts: list[dict[str, Any]] = []

    async def put(req: Request) -> Reply:
        puts.append(req.json())
        if len(puts) == 2:  # the first state PUT after the init one: hold it
            await release.wait()
        return Reply(200, {})

    async with FakeHTTP(ok_handler({"PUT /worker": put})) as server, ccr_running(server) as (ccr, _):
        assert not ccr.report_state("idle")  # the init PUT reported idle already
        assert ccr.report_state("running")
        await server.wait_for(lambda rs: len(puts) == 2)
        ccr.report_metadata(external={"model": "m1"})
        ccr.report_state("requires_action", {"tool_name": "Bash", "request_id": "r1"})
        ccr.report_metadata(external={"model": "m2", "pending_action": {"tool": "Bash"}}, internal={"cost": 1})
        assert not ccr.report_state("requires_action", {"tool_name": "Bash", "request_id": "r1"})
        release.set()
        assert await ccr.flush(10)
        assert len(puts) == 3
        assert puts[1] == {"worker_status": "running", "requires_action_details": None, "worker_epoch": 3}
        assert puts[2] == {"worker_status": "requires_action",
                           "requires_action_details": {"tool_name": "Bash", "request_id": "r1"},
                           "external_metadata": {"model": "m2", "pending_action": {"tool": "Bash"}},
                           "internal_metadata": {"cost": 1}, "worker_epoch": 3}
    assert puts[-1] == {"connection_status": "disconnected", "worker_epoch": 3}  # reported on close


async def test_delivery_acks_go_in_batches_of_at_most_64() -> None:
    async with FakeHTTP(ok_handler()) as server, ccr_running(server) as (ccr, _):
        for i in range(150):
            ccr.ack_delivery(f"evt_{i}", "received")
        ccr.ack_delivery("u1", "processing")
        ccr.ack_delivery("u1", "processed")
        assert await ccr.flush(10)
        batches = [r.json()["updates"] for r in server.matching("POST", "/worker/events/delivery")]
        assert max(map(len, batches)) <= 64
        flat = [u for b in batches for u in b]
        assert flat[:2] == [{"event_id": "evt_0", "status": "received"}, {"event_id": "evt_1", "status": "received"}]
        assert flat[-2:] == [{"event_id": "u1", "status": "processing"}, {"event_id": "u1", "status": "processed"}]
        assert len(flat) == 152


async def test_heartbeats_and_internal_events() -> None:
    cfg = CCRConfig(heartbeat_interval=0.05, heartbeat_jitter=0.1, retry_backoff=FAST.retry_backoff,
                    init_state_wait=1.0)
    async with FakeHTTP(ok_handler()) as server, ccr_running(server, config=cfg, epoch=7) as (ccr, _):
        await server.wait_for(lambda rs: len(server.matching("POST", "/worker/heartbeat")) >= 3)
        hb = server.matching("POST", "/worker/heartbeat")[0]
        assert hb.json() == {"session_id": "cse_x", "worker_epoch": 7}
        ccr.write_internal_event({"type": "transcript", "uuid": "t1"}, is_compaction=True, agent_id="sub")
        assert await ccr.flush(10)
        body = server.matching("POST", "/worker/internal-events")[0].json()
        assert body == {"worker_epoch": 7, "events": [
            {"payload": {"type": "transcript", "uuid": "t1"}, "is_compaction": True, "agent_id": "sub"}]}


async def test_a_heartbeat_lapse_marks_the_worker_disconnected_and_a_heartbeat_reconnects_it(
        tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "srv", worker_heartbeat_ttl_s=1.0, limits={"rate_per_second": 0}) as srv:
        owner = await asyncio.to_thread(mint_token, srv.data_dir)
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            sid = (await client.post("/v1/code/sessions", json={"title": "hb", "bridge": {}},
                                     headers=auth(owner))).json()["session"]["id"]
            b = (await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(owner))).json()

            async def connected() -> bool:
                r = await client.get(f"/v1/sessions/{sid}", headers=auth(owner))
                return bool(r.json()["worker"]["connected"])

            ccr = CCRClient(f"{srv.url}/v1/code/sessions/{sid}", b["worker_jwt"], b["worker_epoch"], config=FAST)
            await ccr.initialize()
            task = asyncio.create_task(ccr.run())  # heartbeats every hour: it will lapse
            try:
                assert await connected()
                async with asyncio.timeout(10):  # the TTL (1 s) lapses: a condition wait
                    while True:
                        if not await connected():
                            break
                        await asyncio.sleep(0.1)
                assert await ccr.send_heartbeat()
                assert await connected()
                r = await client.get(f"/v1/code/sessions/{sid}/worker", headers=auth(b["worker_jwt"]))
                assert r.json()["worker"]["worker_status"] == "idle"
            finally:
                await ccr.close(1.0)
                await task


async def test_an_expired_token_waits_for_a_fresh_one_when_its_owner_refreshes_it() -> None:
    """A bridge rotates its workers' tokens: a token that expired while the refresh could not get
    through is retried until the fresh one arrives, instead of ending the session (4003)."""
    fresh = jwt(time.time() + 3600)

    async def events(req: Request) -> Reply:
        return Reply(200, {}) if req.headers.get("authorization") == f"Bearer {fresh}" else Reply(401, {})

    cfg = CCRConfig(heartbeat_interval=3600.0, retry_backoff=lambda: Backoff(0.01, 0.05), init_state_wait=1.0,
                    expired_token_grace_s=600.0)
    async with FakeHTTP(ok_handler({"POST /worker/events": events})) as server, \
            ccr_running(server, config=cfg, token=jwt(time.time() - 10)) as (ccr, task):
        ccr.write_event(assistant(1))
        await eventually(lambda: len(server.matching("POST", "/worker/events")) > 12, message="retries")
        assert not task.done(), "an expired token within the grace does not stop the client"
        ccr.set_token(fresh)
        assert await ccr.flush(10)
        assert posted_events(server)[-1]["payload"]["uuid"] == "a1"
        assert not task.done()


async def test_processed_is_reported_only_after_the_events_before_it_were_stored() -> None:
    """A turn's ``processed`` ack waits for the turn's output: a worker that dies before its last
    event POST got through leaves the prompt unprocessed, so the next worker runs it again."""
    gate = asyncio.Event()
    order: list[str] = []

    async def events(req: Request) -> Reply:
        await gate.wait()
        order.append("events")
        return Reply(200, {})

    async def delivery(req: Request) -> Reply:
        order.extend(f"{u['event_id']}:{u['status']}" for u in req.json()["updates"])
        return Reply(200, {})

    handlers = {"POST /worker/events": events, "POST /worker/events/delivery": delivery}
    async with FakeHTTP(ok_handler(handlers)) as server, ccr_running(server) as (ccr, _):
        ccr.ack_delivery("p1", "processing")
        ccr.write_event({"type": "result", "uuid": "r1", "subtype": "success"})
        ccr.ack_delivery_after_events("p1", "processed")
        await eventually(lambda: "p1:processing" in order, message="the processing ack")
        await eventually(lambda: server.matching("POST", "/worker/events"), message="the event POST")
        assert "p1:processed" not in order, "processed went out before the result was stored"
        gate.set()
        assert await ccr.flush(10)
        assert order == ["p1:processing", "events", "p1:processed"]
        ccr.ack_delivery_after_events("p2", "processed")  # nothing pending: at once
        assert await ccr.flush(10)
        assert order[-1] == "p2:processed"
