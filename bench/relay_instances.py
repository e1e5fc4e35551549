"""``bench/relay.py --instances 1,2,4``: the relay rows that matter for scale-out, per instance count.

For each count N this starts N ``tether server`` processes on one fresh PostgreSQL database
(created for the count, dropped after it) and one Redis (a key prefix of the count's own,
deleted after it), and beside them, first, the SQLite single-instance default as the baseline.
Writers and subscribers are spread over the instances so that, with N > 1, no subscriber sits on
its writer's instance: every frame it gets crossed the Redis bus (docs/protocol.md §4.4). Measured
per count (the client side is this one process, as in the default run):

- closed loop: a worker POSTs one ``assistant`` event, time until all 10 subscribers of that
  session have it (p50 / p99 of every subscriber's receipt);
- durable fan-out: 1 session × 10 subscribers, one poster, ``plan.batch`` events per POST:
  events/s stored and frames/s delivered;
- 100 sessions × 1 writer, 1 event per POST (each session's subscriber on another instance):
  POSTs/s and frames/s;
- CPU over each throughput window, as a share of one core (``/proc/<pid>/stat`` utime + stime):
  each instance, PostgreSQL (the postmaster and its backends), Redis, and this client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.table import Table
from sqlalchemy.engine import make_url
from tests.support.server import ServerProcess

from bench.relay import (
    Deliveries,
    Lanes,
    Plan,
    Subscribers,
    Worker,
    assistant_event,
    gather_limited,
    percentile,
    quiet_gc,
    setup,
)

MAX_INSTANCES = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVICES_HINT = ("start the test services and export their URLs: "
                 "eval \"$(scripts/services start | sed 's/^/export /')\"")


class SetupError(Exception):
    """The run cannot start (no services, unreachable services): a message for the user."""


def parse_counts(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]`` (in the order given, once each)."""
    counts: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= MAX_INSTANCES:
            raise ValueError(f"instance counts are whole numbers from 1 to {MAX_INSTANCES}, not {part!r}")
        if int(part) not in counts:
            counts.append(int(part))
    if not counts:
        raise ValueError("give at least one instance count, e.g. --instances 1,2,4")
    return counts


