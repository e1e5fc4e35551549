"""``CCRClient``: the write side of a CCR v2 worker (docs/protocol.md §3.5, §10, §4.4–§4.5).

Every request goes to ``{session_url}/worker…`` with the worker token and carries the
worker epoch:

* :meth:`CCRClient.initialize` — ``GET /worker`` (the state a previous worker left, waited
  for at most 10 s) then ``PUT /worker`` ``{worker_status: idle, external_metadata:
  {pending_action: null, task_summary: null}}``, up to 10 attempts; raises
  :class:`CCRInitError` when it cannot (the v2 transport closes with 4091);
* heartbeats — ``POST /worker/heartbeat`` every 20 s ± 10 %;
* client events — ``POST /worker/events``, one POST in flight, ≤ 100 events / 10 MiB each,
  ``stream_event``\\ s coalesced for 100 ms and sent ``ephemeral``;
* internal events — ``POST /worker/internal-events``, same rules;
* worker state and metadata — ``PUT /worker``, one in flight + one pending, merged;
  a repeated status is suppressed;
* delivery acks — ``POST /worker/events/delivery`` in batches of ≤ 64.

Failed requests are retried 500 ms → 30 s + ≤ 500 ms (``Retry-After`` of a 429 honoured);
a 409 stops the client (close code 4090), so do 10 consecutive 401/403 (or one with an
expired token; 4003) and 3 consecutive 404 (4001); 400/413/422 drop the request. The
decisions are :mod:`tether.protocol.ccr`'s; this module owns HTTP, timers and tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import orjson

from tether import __version__
from tether.client import acklog
from tether.client.hybrid import boot_clock
from tether.errors import TetherError
from tether.protocol import backoff as backoff_presets
from tether.protocol.backoff import Backoff
from tether.protocol.ccr import (
    ARCHIVED_ERROR,
    MAX_DELIVERY_BATCH,
    MAX_EVENTS_PER_POST,
    MAX_POST_BYTES,
    STOPPING_VERDICTS,
    STREAM_EVENT_WINDOW,
    DeliveryQueue,
    DeliveryStatus,
    RequestHealth,
    Verdict,
    WorkerStateQueue,
    awaiting_fresh_token,
    event_envelope,
    heartbeat_delay,
    session_id_of_url,
    stop_code,
    token_expiry,
)
from tether.protocol.messages import KEEP_ALIVE
from tether.protocol.write_batcher import BatcherFull, WriteBatcher

__all__ = [
    "ANTHROPIC_VERSION",
    "SESSION_ARCHIVED",
    "CCRClient",
    "CCRConfig",
    "CCRError",
    "CCRInitError",
    "CCRStats",
    "CCRStopped",
    "TokenSource",
]

log = logging.getLogger("tether.client.ccr")

ANTHROPIC_VERSION: Final = "2023-06-01"
_ENVELOPE_SLACK: Final = 64 << 10  # room for the {"worker_epoch", "events": [...]} wrapping

TokenSource = Callable[[], str]


class CCRError(TetherError):
    """A write was refused: the client is closing/stopped or its queue is full."""


class CCRInitError(TetherError):
    """``initialize`` failed: ``PUT /worker`` never succeeded (or the client stopped)."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True)
class CCRConfig:
    """Tunables; the defaults are Claude Code's numbers (docs/protocol.md §3.5, §10)."""

    heartbeat_interval: float = 20.0
    heartbeat_jitter: float = 0.1
    request_timeout: float = 10.0
    heartbeat_timeout: float = 5.0
    get_timeout: float = 30.0
    get_attempts: int = 10
    init_attempts: int = 10
    init_state_wait: float = 10.0  # how long initialize waits for GET /worker before its PUT
    stream_window: float = STREAM_EVENT_WINDOW
    max_events: int = MAX_EVENTS_PER_POST
    max_batch_bytes: int = MAX_POST_BYTES - _ENVELOPE_SLACK
    queue_capacity: int = 100_000
    internal_capacity: int = 10_000
    max_delivery_batch: int = MAX_DELIVERY_BATCH
    max_auth_failures: int = 10
    expired_token_grace_s: float = 0.0  # > 0: an expired token waits this long for set_token() instead of stopping
    max_not_found: int = 3
    close_grace: float = 3.0
    ack_barrier: float = 1.0  # an event batch waits at most this long for the delivery acks queued before it
    retry_backoff: Callable[[], Backoff] = backoff_presets.ccr_uploader


