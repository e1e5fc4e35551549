"""Relay benchmark: how close does `tether server` come to a raw WebSocket server?

Run: ``.venv/bin/python bench/relay.py [--quick] [--no-compression] [--raw-http] [--only idle,latency,durable,sse]``
Scale-out: ``… bench/relay.py --instances 1,2,4 [--database-url URL] [--redis-url URL]`` (bench/relay_instances.py)

One run starts a real ``tether server`` process on loopback (SQLite in a temporary
directory, rate limits off) and, for the baseline, a raw ``websockets`` server process
(echo and 1 → N broadcast) that also runs a minimal asyncio HTTP/1.1 SSE server (1 → N,
the same frame bytes as tether's worker stream). The client side runs in this process
(uvloop when available), except the idle sockets, which a child process holds. Measured:

(a) latency: a worker POSTs one ``assistant`` event; time until each of 10 subscribers
    of that session receives it (closed loop, and open loop paced at 1,000 events/s);
(b) sustained durable events/s with single-event and batched POSTs, for 1 session × 10
    subscribers and for many sessions × 1 subscriber;
(c) server RSS per idle subscriber socket;
(d) the CCR v2 worker read stream (SSE, ``GET /v1/code/sessions/{id}/worker/events/stream``):
    latency from a client's prompt POST to its ``client_event`` frame on one reader
    (closed loop), and fan-out to 10 readers of one session with prompts POSTed 50 at a
    time, beside the raw websockets fan-out and the raw SSE server's.

This is a benchmark, not a test: it prints a table and checks targets, and exits 0
whether or not they are met (non-zero only when the run itself fails).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import pathlib
import resource
import ssl
import sys
import tempfile
import time
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.server import ServerProcess  # noqa: E402

from tether.protocol.work_secret import decode_work_secret  # noqa: E402

uvloop: types.ModuleType | None
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
    uvloop = None

HEADER = ("scenario", "metric", "tether", "baseline", "ratio", "target", "ok?")
P99_TARGET_MS = 10.0
P50_RATIO_TARGET = 4.0
FANOUT_RATIO_TARGET = 0.5
RSS_TARGET_KIB = 50.0


@dataclass(frozen=True)
class Plan:
    latency_events: int
    paced_events: int  # p99 over a few seconds: one 10 ms hiccup of a shared VM must not be the p99
    rate: float
    subscribers: int
    duration_s: float
    sessions: int
    batch: int
    single_posters: int
    idle_sockets: int
    idle_sessions: int
    echo_rounds: int
    fanout_events: int
    idle_deadline_s: float
    settle_s: float  # pause before reading RSS
    sse_latency_events: int
    sse_duration_s: float
    sse_baseline_events: int

    @classmethod
    def full(cls) -> Plan:
        return cls(latency_events=2000, paced_events=6000, rate=1000.0, subscribers=10, duration_s=6.0, sessions=100, batch=50,
                   single_posters=8, idle_sockets=5000, idle_sessions=100, echo_rounds=2000,
                   fanout_events=20000, idle_deadline_s=120.0, settle_s=1.5, sse_latency_events=1000,
                   sse_duration_s=4.0, sse_baseline_events=10000)

    @classmethod
    def quick(cls) -> Plan:
        return cls(latency_events=100, paced_events=300, rate=1000.0, subscribers=10, duration_s=1.0, sessions=10, batch=50,
                   single_posters=4, idle_sockets=200, idle_sessions=10, echo_rounds=200,
                   fanout_events=2000, idle_deadline_s=20.0, settle_s=0.5, sse_latency_events=100,
                   sse_duration_s=1.0, sse_baseline_events=2000)


# ---- helpers ------------------------------------------------------------------------------


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No garbage collection in this (measuring) process during a measured window: a gen2
    pass of the bench client took 27 ms in the middle of a paced run, and every frame that
    arrived meanwhile counted it as the server's latency. Collected before and after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def assistant_event(text: str = "The relay benchmark says hello.") -> dict[str, Any]:
    """A stream-json ``assistant`` SDK message with a fresh uuid (~450 bytes as JSON)."""
    return {
        "type": "assistant",
        "uuid": str(uuid.uuid4()),
        "session_id": "bench",
        "parent_tool_use_id": None,
        "message": {
            "id": "msg_01Bench" + uuid.uuid4().hex[:16],
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": text}],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 34, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 1024},
        },
    }


def prompt_event(text: str = "Run the relay benchmark and summarise the table for me.") -> dict[str, Any]:
    """A client's ``user`` prompt with a fresh uuid, as ``POST /v1/sessions/{id}/events`` takes it."""
    return {"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": text}}


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[index]


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU share of the server process and of this (client) process over a window."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.wall = time.perf_counter()
        self.server = cpu_seconds(server_pid)
        self.client = time.process_time()

    def read(self) -> tuple[float, float]:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        return ((cpu_seconds(self.server_pid) - self.server) / wall,
                (time.process_time() - self.client) / wall)


def server_pid(server: ServerProcess) -> int:
    assert server.proc is not None, "the server is not running"
    return server.proc.pid


def ws_kwargs(compression: bool) -> dict[str, Any]:
    return {"ping_interval": None, "max_size": 2**21, "max_queue": None,
            "compression": "deflate" if compression else None, "open_timeout": 30}


# ---- baseline: a raw websockets server in its own process ---------------------------------