# ---- the services -------------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    database_url: str  # any database of the server: the per-count databases are created through it
    redis_url: str

    @classmethod
    def resolve(cls, database_url: str | None, redis_url: str | None) -> Services:
        database_url = database_url or os.environ.get("TETHER_TEST_POSTGRES_URL")
        redis_url = redis_url or os.environ.get("TETHER_TEST_REDIS_URL")
        missing = [flag for flag, value in (("--database-url", database_url), ("--redis-url", redis_url))
                   if not value]
        if missing:
            raise SetupError(f"--instances needs PostgreSQL and Redis: pass {' and '.join(missing)}, or "
                             f"{SERVICES_HINT}")
        assert database_url and redis_url
        if not make_url(database_url).drivername.startswith("postgresql"):
            raise SetupError(f"--database-url must be a postgresql:// URL, not {database_url!r}")
        return cls(database_url, redis_url)

    def asyncpg_dsn(self, database: str | None = None) -> str:
        url = make_url(self.database_url).set(drivername="postgresql")
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)

    def server_url(self, database: str) -> str:
        url = make_url(self.database_url).set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False)

    async def local_pids(self) -> tuple[int | None, int | None]:
        """The PostgreSQL postmaster's and Redis's process ids when they run on this machine (for
        their CPU), else None; fails with a clear message when either does not answer."""
        try:
            conn = await asyncpg.connect(self.asyncpg_dsn(), timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise SetupError(f"cannot reach PostgreSQL at {self.database_url}: {exc}; {SERVICES_HINT}") from exc
        try:  # (the backend's parent, read while the backend lives)
            postmaster = parent_pid(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await conn.close()
        redis = Redis.from_url(self.redis_url)
        try:
            redis_pid = (await redis.info("server"))["process_id"]
        except (RedisError, OSError) as exc:
            raise SetupError(f"cannot reach Redis at {self.redis_url}: {exc}; {SERVICES_HINT}") from exc
        finally:
            await redis.aclose()
        return (postmaster if postmaster and command_of(postmaster).startswith("postgres") else None,
                redis_pid if command_of(redis_pid).startswith("redis") else None)

    @contextlib.asynccontextmanager
    async def fresh_database(self) -> AsyncIterator[str]:
        """A new, empty database for one instance count (its server URL); dropped afterwards."""
        name = f"tether_bench_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.asyncpg_dsn(), timeout=10)
        try:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.PostgresError as exc:
                raise SetupError(f"cannot create a database for the run ({exc}): the --database-url role "
                                 "needs CREATEDB") from exc
            yield self.server_url(name)
        finally:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()

    async def forget_prefix(self, prefix: str) -> None:
        """Delete the keys a count's instances left in Redis (the bus stream, rate-limit buckets)."""
        redis = Redis.from_url(self.redis_url)
        try:
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()


# ---- CPU shares from /proc ----------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state is [0], ppid [1], utime [11])."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def parent_pid(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def command_of(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def tree_cpu_ticks(roots: Sequence[int]) -> dict[int, int]:
    """Per root process: its own CPU ticks, its reaped children's (cutime + cstime) and its live
    children's; a PostgreSQL backend that ends inside a window moves from the last to the second,
    so a difference of two readings counts it once."""
    totals: dict[int, int] = {}
    for root in roots:
        fields = _stat(root)
        totals[root] = sum(int(v) for v in fields[11:15]) if fields else 0
    wanted = set(roots)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and int(fields[1]) in wanted:
            totals[int(fields[1])] += int(fields[11]) + int(fields[12])
    return totals


@dataclass
class CpuShares:
    """Over one window, each as a share of one core."""

    instances: list[float]
    postgres: float | None
    redis: float | None
    client: float


class Meter:
    def __init__(self, instances: Sequence[int], postgres: int | None, redis: int | None) -> None:
        self.instances = list(instances)
        self.postgres, self.redis = postgres, redis
        self.roots = [*self.instances, *(pid for pid in (postgres, redis) if pid is not None)]
        self.wall = time.perf_counter()
        self.ticks = tree_cpu_ticks(self.roots)
        self.client = time.process_time()

    def read(self) -> CpuShares:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        ticks = tree_cpu_ticks(self.roots)

        def share(pid: int | None) -> float | None:
            return None if pid is None else (ticks[pid] - self.ticks[pid]) / CLK_TCK / wall

        return CpuShares([share(pid) or 0.0 for pid in self.instances], share(self.postgres), share(self.redis),
                         (time.process_time() - self.client) / wall)


# ---- one instance count -------------------------------------------------------------------


@dataclass
class Cluster:
    """N running instances, the run's fixture, and where the services' processes are."""

    servers: list[ServerProcess]
    lanes: list[Lanes]  # one per instance
    subscriber_token: str
    worker_tokens: dict[str, str]
    sessions: list[str]  # [0]: the latency and fan-out session; [1:]: one per writer of the 100×1 row
    postgres_pid: int | None
    redis_pid: int | None
    compression: bool

    @property
    def n(self) -> int:
        return len(self.servers)

    def writer_of(self, j: int) -> int:
        """The instance session j's worker POSTs to."""
        return j % self.n

    def subscriber_of(self, j: int, k: int) -> int:
        """The instance of session j's subscriber k: never its writer's when there are several."""
        if self.n == 1:
            return 0
        return (self.writer_of(j) + 1 + k % (self.n - 1)) % self.n

    def worker(self, j: int) -> Worker:
        sid = self.sessions[j]
        return Worker(self.lanes[self.writer_of(j)], sid, self.worker_tokens[sid])

    def meter(self) -> Meter:
        pids = [s.proc.pid for s in self.servers if s.proc is not None]
        return Meter(pids, self.postgres_pid, self.redis_pid)

    @contextlib.asynccontextmanager
    async def subscribed(self, sessions: Sequence[int], per_session: int,
                         sink: Deliveries) -> AsyncIterator[list[InstanceSink]]:
        """Subscribers of ``sessions`` spread over the instances, all counted into ``sink``; yields
        what each instance's subscribers received (to say where frames went missing)."""
        subs = [Subscribers(s.ws_url, self.subscriber_token, self.compression) for s in self.servers]
        per_instance = [InstanceSink(sink) for _ in self.servers]

        def opener(j: int, k: int) -> Callable[[], Awaitable[None]]:
            i = self.subscriber_of(j, k)
            per_instance[i].subscribers += 1
            return lambda: subs[i].open(self.sessions[j], per_instance[i])  # type: ignore[arg-type]

        try:
            await gather_limited([opener(j, k) for j in sessions for k in range(per_session)], 32)
            yield per_instance
        finally:
            await asyncio.gather(*(s.close() for s in subs))


class InstanceSink:
    """In front of the shared :class:`Deliveries`: the frames one instance's subscribers counted."""

    def __init__(self, sink: Deliveries) -> None:
        self.sink = sink
        self.subscribers = 0
        self.frames = 0

    def received(self, text: str | bytes, at: float) -> None:
        before = self.sink.frames
        self.sink.received(text, at)
        self.frames += self.sink.frames - before


class DeliveryError(Exception):
    """Subscribers did not get what was posted: which instances' did not."""

    def __init__(self, what: str, per_instance: Sequence[InstanceSink], wanted_each: int) -> None:
        short = ", ".join(f"instance {i}: {s.frames} of {s.subscribers * wanted_each}"
                          for i, s in enumerate(per_instance) if s.frames < s.subscribers * wanted_each)
        super().__init__(f"{what}: frames missing after 30 s ({short})")


@dataclass
class CountResult:
    label: str
    instances: int
    p50_ms: float
    p99_ms: float
    fan_events_s: float
    fan_frames_s: float
    fan_cpu: CpuShares
    many_posts_s: float
    many_frames_s: float
    many_cpu: CpuShares
    missing: int


async def measure_count(cluster: Cluster, plan: Plan, label: str, log: Callable[[str], None]) -> CountResult:
    log(f"{label}: closed-loop latency, 1 session × {plan.subscribers} subscribers")
    with quiet_gc():
        p50, p99 = await closed_loop(cluster, plan)
    log(f"{label}: durable fan-out, 1 session × {plan.subscribers}, {plan.batch} events/POST")
    with quiet_gc():
        fan_events, fan_frames, fan_missing, fan_cpu = await sustained(cluster, plan, [0], plan.subscribers,
                                                                       plan.batch)
    many = list(range(1, len(cluster.sessions)))
    log(f"{label}: {len(many)} sessions × 1 writer, 1 event/POST")
    with quiet_gc():
        many_events, many_frames, many_missing, many_cpu = await sustained(cluster, plan, many, 1, 1)
    return CountResult(label, cluster.n, p50, p99, fan_events, fan_frames, fan_cpu, many_events, many_frames,
                       many_cpu, fan_missing + many_missing)


async def closed_loop(cluster: Cluster, plan: Plan) -> tuple[float, float]:
    sink = Deliveries()
    sink.track = True
    sink.fanout = plan.subscribers
    worker = cluster.worker(0)
    loop = asyncio.get_running_loop()
    posted = 0

    async def one(record: bool) -> None:
        nonlocal posted
        event = assistant_event()
        done = loop.create_future()
        sink.waiters[event["uuid"]] = done
        if record:
            sink.sent_at[event["uuid"]] = time.perf_counter()
        await worker.post([event])
        posted += 1
        async with asyncio.timeout(30):
            await done

    async with cluster.subscribed([0], plan.subscribers, sink) as per_instance:
        try:
            for _ in range(20):  # warm-up: waited for, not measured
                await one(False)
            sink.latencies.clear()
            for _ in range(plan.latency_events):
                await one(True)
        except TimeoutError:
            raise DeliveryError(f"closed loop, event {posted}", per_instance, posted) from None
    return percentile(sink.latencies, 50) * 1e3, percentile(sink.latencies, 99) * 1e3


async def sustained(cluster: Cluster, plan: Plan, sessions: Sequence[int], subs_per_session: int,
                    batch: int) -> tuple[float, float, int, CpuShares]:
    """One closed-loop poster per session for plan.duration_s: events/s stored, frames/s delivered,
    frames missing after a 30 s drain, and the CPU shares over posting + draining."""
    sink = Deliveries()
    stored = 0
    async with cluster.subscribed(sessions, subs_per_session, sink) as per_instance:
        # warm up every session (status idle → running happens here, not in the window)
        await asyncio.gather(*(cluster.worker(j).post([assistant_event()]) for j in sessions))
        sink.expect(len(sessions) * subs_per_session)
        try:
            async with asyncio.timeout(30):
                await sink.all_in.wait()
        except TimeoutError:
            raise DeliveryError("warm-up (one event per session)", per_instance, 1) from None
        sink.frames = 0
        sink.all_in.clear()
        sink.expected = float("inf")
        meter = cluster.meter()
        t0 = time.perf_counter()
        stop_at = t0 + plan.duration_s

        async def post_loop(j: int) -> None:
            nonlocal stored
            worker = cluster.worker(j)
            while time.perf_counter() < stop_at:
                await worker.post([assistant_event() for _ in range(batch)])
                stored += batch

        await asyncio.gather(*(post_loop(j) for j in sessions))
        posted_for = time.perf_counter() - t0
        sink.expect(stored * subs_per_session)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await sink.all_in.wait()
        cpu = meter.read()
    delivered_for = max(sink.last_at - t0, 1e-9)
    return stored / posted_for, sink.frames / delivered_for, stored * subs_per_session - sink.frames, cpu


async def run_count(servers: list[ServerProcess], plan: Plan, compression: bool, raw_http: bool,
                    pids: tuple[int | None, int | None], label: str, log: Callable[[str], None]) -> CountResult:
    """Start ``servers`` one after the other (the first migrates an empty database and makes the
    signing key), measure, stop them."""
    started: list[ServerProcess] = []
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
            started.append(server)
        token = await asyncio.to_thread(servers[0].token)
        log(f"{label}: creating {plan.sessions + 1} worker sessions")
        fx = await setup(servers[0], token, dataclasses.replace(plan, idle_sessions=0), raw_http)
        await fx.lanes.aclose()
        await fx.http.aclose()
        lanes = [Lanes(s.url, raw_http) for s in servers]
        cluster = Cluster(servers, lanes, token, fx.worker_tokens, fx.worker_sessions, *pids, compression)
        try:
            return await measure_count(cluster, plan, label, log)
        finally:
            await asyncio.gather(*(lane.aclose() for lane in lanes))
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in started))