SESSION_ARCHIVED: Final = "the session was archived"
"""The stop detail when a write met 409 ``already_archived``: the session ended, nothing failed."""


def _error_type(body: str) -> str | None:
    """``error.type`` of an error answer's JSON body (``{"type":"error","error":{"type":…}}``), if any."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


@dataclass(frozen=True)
class CCRStopped:
    """Why the client stopped: ``closed`` by its owner, or ``permanent`` with the synthetic
    close code (4090 epoch superseded, 4003 unauthorized, 4001 session gone)."""

    reason: str
    code: int | None = None
    detail: str = ""


@dataclass
class CCRStats:
    requests: int = 0
    retries: int = 0
    event_posts: int = 0
    events_posted: int = 0
    ephemeral_posted: int = 0
    dropped_events: int = 0
    internal_posts: int = 0
    state_puts: int = 0
    delivery_posts: int = 0
    deliveries_posted: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # the last 100 event POST sizes
    statuses: dict[str, int] = field(default_factory=dict)  # "METHOD path status" → count

    def record(self, key: str) -> None:
        self.statuses[key] = self.statuses.get(key, 0) + 1


@dataclass(frozen=True)
class _Answer:
    verdict: Verdict
    status: int | None
    retry_after: float | None
    detail: str
    body: Any = None


class CCRClient:
    def __init__(
        self,
        session_url: str,
        token: str | TokenSource,
        epoch: int,
        *,
        config: CCRConfig | None = None,
        clock: Callable[[], float] = boot_clock,
        wall_clock: Callable[[], float] = time.time,
        rnd: random.Random | None = None,
        http: httpx.AsyncClient | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.session_url = session_url.rstrip("/")
        self.session_id = session_id_of_url(self.session_url)
        self.epoch = epoch
        self._token_source: TokenSource = token if callable(token) else functools.partial(str, token)
        self._cfg = cfg = config or CCRConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self._rnd = rnd or random.Random()
        self._http = http
        self._own_http = http is None
        self._extra_headers = dict(extra_headers or {})
        self._health = RequestHealth(cfg.max_auth_failures, cfg.max_not_found)
        self._events = WriteBatcher(cfg.stream_window, cfg.max_events, cfg.queue_capacity, cfg.max_batch_bytes)
        self._internal: deque[tuple[dict[str, Any], int]] = deque()
        self._state = WorkerStateQueue()
        self._deliveries = DeliveryQueue()
        self._wake = {name: asyncio.Event() for name in ("events", "internal", "state", "delivery")}
        self._busy = {name: False for name in self._wake}
        self._retry_now = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closing = asyncio.Event()
        self._finished = asyncio.Event()
        self._progress = asyncio.Event()  # something was sent: flush() re-checks
        self._stop_info: CCRStopped | None = None
        self._heartbeat_busy = False
        self._running = False
        self._in_flight: list[dict[str, Any]] = []  # the event batch being POSTed
        self._acks_added = 0  # delivery acks queued so far …
        self._acks_done = 0  # … and answered (or dropped): the queue is FIFO, so done ≥ n covers the first n
        self._ack_progress = asyncio.Event()
        self._events_added = 0  # events queued so far …
        self._events_done = 0  # … and answered (ok or dropped): FIFO, so done ≥ n covers the first n
        self._after_events: deque[tuple[int, str, DeliveryStatus]] = deque()  # acks waiting for events
        self.restored: dict[str, Any] = {}
        self.stats = CCRStats()
        self._ack_log = acklog.from_env()

    # -- views -------------------------------------------------------------------------

    @property
    def stop_info(self) -> CCRStopped | None:
        return self._stop_info

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight on any uploader."""
        return (not len(self._events) and not self._internal and self._state.idle
                and not len(self._deliveries) and not any(self._busy.values()))

    @property
    def pending_events(self) -> int:
        return len(self._events) + (1 if self._busy["events"] else 0)

    def unsent_events(self) -> list[dict[str, Any]]:
        """Client events not (yet) answered 2xx, oldest first: the batch in flight, then the queue.
        A bridge that replaces this client writes them to the next one (the server deduplicates)."""
        return [*self._in_flight, *self._events.pending()]

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._stopped.wait()
        return self._stopped.is_set()

    def set_token(self, token: str) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._token_source = functools.partial(str, token)
        self._retry_now.set()

    # -- writes (never block) ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._stopped.is_set() or self._closing.is_set():
            raise CCRError("the CCR client is stopped")

    def write_event(self, message: dict[str, Any]) -> None:
        """Queue one client-visible event (``keep_alive`` is dropped: liveness is the heartbeat's)."""
        self._check_open()
        if message.get("type") == KEEP_ALIVE:
            return
        if not isinstance(message.get("uuid"), str) or not message["uuid"]:
            message = {**message, "uuid": str(uuidlib.uuid4())}
        try:
            size = len(orjson.dumps(message))
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise CCRError(f"message is not JSON-serialisable: {exc}") from None
        try:
            self._events.add(message, self._clock(), size)
        except BatcherFull as exc:
            raise CCRError(str(exc)) from None
        self._events_added += 1
        self._wake["events"].set()

    def write_internal_event(self, payload: dict[str, Any], *, is_compaction: bool = False,
                             agent_id: str | None = None) -> None:
        """Queue one transcript row (``POST /worker/internal-events``; not visible to clients)."""
        self._check_open()
        if len(self._internal) >= self._cfg.internal_capacity:
            raise CCRError(f"internal event queue is full ({self._cfg.internal_capacity})")
        if not isinstance(payload.get("type"), str):
            raise CCRError("an internal event needs a string 'type'")
        item: dict[str, Any] = {"payload": {**payload, "uuid": payload.get("uuid") or str(uuidlib.uuid4())}}
        if is_compaction:
            item["is_compaction"] = True
        if agent_id:
            item["agent_id"] = agent_id
        self._internal.append((item, len(orjson.dumps(item))))
        self._wake["internal"].set()

    def report_state(self, status: str, details: Mapping[str, Any] | None = None) -> bool:
        """Queue a ``worker_status`` (False when it repeats the last one reported)."""
        if self._stopped.is_set():
            return False
        queued = self._state.report_state(status, details)
        if queued:
            self._wake["state"].set()
        return queued

    def report_metadata(self, *, external: Mapping[str, Any] | None = None,
                        internal: Mapping[str, Any] | None = None) -> None:
        if self._stopped.is_set():
            return
        self._state.report_metadata(external=external, internal=internal)
        self._wake["state"].set()

    def ack_delivery(self, event_id: str, status: DeliveryStatus) -> None:
        if self._stopped.is_set():
            return
        dropped = self._deliveries.dropped
        if self._deliveries.add(event_id, status):
            self._acks_added += 1
            self._acks_done += self._deliveries.dropped - dropped
            self._wake["delivery"].set()

    def ack_delivery_after_events(self, event_id: str, status: DeliveryStatus) -> None:
        """Queue a delivery ack once every event written before it was answered: a prompt is
        reported ``processed`` only after its turn's output is stored. Sent at once, a worker that
        dies before its last POST got through would leave a processed prompt without its answer,
        and the next worker would not run it again."""
        if self._events_done >= self._events_added:
            self.ack_delivery(event_id, status)
        elif not self._stopped.is_set():
            self._after_events.append((self._events_added, event_id, status))

    def _release_after_events(self) -> None:
        while self._after_events and self._after_events[0][0] <= self._events_done:
            _, event_id, status = self._after_events.popleft()
            self.ack_delivery(event_id, status)

    # -- requests ------------------------------------------------------------------------

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            "User-Agent": f"tether/{__version__}",
            **self._extra_headers,
        }

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient()
        return self._http

    async def _request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
                       params: Mapping[str, str] | None = None) -> _Answer:
        """One request; classifies the answer and stops the client on a stopping verdict."""
        try:
            token = self._token_source()
        except Exception as exc:
            log.error("session %s: the token source failed: %s", self.session_id, exc)
            return _Answer("retry", None, None, "the token source failed")
        content = orjson.dumps(body) if body is not None else None
        headers = self._headers(token)
        if content is None:
            headers.pop("Content-Type")
        status: int | None = None
        retry_after: float | None = None
        data: Any = None
        detail = ""
        self.stats.requests += 1
        try:
            async with asyncio.timeout((timeout or self._cfg.request_timeout) + 1):
                resp = await self._client().request(method, self.session_url + path, content=content,
                                                    headers=headers, params=params,
                                                    timeout=timeout or self._cfg.request_timeout)
            status = resp.status_code
            if resp.is_success:
                with contextlib.suppress(ValueError):
                    data = resp.json() if resp.content else None
            else:
                detail = resp.text[:300]
                raw = resp.headers.get("retry-after")
                if raw:
                    with contextlib.suppress(ValueError):
                        retry_after = max(0.0, float(raw))
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        self.stats.record(f"{method} {path} {status}")
        expired = awaiting = False
        if status in (401, 403):
            exp = token_expiry(token)
            expired = exp is not None and exp < self._wall_clock()
            awaiting = awaiting_fresh_token(token, self._wall_clock(), self._cfg.expired_token_grace_s)
        archived = status == 409 and _error_type(detail) == ARCHIVED_ERROR
        verdict = self._health.observe(status, token_expired=expired, awaiting_token=awaiting,
                                       error_type=ARCHIVED_ERROR if archived else None)
        if verdict != "ok" and not archived:  # someone archiving the session is an ordinary end, not a fault
            log.log(logging.INFO if verdict == "retry" and status is None else logging.WARNING,
                    "session %s: %s %s → %s (%s) %s", self.session_id, method, path, status, verdict, detail)
        if verdict in STOPPING_VERDICTS:
            what = {"superseded": "a newer worker epoch superseded ours",
                    "unauthorized": "the worker token is refused", "gone": "the session is gone"}[verdict]
            why = SESSION_ARCHIVED if archived else f"{what} (HTTP {status}: {detail})"
            self._stop(CCRStopped("permanent", stop_code(verdict), why))
        return _Answer(verdict, status, retry_after, detail, data)

    def _stop(self, info: CCRStopped) -> None:
        if self._stop_info is None:
            self._stop_info = info
            quiet = info.reason == "closed" or info.detail == SESSION_ARCHIVED
            log.log(logging.INFO if quiet else logging.WARNING,
                    "session %s: CCR client stopped: %s", self.session_id, info.detail)
        self._stopped.set()
        for event in self._wake.values():
            event.set()
        self._retry_now.set()

    async def _send(self, method: str, path: str, body: Any, backoff: Backoff,
                    *, timeout: float | None = None) -> _Answer:
        """Send until the answer is final (ok, drop or a stop)."""
        while True:
            answer = await self._request(method, path, body, timeout=timeout)
            if answer.verdict != "retry":
                if answer.verdict == "ok":
                    backoff.success(self._clock())
                return answer
            if self._stopped.is_set():
                return answer
            self.stats.retries += 1
            decision = backoff.failure(self._clock(), self._rnd, answer.retry_after)
            if decision.give_up:
                return _Answer("drop", answer.status, None, "retries exhausted")
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision.delay):
                    await self._retry_now.wait()

    # -- initialize ----------------------------------------------------------------------

    async def fetch_worker_state(self) -> dict[str, Any] | None:
        """``GET /worker`` with up to ``get_attempts`` tries; the ``worker`` object or None."""
        backoff = self._cfg.retry_backoff()
        for attempt in range(1, self._cfg.get_attempts + 1):
            answer = await self._request("GET", "/worker", timeout=self._cfg.get_timeout)
            if answer.verdict == "ok":
                worker = answer.body.get("worker") if isinstance(answer.body, dict) else None
                return worker if isinstance(worker, dict) else {}
            if answer.verdict != "retry" or attempt == self._cfg.get_attempts:
                return None
            decision = backoff.failure(self._clock(), self._rnd, answer.retry_after)
            await asyncio.sleep(decision.delay or 0.0)
        return None

    async def initialize(self) -> dict[str, Any]:
        """Read the previous worker's state, then report ``idle``; returns the restored
        ``external_metadata``. Raises :class:`CCRInitError`."""
        state_task = asyncio.ensure_future(self.fetch_worker_state())
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.init_state_wait):
                    await asyncio.shield(state_task)
            body = {"worker_status": "idle", "worker_epoch": self.epoch,
                    "external_metadata": {"pending_action": None, "task_summary": None}}
            backoff = self._cfg.retry_backoff()
            answer: _Answer | None = None
            for attempt in range(1, self._cfg.init_attempts + 1):
                answer = await self._request("PUT", "/worker", body)
                if answer.verdict != "retry" or self._stopped.is_set():
                    break
                if attempt < self._cfg.init_attempts:
                    decision = backoff.failure(self._clock(), self._rnd, answer.retry_after)
                    await asyncio.sleep(decision.delay or 0.0)
            if answer is None or answer.verdict != "ok":
                status = answer.status if answer is not None else None
                detail = answer.detail if answer is not None else ""
                raise CCRInitError(f"PUT /worker failed (HTTP {status}: {detail})", status)
            self._state.report_state("idle")  # the init PUT reported it: a repeat is suppressed
            self._state.take()
            self._state.succeeded()
            worker = await state_task
        finally:
            if not state_task.done():
                state_task.cancel()
        external = (worker or {}).get("external_metadata")
        self.restored = external if isinstance(external, dict) else {}
        log.info("session %s: CCR client initialised (epoch %d)", self.session_id, self.epoch)
        return self.restored

    # -- heartbeats ------------------------------------------------------------------------

    async def send_heartbeat(self) -> bool:
        """One ``POST /worker/heartbeat`` (skipped while one is in flight); True when accepted."""
        if self._heartbeat_busy or self._stopped.is_set():
            return False
        self._heartbeat_busy = True
        try:
            answer = await self._request("POST", "/worker/heartbeat",
                                         {"session_id": self.session_id, "worker_epoch": self.epoch},
                                         timeout=self._cfg.heartbeat_timeout)
        finally:
            self._heartbeat_busy = False
        if answer.verdict == "ok":
            self.stats.heartbeats += 1
            return True
        self.stats.heartbeat_failures += 1
        return False

    async def _heartbeat_loop(self) -> None:
        cfg = self._cfg
        while not self._stopped.is_set():
            delay = heartbeat_delay(cfg.heartbeat_interval, cfg.heartbeat_jitter, self._rnd)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()
            if self._stopped.is_set():
                return
            await self.send_heartbeat()

    # -- uploaders -------------------------------------------------------------------------

    async def _idle_wait(self, name: str, timeout: float | None) -> None:
        wake = self._wake[name]
        wake.clear()
        self._progress.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30.0 if timeout is None else timeout):
                await wake.wait()

    async def _event_loop(self) -> None:
        backoff = self._cfg.retry_backoff()
        while not self._stopped.is_set():
            now = self._clock()
            batch = self._events.take(now)
            if not batch:
                await self._idle_wait("events", self._events.wait_time(now))
                continue
            self._busy["events"] = True
            self._in_flight = batch
            try:
                # Acks queued before these events go first (a prompt's ``processing`` before its
                # echo, as the stock CLI orders them); a failing delivery endpoint delays them ≤ 1 s.
                await self._wait_acks(self._acks_added)
                envelopes = [event_envelope(m) for m in batch]
                answer = await self._send("POST", "/worker/events",
                                          {"worker_epoch": self.epoch, "events": envelopes}, backoff)
                if answer.verdict == "ok":
                    if self._ack_log is not None:
                        self._ack_log.record(self.session_id, [e["payload"] for e in envelopes
                                                               if not e.get("ephemeral")])
                    ephemeral = sum(1 for e in envelopes if e.get("ephemeral"))
                    self.stats.event_posts += 1
                    self.stats.events_posted += len(batch)
                    self.stats.ephemeral_posted += ephemeral
                    self.stats.batch_sizes.append(len(batch))
                    del self.stats.batch_sizes[:-100]
                elif answer.verdict == "drop":
                    self.stats.dropped_events += len(batch)
                    log.error("session %s: %d event(s) dropped (HTTP %s: %s)", self.session_id, len(batch),
                              answer.status, answer.detail)
                if answer.verdict in ("ok", "drop"):
                    self._events_done += len(batch)
                    self._release_after_events()
            finally:
                self._busy["events"] = False
                self._in_flight = []

    def _take_internal(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        used = 0
        while self._internal and len(batch) < self._cfg.max_events:
            item, size = self._internal[0]
            if batch and used + size > self._cfg.max_batch_bytes:
                break
            self._internal.popleft()
            batch.append(item)
            used += size
        return batch

    async def _internal_loop(self) -> None:
        backoff = self._cfg.retry_backoff()
        while not self._stopped.is_set():
            batch = self._take_internal()
            if not batch:
                await self._idle_wait("internal", None)
                continue
            self._busy["internal"] = True
            try:
                answer = await self._send("POST", "/worker/internal-events",
                                          {"worker_epoch": self.epoch, "events": batch}, backoff)
                if answer.verdict == "ok":
                    self.stats.internal_posts += 1
            finally:
                self._busy["internal"] = False

    async def _state_loop(self) -> None:
        backoff = self._cfg.retry_backoff()
        while not self._stopped.is_set():
            patch = self._state.take()
            if patch is None:
                await self._idle_wait("state", None)
                continue
            self._busy["state"] = True
            try:
                while True:
                    body = {**patch, "worker_epoch": self.epoch}
                    answer = await self._request("PUT", "/worker", body)
                    if answer.verdict == "ok":
                        backoff.success(self._clock())
                        self.stats.state_puts += 1
                        self._state.succeeded()
                        break
                    if answer.verdict != "retry":
                        self._state.dropped()
                        break
                    self.stats.retries += 1
                    decision = backoff.failure(self._clock(), self._rnd, answer.retry_after)
                    self._retry_now.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(decision.delay):
                            await self._retry_now.wait()
                    if self._stopped.is_set():
                        break
                    patch = self._state.failed()  # resend, merged with what was reported meanwhile
            finally:
                self._busy["state"] = False

    async def _delivery_loop(self) -> None:
        backoff = self._cfg.retry_backoff()
        while not self._stopped.is_set():
            batch = self._deliveries.take(self._cfg.max_delivery_batch)
            if not batch:
                await self._idle_wait("delivery", None)
                continue
            self._busy["delivery"] = True
            try:
                answer = await self._send("POST", "/worker/events/delivery",
                                          {"worker_epoch": self.epoch, "updates": batch}, backoff)
                if answer.verdict == "ok":
                    self.stats.delivery_posts += 1
                    self.stats.deliveries_posted += len(batch)
            finally:
                self._busy["delivery"] = False
                self._acks_done += len(batch)
                self._ack_progress.set()

    async def _wait_acks(self, target: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.ack_barrier
        while self._acks_done < target and not self._stopped.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return
            self._ack_progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._ack_progress.wait()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> CCRStopped:
        """Heartbeats and uploaders until :meth:`close` or a stopping answer; returns why it stopped."""
        if self._running:
            raise RuntimeError("CCRClient.run() may be called once")
        self._running = True
        try:
            if not self._stopped.is_set():
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(coro) for coro in (
                        self._heartbeat_loop(), self._event_loop(), self._internal_loop(),
                        self._state_loop(), self._delivery_loop())]
                    await self._stopped.wait()
                    for task in tasks:
                        task.cancel()
        finally:
            if self._own_http and self._http is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._http.aclose())
            if self._stop_info is None:
                self._stop_info = CCRStopped("closed", None, "stopped")
            self._stopped.set()
            self._finished.set()
        return self._stop_info

    async def flush(self, timeout: float) -> bool:
        """Send coalescing stream events now and wait until every uploader is idle."""
        self._events.flush()
        self._wake["events"].set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.idle and not self._stopped.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.05)):
                    await self._progress.wait()
        return self.idle

    async def close(self, grace: float | None = None, *, disconnect: bool = True) -> None:
        """Flush for ``grace`` seconds (reporting ``connection_status: disconnected`` last when
        ``disconnect``), then stop."""
        if self._closing.is_set():
            await self._wait_finished()
            return
        grace = self._cfg.close_grace if grace is None else max(0.0, grace)
        if disconnect and not self._stopped.is_set() and self._running:
            self._state.put({"connection_status": "disconnected"})
            self._wake["state"].set()
        self._closing.set()
        if self._running and not self._stopped.is_set() and grace > 0:
            await self.flush(grace)
        if not self.idle and not self._stopped.is_set():
            log.warning("session %s: closing with writes not delivered", self.session_id)
        self._stop(CCRStopped("closed", None, "closed by its owner"))
        if self._running:
            await self._wait_finished()
        elif self._own_http and self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()

    async def _wait_finished(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._finished.wait()