async def baseline_server(compression: bool) -> None:
    receivers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        if path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path == "/recv":
            receivers.add(ws)
            try:
                await ws.send("ready")
                await ws.wait_closed()
            finally:
                receivers.discard(ws)
        elif path == "/send":
            async for message in ws:
                broadcast(receivers, message)

    async with serve(handler, "127.0.0.1", 0, ping_interval=None, max_size=2**21,
                     compression="deflate" if compression else None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sse = await asyncio.start_server(sse_baseline_handler(), "127.0.0.1", 0)
        sse_port = sse.sockets[0].getsockname()[1]
        print(f"READY {port} {sse_port}", flush=True)
        await server.serve_forever()


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncache-control: no-cache\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n")


def sse_baseline_handler() -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A minimal HTTP/1.1 SSE server: ``GET /stream`` readers; ``POST /send`` with ``{"events": [...]}``
    writes, per event and reader, the chunk tether's worker stream would (same frame bytes, one
    write each, no flow control: like ``websockets.broadcast``)."""
    readers: set[asyncio.StreamWriter] = set()
    seq = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seq
        try:
            while True:
                lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                if lines[0].split()[1] == "/stream":
                    writer.write(SSE_HEAD + b"d\r\n: connected\n\n\r\n")
                    readers.add(writer)
                    try:
                        await reader.read()  # until the reader goes away
                    finally:
                        readers.discard(writer)
                    return
                created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                for event in orjson.loads(body)["events"]:
                    seq += 1
                    frame = b"event: client_event\nid: %d\ndata: %s\n\n" % (seq, orjson.dumps({
                        "event_id": "evt_" + uuid.uuid4().hex[:26], "sequence_num": seq, "event_type": event["type"],
                        "source": "client", "payload": event, "created_at": created}))
                    chunk = b"%x\r\n%s\r\n" % (len(frame), frame)
                    for w in readers:
                        w.write(chunk)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


@dataclass
class Baseline:
    echo_p50_ms: float = float("nan")
    echo_p99_ms: float = float("nan")
    fanout_events_s: float = float("nan")
    fanout_frames_s: float = float("nan")
    fanout_missing: int = 0
    sse_events_s: float = float("nan")  # raw SSE fan-out, plan.batch events per POST
    sse_frames_s: float = float("nan")
    sse_missing: int = 0

    def best(self, other: Baseline) -> Baseline:
        """Per metric, the better of two runs: a baseline only gets slower from outside noise."""
        fan = self if not other.fanout_events_s > self.fanout_events_s else other
        sse = self if not other.sse_events_s > self.sse_events_s else other
        return Baseline(min(self.echo_p50_ms, other.echo_p50_ms), min(self.echo_p99_ms, other.echo_p99_ms),
                        fan.fanout_events_s, fan.fanout_frames_s, fan.fanout_missing,
                        sse.sse_events_s, sse.sse_frames_s, sse.sse_missing)


async def measure_sse_baseline(out: Baseline, port: int, plan: Plan) -> None:
    """Raw SSE fan-out: one poster, plan.batch prompts per POST, plan.subscribers readers."""
    sink = FrameCount()
    readers = [SseReader(sink.received) for _ in range(plan.subscribers)]
    poster = RawLane("127.0.0.1", port)
    try:
        for r in readers:
            await r.open(f"http://127.0.0.1:{port}", "/stream", {})
        n = plan.sse_baseline_events // plan.batch * plan.batch
        t0 = time.perf_counter()
        for _ in range(n // plan.batch):
            status, _ = await poster.post("/send", orjson.dumps({"events": [prompt_event()
                                                                           for _ in range(plan.batch)]}), {})
            assert status == 200
        await sink.wait_for(n * len(readers), 60)
        elapsed = max(sink.last_at - t0, 1e-9)
        out.sse_events_s = n / elapsed
        out.sse_frames_s = sink.frames / elapsed
        out.sse_missing = n * len(readers) - sink.frames
    finally:
        await poster.aclose()
        for r in readers:
            await r.close()


async def measure_baseline(url: str, plan: Plan, compression: bool, sse_port: int | None = None) -> Baseline:
    out = Baseline()
    kw = ws_kwargs(compression)
    message = orjson.dumps({**assistant_event(), "sequence_num": 1}).decode()
    async with connect(url + "/echo", **kw) as ws:
        for _ in range(min(200, plan.echo_rounds)):
            await ws.send(message)
            await ws.recv()
        rtts = []
        for _ in range(plan.echo_rounds):
            t0 = time.perf_counter()
            await ws.send(message)
            await ws.recv()
            rtts.append(time.perf_counter() - t0)
    out.echo_p50_ms = percentile(rtts, 50) * 1e3
    out.echo_p99_ms = percentile(rtts, 99) * 1e3

    receivers = [await connect(url + "/recv", **kw) for _ in range(plan.subscribers)]
    try:
        for r in receivers:
            assert await r.recv() == "ready"
        n = plan.fanout_events
        last: list[float] = []

        async def count(ws: ClientConnection) -> int:
            got = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    while got < n:
                        await ws.recv()
                        got += 1
            last.append(time.perf_counter())
            return got

        async with connect(url + "/send", **kw) as sender:
            counters = [asyncio.create_task(count(r)) for r in receivers]
            t0 = time.perf_counter()
            for _ in range(n):
                await sender.send(message)
            got = await asyncio.gather(*counters)
        elapsed = max(last) - t0
        out.fanout_events_s = n / elapsed
        out.fanout_frames_s = sum(got) / elapsed
        out.fanout_missing = n * len(receivers) - sum(got)
    finally:
        for r in receivers:
            await r.close()
    if sse_port is not None:
        await measure_sse_baseline(out, sse_port, plan)
    return out


# ---- tether: setup ------------------------------------------------------------------------


@dataclass
class Fixture:
    http: httpx.AsyncClient
    user_token: str
    worker_sessions: list[str]  # session ids with a worker token
    worker_tokens: dict[str, str]
    idle_sessions: list[str]
    lanes: Lanes


def body_of(session_id: str) -> str:
    return session_id.split("_", 1)[1]


async def setup(server: ServerProcess, token: str, plan: Plan, raw_http: bool) -> Fixture:
    http = httpx.AsyncClient(base_url=server.url, timeout=60,
                             limits=httpx.Limits(max_connections=256, max_keepalive_connections=256,
                                                 keepalive_expiry=2.0))  # uvicorn drops idle ones at 5 s
    auth = {"Authorization": f"Bearer {token}"}
    needed = plan.sessions + 1
    r = await http.post("/v1/environments/bridge", headers=auth, json={
        "machine_name": "bench", "directory": "/tmp", "max_sessions": max(100, needed)})
    r.raise_for_status()
    env_id, env_secret = r.json()["environment_id"], r.json()["environment_secret"]
    created = []
    for _ in range(needed):
        r = await http.post("/v1/sessions", headers=auth, json={"environment_id": env_id})
        r.raise_for_status()
        created.append(r.json()["id"])
    tokens: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(tokens) < needed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(tokens)} of {needed} work items arrived")
        r = await http.get(f"/v1/environments/{env_id}/work/poll", headers={"Authorization": f"Bearer {env_secret}"})
        r.raise_for_status()
        item = r.json()
        if item is None:
            continue
        worker_token = decode_work_secret(item["secret"]).session_ingress_token
        sbody = body_of(item["data"]["id"])
        if sbody not in tokens:
            tokens[sbody] = worker_token
            r = await http.post(f"/v1/environments/{env_id}/work/{item['id']}/ack", json={},
                                headers={"Authorization": f"Bearer {worker_token}"})
            r.raise_for_status()
    idle = []
    for _ in range(plan.idle_sessions):
        r = await http.post("/v1/sessions", headers=auth, json={})
        r.raise_for_status()
        idle.append(r.json()["id"])
    sessions = [f"session_{b}" for b in tokens]
    return Fixture(http, token, sessions, {f"session_{b}": t for b, t in tokens.items()}, idle,
                   Lanes(server.url, raw_http))


# ---- tether: subscribers and workers ------------------------------------------------------


class Deliveries:
    """What subscribers received: counts, last receipt time, and per-event latencies."""

    def __init__(self) -> None:
        self.frames = 0
        self.last_at = 0.0
        self.expected: float = float("inf")
        self.all_in = asyncio.Event()
        self.sent_at: dict[str, float] = {}
        self.pending: dict[str, int] = {}
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self.latencies: list[float] = []
        self.track = False
        self.fanout = 1

    def expect(self, total: float) -> None:
        self.expected = total
        if self.frames >= total:
            self.all_in.set()

    def received(self, text: str | bytes, at: float) -> None:
        frame = orjson.loads(text)
        if frame.get("type") != "assistant":
            return
        self.frames += 1
        self.last_at = at
        if self.frames >= self.expected:
            self.all_in.set()
        if self.track:
            key = frame.get("uuid")
            sent = self.sent_at.get(key)
            if sent is not None:
                self.latencies.append(at - sent)
            left = self.pending[key] = self.pending.get(key, self.fanout) - 1
            if left <= 0:
                waiter = self.waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)


class Subscribers:
    def __init__(self, base_ws: str, token: str, compression: bool) -> None:
        self.base_ws = base_ws
        self.token = token
        self.compression = compression
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, session_id: str, sink: Deliveries) -> None:
        ws = await connect(f"{self.base_ws}/v1/sessions/ws/{session_id}/subscribe",
                           additional_headers={"Authorization": f"Bearer {self.token}"},
                           **ws_kwargs(self.compression))
        # The keep_alive answer comes after the server subscribed this socket to the session.
        await ws.send('{"type":"keep_alive"}')
        async with asyncio.timeout(10):
            while orjson.loads(await ws.recv()).get("type") != "keep_alive":
                pass
        self.sockets.append(ws)
        self.tasks.append(asyncio.create_task(self._read(ws, sink)))

    @staticmethod
    async def _read(ws: ClientConnection, sink: Deliveries) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                sink.received(message, time.perf_counter())

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        self.sockets.clear()
        self.tasks.clear()


class HttpxLane:
    """One httpx client with one keep-alive connection."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=300, verify=ssl_context, limits=httpx.Limits(
            max_connections=1, keepalive_expiry=2.0))  # uvicorn drops idle connections at 5 s

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        r = await self.client.post(path, content=body, headers=headers)
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self.client.aclose()