@dataclass
class CountFailure:
    """A count whose run failed: the table says so, the run goes on with the next count."""

    label: str
    reason: str
    server_logs: dict[str, str]  # instance → the tail of its log


async def run_instances(counts: Sequence[int], services: Services, plan: Plan, compression: bool,
                        raw_http: bool, data_dir: pathlib.Path,
                        log: Callable[[str], None]) -> list[CountResult | CountFailure]:
    pg_pid, redis_pid = await services.local_pids()
    results: list[CountResult | CountFailure] = []
    log("SQLite × 1 (the default, the baseline): starting")
    sqlite = ServerProcess(data_dir / "sqlite", limits={"rate_per_second": 0}, watch_loop=False)
    results.append(await run_or_fail([sqlite], plan, compression, raw_http, (None, None), "SQLite × 1", log))
    for n in counts:
        label = f"PG+Redis × {n}"
        prefix = f"tether-bench-{uuid.uuid4().hex[:12]}"
        log(f"{label}: a fresh database, Redis prefix {prefix}, starting {n} instance(s)")
        async with services.fresh_database() as database_url:
            servers = [ServerProcess(data_dir / f"pg{n}-{i}", database_url=database_url,
                                     redis_url=services.redis_url, redis_prefix=prefix,
                                     limits={"rate_per_second": 0}, watch_loop=False) for i in range(n)]
            try:
                results.append(await run_or_fail(servers, plan, compression, raw_http, (pg_pid, redis_pid),
                                                 label, log))
            finally:
                await services.forget_prefix(prefix)
    return results


async def run_or_fail(servers: list[ServerProcess], plan: Plan, compression: bool, raw_http: bool,
                      pids: tuple[int | None, int | None], label: str,
                      log: Callable[[str], None]) -> CountResult | CountFailure:
    try:
        return await run_count(servers, plan, compression, raw_http, pids, label, log)
    except (DeliveryError, RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
        log(f"{label}: failed: {exc!r}")
        return CountFailure(label, str(exc) or repr(exc),
                            {f"instance {i}": log_tail(s.log_path) for i, s in enumerate(servers)})


def log_tail(path: pathlib.Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---- the table ----------------------------------------------------------------------------


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.0f}"


def cpu_cells(fan: CpuShares, many: CpuShares) -> tuple[str, str]:
    instances = f"{'+'.join(pct(v) for v in fan.instances)} | {'+'.join(pct(v) for v in many.instances)}"
    others = (f"{pct(fan.postgres)}·{pct(fan.redis)}·{pct(fan.client)} | "
              f"{pct(many.postgres)}·{pct(many.redis)}·{pct(many.client)}")
    return instances, others


def render_instances(results: Sequence[CountResult | CountFailure], plan: Plan, compression: bool, load: float,
                     raw_http: bool) -> Table:
    table = Table(
        title=f"tether across instances: PostgreSQL + Redis, SQLite × 1 as the baseline (loopback, "
              f"{os.cpu_count()} cores, permessage-deflate {'on' if compression else 'off'}, "
              f"POSTs via {'raw HTTP/1.1' if raw_http else 'httpx'})",
        caption=f"latency: worker POST → all {plan.subscribers} subscribers, closed loop; fan-out: 1 session × "
                f"{plan.subscribers}, {plan.batch} events/POST; {plan.sessions}×1: {plan.sessions} sessions, "
                f"1 event/POST each. With several instances no subscriber shares its writer's instance. "
                f"CPU: % of one core over the fan-out | {plan.sessions}×1 windows. "
                f"1-min load average before the run: {load:.2f}")
    for name, justify in (("store × instances", "left"), ("latency p50 / p99", "right"),
                          ("fan-out events/s | frames/s", "right"), (f"{plan.sessions}×1 POST/s | frames/s", "right"),
                          ("instances' CPU %", "right"), ("PG·Redis·client CPU %", "right"),
                          ("missing", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in results:
        if isinstance(r, CountFailure):
            table.add_row(r.label, "[red]failed[/] (below)", "—", "—", "—", "—", "—")
            continue
        instances, others = cpu_cells(r.fan_cpu, r.many_cpu)
        table.add_row(r.label, f"{r.p50_ms:.2f} / {r.p99_ms:.2f} ms",
                      f"{r.fan_events_s:,.0f} | {r.fan_frames_s:,.0f}",
                      f"{r.many_posts_s:,.0f} | {r.many_frames_s:,.0f}", instances, others, str(r.missing))
    return table


def failures_text(results: Sequence[CountResult | CountFailure]) -> str:
    """What went wrong in the failed counts, with the tail of each instance's log (the run's data
    directory is gone when the table prints)."""
    parts = []
    for r in results:
        if isinstance(r, CountFailure):
            parts.append(f"{r.label} failed: {r.reason}")
            parts.extend(f"--- {name} log, last lines:\n{tail}" for name, tail in r.server_logs.items())
    return "\n".join(parts)