class RawLane:
    """A minimal HTTP/1.1 keep-alive client (``--raw-http``): far cheaper than httpx per request,
    so that a 2-core machine measures the server rather than the client."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = "".join([f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n",
                        f"Content-Length: {len(body)}\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items()),
                        "\r\n"]).encode()
        for attempt in range(2):  # the server may have closed an idle connection; events are idempotent
            try:
                if self.reader is None or self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.write(head + body)
                lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                payload = await self.reader.readexactly(int(fields.get("content-length", "0")))
                if fields.get("connection", "").lower() == "close":
                    await self.aclose()
                return int(lines[0].split()[1]), payload
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.aclose()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


Lane = HttpxLane | RawLane


class Lanes:
    """HTTP/1.1 keep-alive clients of one connection each, one per in-flight POST.

    One shared httpx client does not do: its connection pool costs O(connections) per
    request, and with 100 concurrent requests the *client* becomes the bottleneck
    (measured: 74–132 POSTs/s at 50–80 % client CPU, against ~210/s with a client each).
    """

    def __init__(self, base_url: str, raw: bool) -> None:
        self.base_url = base_url
        self.raw = raw
        self.ssl = ssl.create_default_context()  # unused on http://, but costly to build per client
        self.idle: list[Lane] = []
        self.lanes: list[Lane] = []

    @contextlib.asynccontextmanager
    async def lane(self) -> AsyncIterator[Lane]:
        if self.idle:
            lane = self.idle.pop()
        else:
            url = httpx.URL(self.base_url)
            lane = RawLane(url.host, url.port or 80) if self.raw else HttpxLane(self.base_url, self.ssl)
            self.lanes.append(lane)
        try:
            yield lane
        finally:
            self.idle.append(lane)

    async def aclose(self) -> None:
        await asyncio.gather(*(lane.aclose() for lane in self.lanes))
        self.lanes.clear()
        self.idle.clear()


class Worker:
    def __init__(self, lanes: Lanes, session_id: str, token: str) -> None:
        self.lanes = lanes
        self.path = f"/v1/session_ingress/session/{session_id}/events"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def post(self, events: list[dict[str, Any]]) -> None:
        async with self.lanes.lane() as http:
            status, body = await http.post(self.path, orjson.dumps({"events": events}), self.headers)
        if status != 200:
            raise RuntimeError(f"POST events answered {status}: {body[:300]!r}")


# ---- (a) latency --------------------------------------------------------------------------


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    achieved_rate: float
    server_cpu: float
    client_cpu: float


async def measure_latency(fx: Fixture, server: ServerProcess, plan: Plan, compression: bool,
                          session_id: str, paced: bool) -> Latency:
    sink = Deliveries()
    sink.track = True
    sink.fanout = plan.subscribers
    subs = Subscribers(server.ws_url, fx.user_token, compression)
    worker = Worker(fx.lanes, session_id, fx.worker_tokens[session_id])
    loop = asyncio.get_running_loop()

    async def one(record: bool) -> None:
        event = assistant_event()
        key = event["uuid"]
        done = loop.create_future()
        sink.waiters[key] = done
        if record:  # warm-up events are waited for, not measured
            sink.sent_at[key] = time.perf_counter()
        await worker.post([event])
        async with asyncio.timeout(300):  # an overloaded server drains its backlog slowly
            await done

    try:
        for _ in range(plan.subscribers):
            await subs.open(session_id, sink)
        for _ in range(20):
            await one(False)
        if paced:  # open the connections the paced run will use
            await asyncio.gather(*(one(False) for _ in range(32)))
        sink.latencies.clear()
        meter = CpuMeter(server_pid(server))
        events = plan.paced_events if paced else plan.latency_events
        t0 = time.perf_counter()
        if paced:
            tasks = []
            for i in range(events):
                delay = t0 + i / plan.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(True)))
            await asyncio.gather(*tasks)
        else:
            for _ in range(events):
                await one(True)
        elapsed = time.perf_counter() - t0
        server_cpu, client_cpu = meter.read()
    finally:
        await subs.close()
    lat = sink.latencies
    return Latency(percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3, events / elapsed,
                   server_cpu, client_cpu)


# ---- (b) sustained durable events/s -------------------------------------------------------


@dataclass
class Throughput:
    stored_s: float
    frames_s: float
    missing: int
    server_cpu: float
    client_cpu: float
    posts_s: float


async def measure_throughput(fx: Fixture, server: ServerProcess, plan: Plan, compression: bool,
                             sessions: Sequence[str], subs_per_session: int, posters_per_session: int,
                             batch: int) -> Throughput:
    sink = Deliveries()
    subs = Subscribers(server.ws_url, fx.user_token, compression)
    stored = {sid: 0 for sid in sessions}
    posts = 0
    try:
        await gather_limited([functools.partial(subs.open, sid, sink)
                              for sid in sessions for _ in range(subs_per_session)], 32)
        # warm up every session (status idle → running happens here, not in the window)
        await asyncio.gather(*(Worker(fx.lanes, sid, fx.worker_tokens[sid]).post([assistant_event()])
                               for sid in sessions))
        sink.expect(len(sessions) * subs_per_session)
        async with asyncio.timeout(30):
            await sink.all_in.wait()
        sink.frames = 0
        sink.all_in.clear()
        sink.expected = float("inf")

        meter = CpuMeter(server_pid(server))
        t0 = time.perf_counter()
        stop_at = t0 + plan.duration_s

        async def post_loop(sid: str) -> None:
            nonlocal posts
            worker = Worker(fx.lanes, sid, fx.worker_tokens[sid])
            while time.perf_counter() < stop_at:
                await worker.post([assistant_event() for _ in range(batch)])
                stored[sid] += batch
                posts += 1

        await asyncio.gather(*(post_loop(sid) for sid in sessions for _ in range(posters_per_session)))
        posted_for = time.perf_counter() - t0
        total = sum(stored.values())
        sink.expect(total * subs_per_session)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await sink.all_in.wait()
        server_cpu, client_cpu = meter.read()
    finally:
        await subs.close()
    delivered_for = max(sink.last_at - t0, 1e-9)
    return Throughput(total / posted_for, sink.frames / delivered_for, total * subs_per_session - sink.frames,
                      server_cpu, client_cpu, posts / posted_for)


async def gather_limited(factories: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories))


# ---- (d) the CCR v2 worker read stream (SSE) ----------------------------------------------

CLIENT_EVENT = b"event: client_event\n"


class SseReader:
    """One SSE stream over a raw HTTP/1.1 connection, parsed minimally so that client CPU does not
    dominate (no httpx, no httpx-sse): chunked transfer decoding, then frames split on blank lines
    (both servers end lines with ``\\n``). ``on_frames(frames, at)`` gets the complete frames of each
    read, comments (``: connected``, ``:keepalive``) included."""

    def __init__(self, on_frames: Callable[[list[bytes], float], None]) -> None:
        self.on_frames = on_frames
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        url = httpx.URL(base_url)
        reader, self.writer = await asyncio.open_connection(url.host, url.port or 80)
        self.writer.write("".join([f"GET {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n",
                                   "Accept: text/event-stream\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items()),
                                   "\r\n"]).encode())
        async with asyncio.timeout(30):
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {await reader.read(300)!r}")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        # Subscribed already: the server subscribes before it sends the response head.
        self.task = asyncio.create_task(self._read(reader, "chunked" in fields.get("transfer-encoding", "")))

    async def _read(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        raw = b""  # chunked bytes not yet decoded
        text = b""  # decoded bytes not yet split into frames
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 18):
                at = time.perf_counter()
                if chunked:
                    raw += data
                    parts, pos, end = [], 0, False
                    while (eol := raw.find(b"\r\n", pos)) >= 0:
                        size = int(raw[pos:eol], 16)  # no chunk extensions from either server
                        stop = eol + 2 + size
                        if len(raw) < stop + 2:
                            break
                        parts.append(raw[eol + 2:stop])
                        pos = stop + 2
                        if size == 0:
                            end = True
                            break
                    raw = raw[pos:]
                    text += b"".join(parts)
                else:
                    text += data
                    end = False
                if b"\n\n" in text:
                    frames = text.split(b"\n\n")
                    text = frames.pop()
                    self.on_frames(frames, at)
                if end:
                    return

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


class FrameCount:
    """``client_event`` frames received by all readers, and when the last one arrived."""

    def __init__(self) -> None:
        self.frames = 0
        self.last_at = 0.0
        self.expected: float = float("inf")
        self.all_in = asyncio.Event()

    def received(self, frames: list[bytes], at: float) -> None:
        n = sum(1 for f in frames if f.startswith(CLIENT_EVENT))
        if n:
            self.frames += n
            self.last_at = at
            if self.frames >= self.expected:
                self.all_in.set()

    async def wait_for(self, total: int, timeout: float) -> None:
        self.expected = total
        if self.frames < total:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.all_in.wait()

    def reset(self) -> None:
        self.frames, self.expected = 0, float("inf")
        self.all_in.clear()


class Prompter(Worker):
    """A client posting prompts: ``POST /v1/sessions/{id}/events`` with the personal token."""

    def __init__(self, lanes: Lanes, session_id: str, user_token: str) -> None:
        super().__init__(lanes, session_id, user_token)
        self.path = f"/v1/sessions/{session_id}/events"


async def code_session(fx: Fixture) -> tuple[str, str]:
    """A fresh code session (no backlog for new streams) and a worker JWT for its stream."""
    auth = {"Authorization": f"Bearer {fx.user_token}"}
    r = await fx.http.post("/v1/code/sessions", headers=auth, json={"title": "bench", "bridge": {}})
    r.raise_for_status()
    session_id = r.json()["session"]["id"]
    r = await fx.http.post(f"/v1/code/sessions/{session_id}/bridge", headers=auth, json={})
    r.raise_for_status()
    return session_id, r.json()["worker_jwt"]


async def open_streams(server: ServerProcess, session_id: str, jwt: str, count: int,
                       on_frames: Callable[[list[bytes], float], None]) -> list[SseReader]:
    readers = [SseReader(on_frames) for _ in range(count)]
    for r in readers:
        await r.open(server.url, f"/v1/code/sessions/{session_id}/worker/events/stream",
                     {"Authorization": f"Bearer {jwt}"})
    return readers


async def measure_sse_latency(fx: Fixture, server: ServerProcess, plan: Plan) -> Latency:
    """Closed loop: POST one prompt, wait for its ``client_event`` on one reader."""
    session_id, jwt = await code_session(fx)
    prompter = Prompter(fx.lanes, session_id, fx.user_token)
    loop = asyncio.get_running_loop()
    waiting: dict[bytes, tuple[float, asyncio.Future[None]]] = {}
    latencies: list[float] = []

    def received(frames: list[bytes], at: float) -> None:
        for f in frames:
            if f.startswith(CLIENT_EVENT):
                i = f.find(b'"uuid":"') + 8  # the payload's (the only uuid key of a frame)
                sent, done = waiting.pop(f[i:i + 36], (0.0, None))
                if done is not None:
                    latencies.append(at - sent)
                    done.set_result(None)

    async def one() -> None:
        event = prompt_event()
        done = loop.create_future()
        waiting[event["uuid"].encode()] = (time.perf_counter(), done)
        await prompter.post([event])
        async with asyncio.timeout(60):
            await done

    readers = await open_streams(server, session_id, jwt, 1, received)
    try:
        for _ in range(20):
            await one()
        latencies.clear()
        meter = CpuMeter(server_pid(server))
        t0 = time.perf_counter()
        for _ in range(plan.sse_latency_events):
            await one()
        elapsed = time.perf_counter() - t0
        server_cpu, client_cpu = meter.read()
    finally:
        for r in readers:
            await r.close()
    return Latency(percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3,
                   plan.sse_latency_events / elapsed, server_cpu, client_cpu)


async def measure_sse_fanout(fx: Fixture, server: ServerProcess, plan: Plan) -> Throughput:
    """1 session × plan.subscribers readers; one client POSTs plan.batch prompts at a time."""
    session_id, jwt = await code_session(fx)
    prompter = Prompter(fx.lanes, session_id, fx.user_token)
    sink = FrameCount()
    readers = await open_streams(server, session_id, jwt, plan.subscribers, sink.received)
    try:
        await prompter.post([prompt_event() for _ in range(plan.batch)])  # warm up
        await sink.wait_for(plan.batch * len(readers), 30)
        sink.reset()
        meter = CpuMeter(server_pid(server))
        t0 = time.perf_counter()
        stop_at = t0 + plan.sse_duration_s
        total = posts = 0
        while time.perf_counter() < stop_at:
            await prompter.post([prompt_event() for _ in range(plan.batch)])
            total += plan.batch
            posts += 1
        posted_for = time.perf_counter() - t0
        await sink.wait_for(total * len(readers), 30)
        server_cpu, client_cpu = meter.read()
    finally:
        for r in readers:
            await r.close()
    delivered_for = max(sink.last_at - t0, 1e-9)
    return Throughput(total / posted_for, sink.frames / delivered_for, total * len(readers) - sink.frames,
                      server_cpu, client_cpu, posts / posted_for)


# ---- (c) idle subscribers (the sockets live in a child process) ---------------------------


@dataclass
class Idle:
    opened: int
    failed: int
    open_s: float
    per_socket_kib: float
    rss_before_mib: float
    rss_after_mib: float


async def idle_client() -> None:
    """Child: open idle subscriber sockets as told on stdin; report on stdout."""
    raise_nofile()
    cfg = json.loads(sys.stdin.readline())
    loop = asyncio.get_running_loop()
    socks: list[ClientConnection] = []
    failures: list[str] = []
    kw = ws_kwargs(cfg["compression"])
    headers = {"Authorization": f"Bearer {cfg['token']}"}
    sessions = cfg["sessions"]

    async def open_many(count: int, deadline: float) -> None:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                if time.monotonic() > deadline:
                    return
                sid = sessions[i % len(sessions)]
                try:
                    socks.append(await connect(f"{cfg['url']}/v1/sessions/ws/{sid}/subscribe",
                                               additional_headers=headers, **kw))
                except Exception as exc:
                    failures.append(repr(exc))

        await asyncio.gather(*(one(len(socks) + i) for i in range(count)))

    await open_many(cfg["warm"], time.monotonic() + 60)
    print(f"warm {len(socks)} {len(failures)}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    warm = len(socks)
    t0 = time.perf_counter()
    await open_many(cfg["count"], time.monotonic() + cfg["deadline"])
    print(f"done {len(socks) - warm} {len(failures)} {time.perf_counter() - t0:.3f}", flush=True)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    for ws in socks:
        ws.transport.abort()


async def server_gauge(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"tether_{name} "):
            return float(line.split()[1])
    return 0.0


async def wait_gauge(http: httpx.AsyncClient, name: str, want: Callable[[float], bool], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = await server_gauge(http, name)
        if want(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def measure_idle(fx: Fixture, server: ServerProcess, plan: Plan, compression: bool) -> Idle:
    assert server.proc is not None
    pid = server.proc.pid
    warm = min(100, max(10, plan.idle_sockets // 20))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--idle-client", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(json.dumps({
            "url": server.ws_url, "token": fx.user_token, "sessions": fx.idle_sessions, "warm": warm,
            "count": plan.idle_sockets, "deadline": plan.idle_deadline_s, "compression": compression,
        }).encode() + b"\n")
        await child.stdin.drain()
        line = (await child.stdout.readline()).decode().split()
        if not line or line[0] != "warm":
            raise RuntimeError(f"idle client failed to start: {line}")
        base = await server_gauge(fx.http, "subscribers")
        await asyncio.sleep(plan.settle_s)
        before = rss_kib(pid)
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        line = (await child.stdout.readline()).decode().split()
        if not line or line[0] != "done":
            raise RuntimeError(f"idle client failed: {line}")
        opened, failed, open_s = int(line[1]), int(line[2]), float(line[3])
        await wait_gauge(fx.http, "subscribers", lambda v: v >= base + opened, 30)
        await asyncio.sleep(plan.settle_s)
        after = rss_kib(pid)
        child.stdin.write(b"close\n")
        await child.stdin.drain()
        await asyncio.wait_for(child.wait(), 60)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    await wait_gauge(fx.http, "subscribers", lambda v: v <= 0, 60)
    return Idle(opened, failed, open_s, (after - before) / max(opened, 1), before / 1024, after / 1024)


# ---- the run ------------------------------------------------------------------------------


@dataclass
class Results:
    baseline: Baseline = field(default_factory=Baseline)
    closed: Latency | None = None
    paced: Latency | None = None
    fan_single: Throughput | None = None
    fan_batch: Throughput | None = None
    many_single: Throughput | None = None
    many_batch: Throughput | None = None
    idle: Idle | None = None
    sse_latency: Latency | None = None
    sse_fanout: Throughput | None = None


async def start_baseline(compression: bool) -> tuple[asyncio.subprocess.Process, str, int]:
    args = [sys.executable, __file__, "--baseline-server"] + ([] if compression else ["--no-compression"])
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = (await proc.stdout.readline()).decode().split()
    if not line or line[0] != "READY":
        raise RuntimeError("baseline server failed to start")
    return proc, f"ws://127.0.0.1:{line[1]}", int(line[2])


SCENARIOS = ("idle", "latency", "durable", "sse")


async def run(plan: Plan, compression: bool, data_dir: pathlib.Path, log: Callable[[str], None],
              only: Sequence[str] = SCENARIOS, raw_http: bool = False) -> Results:
    res = Results()
    sse = "sse" in only
    log("baseline: raw websockets echo and fan-out" + (", raw SSE fan-out" if sse else ""))
    first = await run_baseline(plan, compression, sse)
    log("tether: starting the server")
    # the idle row opens 5,000 sockets: above the server's default connection cap (4,096, 503 past it)
    server = ServerProcess(data_dir, limits={"rate_per_second": 0}, watch_loop=False, max_connections=16384)
    await asyncio.to_thread(server.start)
    try:
        token = await asyncio.to_thread(server.token)
        log(f"tether: creating {plan.sessions + 1} worker sessions and {plan.idle_sessions} idle ones")
        fx = await setup(server, token, plan, raw_http)
        try:
            # idle first: later load would leave freed memory that new sockets reuse
            if "idle" in only:
                log(f"idle: {plan.idle_sockets} subscriber sockets")
                res.idle = await measure_idle(fx, server, plan, compression)
            fan_session = fx.worker_sessions[0]
            many = fx.worker_sessions[1:1 + plan.sessions]
            if "latency" in only:
                log("latency: closed loop")
                with quiet_gc():
                    res.closed = await measure_latency(fx, server, plan, compression, fan_session, paced=False)
                log(f"latency: paced at {plan.rate:.0f} events/s")
                with quiet_gc():
                    res.paced = await measure_latency(fx, server, plan, compression, fan_session, paced=True)
            if "durable" in only:
                log("durable: 1 session × subscribers")
                with quiet_gc():
                    res.fan_single = await measure_throughput(fx, server, plan, compression, [fan_session],
                                                              plan.subscribers, plan.single_posters, 1)
                with quiet_gc():
                    res.fan_batch = await measure_throughput(fx, server, plan, compression, [fan_session],
                                                             plan.subscribers, 1, plan.batch)
                log(f"durable: {len(many)} sessions × 1 subscriber")
                with quiet_gc():
                    res.many_single = await measure_throughput(fx, server, plan, compression, many, 1, 1, 1)
                with quiet_gc():
                    res.many_batch = await measure_throughput(fx, server, plan, compression, many, 1, 1,
                                                              plan.batch)
            if sse:
                log("sse: prompt → client_event latency, closed loop")
                with quiet_gc():
                    res.sse_latency = await measure_sse_latency(fx, server, plan)
                log(f"sse: 1 session × {plan.subscribers} readers, {plan.batch} prompts/POST")
                with quiet_gc():
                    res.sse_fanout = await measure_sse_fanout(fx, server, plan)
        finally:
            await fx.lanes.aclose()
            await fx.http.aclose()
    finally:
        await asyncio.to_thread(server.stop)
    log("baseline again (the best of both runs counts)")
    res.baseline = first.best(await run_baseline(plan, compression, sse))
    return res


async def run_baseline(plan: Plan, compression: bool, sse: bool) -> Baseline:
    proc, url, sse_port = await start_baseline(compression)
    try:
        with quiet_gc():
            return await measure_baseline(url, plan, compression, sse_port if sse else None)
    finally:
        proc.terminate()
        await proc.wait()


# ---- the table ----------------------------------------------------------------------------


def fmt_ms(v: float) -> str:
    return f"{v:.2f} ms"


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}/s"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "—"
    return "[green]yes[/]" if ok else "[red]no[/]"


def render(res: Results, plan: Plan, compression: bool, load: float, raw_http: bool) -> Table:
    b = res.baseline
    table = Table(title=f"tether relay vs raw websockets (loopback, {os.cpu_count()} cores, "
                        f"client permessage-deflate {'on' if compression else 'off'}, "
                        f"POSTs via {'raw HTTP/1.1' if raw_http else 'httpx'})",
                  caption=f"1-min load average before the run: {load:.2f} (the run itself adds ~2; "
                          "other processes on the machine skew every figure)")
    for name in HEADER:
        table.add_column(name, justify="left" if name in ("scenario", "metric", "target") else "right")

    def row(scenario: str, metric: str, tether: str, baseline: str = "—", ratio: float | None = None,
            target: str = "—", ok: bool | None = None, ratio_pct: bool = False) -> None:
        r = "—" if ratio is None else (f"{ratio:.0%}" if ratio_pct else f"{ratio:.2f}×")
        table.add_row(scenario, metric, tether, baseline, r, target, verdict(ok))

    row("raw ws echo", "round trip p50 / p99", "—", f"{fmt_ms(b.echo_p50_ms)} / {fmt_ms(b.echo_p99_ms)}")
    row(f"raw ws fan-out 1→{plan.subscribers}", "events/s | frames/s", "—",
        f"{fmt_rate(b.fanout_events_s)} | {fmt_rate(b.fanout_frames_s)}"
        + (f" | {b.fanout_missing} missing" if b.fanout_missing else ""))
    if res.sse_fanout is not None:
        row(f"raw SSE fan-out 1→{plan.subscribers}, {plan.batch}/POST", "events/s | frames/s", "—",
            f"{fmt_rate(b.sse_events_s)} | {fmt_rate(b.sse_frames_s)}"
            + (f" | {b.sse_missing} missing" if b.sse_missing else ""))
    for name, lat in ((f"latency 1×{plan.subscribers}, closed loop", res.closed),
                      (f"latency 1×{plan.subscribers}, paced {plan.rate:,.0f}/s", res.paced)):
        if lat is None:
            continue
        p50_ratio = lat.p50_ms / b.echo_p50_ms
        row(name, "POST→frame p50", fmt_ms(lat.p50_ms), fmt_ms(b.echo_p50_ms), p50_ratio,
            f"≤ {P50_RATIO_TARGET:.0f}× ws rtt", p50_ratio <= P50_RATIO_TARGET)
        paced = lat is res.paced
        row(name, "POST→frame p99", fmt_ms(lat.p99_ms), fmt_ms(b.echo_p99_ms), lat.p99_ms / b.echo_p99_ms,
            f"≤ {P99_TARGET_MS:.0f} ms" if paced else "—", lat.p99_ms <= P99_TARGET_MS if paced else None)
        row(name, "achieved rate | cpu srv/cli", fmt_rate(lat.achieved_rate),
            tether_cpu(lat.server_cpu, lat.client_cpu))
    for name, tp, fan in ((f"durable 1×{plan.subscribers}, 1 event/POST ×{plan.single_posters} conc.",
                           res.fan_single, True),
                          (f"durable 1×{plan.subscribers}, {plan.batch} events/POST", res.fan_batch, True),
                          (f"durable {plan.sessions}×1, 1 event/POST", res.many_single, False),
                          (f"durable {plan.sessions}×1, {plan.batch} events/POST", res.many_batch, False)):
        if tp is None:
            continue
        row(name, "events/s stored", fmt_rate(tp.stored_s), fmt_rate(b.fanout_events_s),
            tp.stored_s / b.fanout_events_s, ratio_pct=True)
        frames_ratio = tp.frames_s / b.fanout_frames_s
        if fan:
            row(name, "frames/s delivered", fmt_rate(tp.frames_s), fmt_rate(b.fanout_frames_s), frames_ratio,
                f"≥ {FANOUT_RATIO_TARGET:.0%} ws fan-out", frames_ratio >= FANOUT_RATIO_TARGET and tp.missing == 0,
                ratio_pct=True)
        else:  # one subscriber per session: no fan-out to compare with
            row(name, "frames/s delivered", fmt_rate(tp.frames_s))
        row(name, "POSTs/s | cpu srv/cli | missing", f"{fmt_rate(tp.posts_s)}",
            f"{tether_cpu(tp.server_cpu, tp.client_cpu)} | {tp.missing}")
    if res.sse_latency is not None:
        lat, name = res.sse_latency, "SSE latency 1×1, closed loop"
        row(name, "prompt POST→client_event p50", fmt_ms(lat.p50_ms), fmt_ms(b.echo_p50_ms),
            lat.p50_ms / b.echo_p50_ms)
        row(name, "prompt POST→client_event p99", fmt_ms(lat.p99_ms), fmt_ms(b.echo_p99_ms),
            lat.p99_ms / b.echo_p99_ms)
        row(name, "achieved rate | cpu srv/cli", fmt_rate(lat.achieved_rate),
            tether_cpu(lat.server_cpu, lat.client_cpu))
    if res.sse_fanout is not None:
        tp, name = res.sse_fanout, f"SSE fan-out 1×{plan.subscribers}, {plan.batch} prompts/POST"
        row(name, "events/s stored", fmt_rate(tp.stored_s), fmt_rate(b.fanout_events_s),
            tp.stored_s / b.fanout_events_s, ratio_pct=True)
        row(name, "frames/s delivered (vs raw ws)", fmt_rate(tp.frames_s), fmt_rate(b.fanout_frames_s),
            tp.frames_s / b.fanout_frames_s, ratio_pct=True)
        row(name, "frames/s delivered (vs raw SSE)", fmt_rate(tp.frames_s), fmt_rate(b.sse_frames_s),
            tp.frames_s / b.sse_frames_s, ratio_pct=True)
        row(name, "POSTs/s | cpu srv/cli | missing", fmt_rate(tp.posts_s),
            f"{tether_cpu(tp.server_cpu, tp.client_cpu)} | {tp.missing}")
    if res.idle is not None:
        idle = res.idle
        row(f"idle subscribers ({plan.idle_sockets:,} wanted)", "sockets opened | open time",
            f"{idle.opened:,} in {idle.open_s:.1f} s", f"{idle.failed} failed")
        row(f"idle subscribers ({plan.idle_sockets:,} wanted)", "server RSS per socket",
            f"{idle.per_socket_kib:.1f} KiB", f"{idle.rss_before_mib:.0f}→{idle.rss_after_mib:.0f} MiB",
            None, f"≤ {RSS_TARGET_KIB:.0f} KiB", idle.per_socket_kib <= RSS_TARGET_KIB)
    return table


def tether_cpu(server: float, client: float) -> str:
    return f"{server:.0%} / {client:.0%}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a much smaller run (< 30 s) for smoke tests")
    parser.add_argument("--no-compression", action="store_true", help="disable permessage-deflate on clients")
    parser.add_argument("--raw-http", action="store_true",
                        help="POST with a minimal HTTP/1.1 client instead of httpx (cheaper client side)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of {', '.join(SCENARIOS)} (the baseline always runs)")
    parser.add_argument("--instances", metavar="N,N,…",
                        help="scale-out mode: per instance count, N servers on one PostgreSQL database and "
                             "Redis, beside SQLite × 1 (bench/relay_instances.py)")
    parser.add_argument("--database-url", metavar="URL",
                        help="with --instances: a PostgreSQL server to create the run's databases on "
                             "(default: $TETHER_TEST_POSTGRES_URL)")
    parser.add_argument("--redis-url", metavar="URL",
                        help="with --instances: the Redis the instances share (default: $TETHER_TEST_REDIS_URL)")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    compression = not args.no_compression
    raise_nofile()
    if args.baseline_server:
        run_async(baseline_server(compression))
        return 0
    if args.idle_client:
        run_async(idle_client())
        return 0
    if args.instances is not None:
        if args.only is not None:
            parser.error("--only does not apply to --instances (it measures its own rows)")
        return run_instances_mode(parser, args, compression)
    if args.database_url or args.redis_url:
        parser.error("--database-url and --redis-url go with --instances")
    only = [name.strip() for name in (args.only or ",".join(SCENARIOS)).split(",") if name.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    plan = Plan.quick() if args.quick else Plan.full()
    console = Console(width=160, highlight=False)
    started = time.perf_counter()

    def log(message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:6.1f}s  {message}[/]")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        res = run_async(run(plan, compression, pathlib.Path(tmp), log, only, args.raw_http))
    console.print(render(res, plan, compression, load_before, args.raw_http))
    log("done")
    return 0


def run_instances_mode(parser: argparse.ArgumentParser, args: argparse.Namespace, compression: bool) -> int:
    from bench import relay_instances as scale  # (imports this module: only when asked for)

    try:
        counts = scale.parse_counts(args.instances)
        services = scale.Services.resolve(args.database_url, args.redis_url)
    except (ValueError, scale.SetupError) as exc:
        parser.error(str(exc))
    plan = Plan.quick() if args.quick else Plan.full()
    console = Console(width=160, highlight=False)
    started = time.perf_counter()

    def log(message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:6.1f}s  {message}[/]")

    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
            results = run_async(scale.run_instances(counts, services, plan, compression, args.raw_http,
                                                    pathlib.Path(tmp), log))
    except scale.SetupError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    console.print(scale.render_instances(results, plan, compression, load_before, args.raw_http))
    failed = scale.failures_text(results)
    if failed:
        console.print(failed, markup=False)
    log("done")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
