"""Transport v2 for a worker: SSE reads + ``CCRClient`` writes (docs/protocol.md §3.5, §8.3, §9.4, §12.3),
behind the same :class:`~tether.client.transport.SessionTransport` interface as the v1
:class:`~tether.client.hybrid.HybridTransport`, so the session host never knows which one it has.

``session_url`` is ``{api_base}/v1/code/sessions/{cse_id}`` (or the session-ingress form the
stock CLI derives from ``--sdk-url``). :meth:`V2Transport.run`:

1. registers the worker (``POST /worker/register``, one retry after 2 s) unless an epoch was
   given (``/bridge`` already bumped it);
2. initialises the ``CCRClient`` (``GET /worker``, ``PUT /worker`` idle) — a failure closes
   the transport with 4091;
3. runs the SSE stream (resuming after ``from_sequence_num`` when one is carried over) and the
   CCR uploaders until one of them stops for good or :meth:`close` is called.

Inbound: every ``client_event`` is acknowledged ``received`` (by ``event_id``) and its
payload handed to :meth:`incoming`. Outbound: :meth:`write` posts the message as a client
event and derives from the traffic what v2 leaves to the worker to report: the worker status
(``running`` / ``requires_action`` / ``idle``) and the ``processing`` / ``processed`` delivery
acks (:class:`~tether.protocol.ccr.WorkerStatusTracker`, :class:`~tether.protocol.ccr.DeliveryTracker`).

Close reasons (:class:`~tether.client.transport.TransportClosed`): ``closed`` (1000, by the
owner); ``permanent`` 4090 (a newer epoch took over: HTTP 409), 4091 (init failed), 4003 /
4001 (worker token refused / session gone), 401/403/404 (the stream was refused);
``gave_up`` 4092 (the stream's 10-minute reconnect budget ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx

from tether import __version__
from tether.client.ccr import CCRClient, CCRConfig, CCRError, CCRInitError
from tether.client.hybrid import boot_clock
from tether.client.sse import SSEConfig, SSETransport, drain, stream_url
from tether.client.transport import Message, TransportClosed, TransportError, TransportState
from tether.errors import TetherError
from tether.protocol.ccr import (
    CLOSE_EPOCH_SUPERSEDED,
    CLOSE_INIT_FAILED,
    CLOSE_SSE_GAVE_UP,
    DeliveryStatus,
    DeliveryTracker,
    WorkerStatusTracker,
)
from tether.protocol.epochs import EpochInvalid, parse_epoch
from tether.protocol.messages import KEEP_ALIVE

__all__ = [
    "ANTHROPIC_VERSION",
    "TokenSource",
    "V2Config",
    "V2Transport",
    "WorkerRegistrationFailed",
    "register_worker",
]

log = logging.getLogger("tether.client.v2")

ANTHROPIC_VERSION: Final = "2023-06-01"

TokenSource = Callable[[], str]


class WorkerRegistrationFailed(TetherError):
    """``POST /worker/register`` did not give an epoch."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True)
class V2Config:
    sse: SSEConfig = field(default_factory=SSEConfig)
    ccr: CCRConfig = field(default_factory=CCRConfig)
    incoming_capacity: int = 1000
    register_attempts: int = 2
    register_retry_delay: float = 2.0
    register_timeout: float = 10.0
    close_grace: float = 3.0
    read_stream: bool = True  # False: outbound only (mirror mode): writes and heartbeats, no SSE


async def register_worker(session_url: str, token: str, *, attempts: int = 2, retry_delay: float = 2.0,
                          timeout: float = 10.0, http: httpx.AsyncClient | None = None) -> int:
    """``POST {session_url}/worker/register`` → the new worker epoch (docs/protocol.md §3.5 W1: the
    standalone bridge retries once after 2 s). Raises :class:`WorkerRegistrationFailed`."""
    client = http or httpx.AsyncClient()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "anthropic-version": ANTHROPIC_VERSION, "User-Agent": f"tether/{__version__}"}
    last_status: int | None = None
    detail = ""
    try:
        for attempt in range(1, max(1, attempts) + 1):
            try:
                resp = await client.post(session_url.rstrip("/") + "/worker/register", content=b"{}",
                                         headers=headers, timeout=timeout)
                last_status = resp.status_code
                if resp.is_success:
                    try:
                        return parse_epoch(resp.json().get("worker_epoch"))
                    except (ValueError, AttributeError, EpochInvalid) as exc:
                        raise WorkerRegistrationFailed(f"bad /worker/register answer: {exc}", last_status) from None
                detail = resp.text[:300]
                if resp.status_code in (400, 401, 403, 404, 409, 410):
                    break  # retrying cannot help
            except (httpx.HTTPError, OSError) as exc:
                last_status, detail = None, f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                await asyncio.sleep(retry_delay)
    finally:
        if http is None:
            await client.aclose()
    raise WorkerRegistrationFailed(f"worker registration failed (HTTP {last_status}: {detail})", last_status)


class V2Transport:
    """CCR v2 transport of one session (implements ``SessionTransport``)."""

    def __init__(
        self,
        session_url: str,
        token: str | TokenSource,
        *,
        epoch: int | None = None,
        from_sequence_num: int | None = None,
        config: V2Config | None = None,
        clock: Callable[[], float] = boot_clock,
        rnd: random.Random | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.session_url = session_url.rstrip("/")
        self._cfg = cfg = config or V2Config()
        self._token_source: TokenSource = token if callable(token) else functools.partial(str, token)
        self._epoch = epoch
        self._rnd = rnd or random.Random()
        self.ccr = CCRClient(self.session_url, self._current_token, epoch or 0, config=cfg.ccr, clock=clock,
                             rnd=self._rnd, extra_headers=extra_headers)
        self.sse = SSETransport(stream_url(self.session_url), self._current_token,
                                from_sequence_num=from_sequence_num, config=cfg.sse, clock=clock, rnd=self._rnd,
                                extra_headers=extra_headers)
        self.session_id = self.ccr.session_id
        self._status = WorkerStatusTracker()
        self._delivery = DeliveryTracker()
        self._incoming: asyncio.Queue[Message] = asyncio.Queue(cfg.incoming_capacity)
        self._state = TransportState.IDLE
        self._closed_info: TransportClosed | None = None
        self._initialized = False
        self._ready = asyncio.Event()  # initialised: the CCR client answered PUT /worker
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._grace = cfg.close_grace
        self.written = 0
        self.received = 0

    # -- views -------------------------------------------------------------------------

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def high_water(self) -> int:
        """The SSE resume point to carry into the next transport of this session."""
        return self.sse.high_water

    @property
    def state(self) -> TransportState:
        if self._state in (TransportState.IDLE, TransportState.CLOSING, TransportState.CLOSED):
            return self._state
        if not self._initialized:
            return TransportState.CONNECTING
        if not self._cfg.read_stream:
            return TransportState.CONNECTED
        sse = self.sse.state
        if sse is TransportState.CONNECTED:
            return TransportState.CONNECTED
        return TransportState.RECONNECTING if self.sse.stats.connects else TransportState.CONNECTING

    @property
    def closed_info(self) -> TransportClosed | None:
        return self._closed_info

    def _current_token(self) -> str:
        return self._token_source()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the worker is initialised and its read stream is open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._ready, self._closed)]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self._closed.is_set() or not self._ready.is_set():
            return False
        if not self._cfg.read_stream:
            return True
        return await self.sse.wait_connected(max(0.0, deadline - loop.time()))

    async def wait_closed(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        return self._closed.is_set()

    # -- credential --------------------------------------------------------------------

    def set_token(self, token: str) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._token_source = functools.partial(str, token)
        self.ccr.set_token(token)
        self.sse.set_token(token)

    # -- writes ------------------------------------------------------------------------

    def write(self, message: Message) -> None:
        if self._closing.is_set() or self._state in (TransportState.CLOSING, TransportState.CLOSED):
            raise TransportError("the transport is closed")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise TransportError("a message must be a JSON object with a string 'type'")
        if message["type"] == KEEP_ALIVE:
            return
        if not isinstance(message.get("uuid"), str) or not message["uuid"]:
            message = {**message, "uuid": str(uuidlib.uuid4())}
        try:
            self.ccr.write_event(message)
        except CCRError as exc:
            raise TransportError(str(exc)) from None
        self.written += 1
        report = self._status.outbound(message)
        if report is not None:
            self.ccr.report_state(*report)
        for uid, status in self._delivery.outbound(message):
            if status == "processed":  # after the turn's output (this message included) is stored
                self.ccr.ack_delivery_after_events(uid, status)
            else:
                self.ccr.ack_delivery(uid, status)

    def write_many(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.write(message)

    async def flush(self, timeout: float) -> bool:
        return await self.ccr.flush(timeout)

    def undelivered(self) -> list[Message]:
        """Events written but not yet accepted by the server (for the transport that replaces this one)."""
        return self.ccr.unsent_events()

    def report_state(self, status: str, details: Mapping[str, object] | None = None) -> None:
        """Report a worker status the traffic does not show (an in-process bridge's REPL); the
        tracker learns it too, so the next change the traffic shows (a ``result``: idle) is reported."""
        self._status.status = status
        self.ccr.report_state(status, dict(details) if details else None)

    def ack_delivery(self, uuid: str, status: DeliveryStatus) -> None:
        """Acknowledge an inbound event by its payload ``uuid`` (``processing`` / ``processed``)."""
        self.ccr.ack_delivery(uuid, status)

    # -- reads -------------------------------------------------------------------------

    async def incoming(self) -> AsyncIterator[Message]:
        async for message in drain(self._incoming, self._closed):
            yield message

    async def _pump(self) -> None:
        async for event in self.sse.events():
            self.ccr.ack_delivery(event.event_id, "received")
            payload = event.payload
            report = self._status.inbound(payload)
            if report is not None:
                self.ccr.report_state(*report)
            acks = self._delivery.inbound(payload)  # before the hand-over: its echo may come at once
            await self._incoming.put(payload)
            self.received += 1
            for uid, status in acks:
                self.ccr.ack_delivery(uid, status)

    # -- lifecycle ---------------------------------------------------------------------

    def reconnect(self) -> None:
        """Drop the read stream and reopen it at once (resuming after the high-water mark)."""
        self.sse.drop()

    async def close(self, grace: float | None = None) -> None:
        """Stop reading, flush queued writes for ``grace`` seconds (3 s), report the worker
        disconnected, stop."""
        if self._state is TransportState.IDLE:
            self._closed_info = TransportClosed("closed", None, "closed before it ran")
            await self.ccr.close(0, disconnect=False)
            await self.sse.close()
            self._finish()
            return
        self._grace = self._cfg.close_grace if grace is None else max(0.0, grace)
        if self._closed_info is None:
            self._closed_info = TransportClosed("closed", 1000, "closed by its owner")
        self._closing.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._grace + 15):
                await self._closed.wait()

    def _finish(self) -> None:
        if self._closed_info is None:
            self._closed_info = TransportClosed("closed", None, "stopped")
        self._state = TransportState.CLOSED
        self._closed.set()

    async def run(self) -> TransportClosed:
        if self._closed.is_set():
            assert self._closed_info is not None
            return self._closed_info
        if self._state is not TransportState.IDLE:
            raise RuntimeError("V2Transport.run() may be called once")
        self._state = TransportState.CONNECTING
        try:
            if await self._start():
                await self._serve()
        finally:
            self._finish()
        assert self._closed_info is not None
        return self._closed_info

    async def _start(self) -> bool:
        """Register (when no epoch was given) and initialise; False when the transport closed."""
        cfg = self._cfg
        if self._epoch is None:
            try:
                self._epoch = await register_worker(self.session_url, self._current_token(),
                                                    attempts=cfg.register_attempts,
                                                    retry_delay=cfg.register_retry_delay,
                                                    timeout=cfg.register_timeout)
            except WorkerRegistrationFailed as exc:
                log.error("session %s: %s", self.session_id, exc)
                self._closed_info = TransportClosed("permanent", CLOSE_INIT_FAILED, str(exc))
                await self.ccr.close(0, disconnect=False)
                return False
            self.ccr.epoch = self._epoch
            log.info("session %s: registered as worker epoch %d", self.session_id, self._epoch)
        init = asyncio.ensure_future(self.ccr.initialize())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({init, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not init.done():
                init.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await init
        if init.cancelled():  # closed while initialising
            await self.ccr.close(0, disconnect=False)
            return False
        failure = init.exception()
        if failure is not None:
            stop = self.ccr.stop_info
            if stop is not None and stop.code == CLOSE_EPOCH_SUPERSEDED:
                self._closed_info = TransportClosed("permanent", stop.code, stop.detail)
            elif isinstance(failure, CCRInitError):
                self._closed_info = TransportClosed("permanent", CLOSE_INIT_FAILED, str(failure))
            else:
                self._closed_info = TransportClosed("permanent", CLOSE_INIT_FAILED, f"init failed: {failure!r}")
            log.error("session %s: %s", self.session_id, self._closed_info.detail)
            await self.ccr.close(0, disconnect=False)
            return False
        self._initialized = True
        self._ready.set()
        return True

    async def _serve(self) -> None:
        if not self._cfg.read_stream:
            await self._serve_outbound_only()
            return
        async with asyncio.TaskGroup() as tg:
            ccr_task = tg.create_task(self.ccr.run(), name=f"ccr-{self.session_id}")
            sse_task = tg.create_task(self.sse.run(), name=f"sse-{self.session_id}")
            pump = tg.create_task(self._pump(), name=f"v2-pump-{self.session_id}")
            closing = tg.create_task(self._closing.wait())
            await asyncio.wait({ccr_task, sse_task, closing}, return_when=asyncio.FIRST_COMPLETED)
            self._state = TransportState.CLOSING
            if self._closing.is_set():  # by the owner: stop reading, then flush the writes
                await self.sse.close()
                await self.ccr.close(self._grace)
            elif ccr_task.done():
                stop = ccr_task.result()
                self._closed_info = TransportClosed(stop.reason, stop.code, stop.detail)
                await self.sse.close()
            else:
                info = sse_task.result()
                code = CLOSE_SSE_GAVE_UP if info.reason == "gave_up" else info.code
                self._closed_info = TransportClosed(info.reason, code, f"the event stream closed: {info.detail}")
                log.log(logging.INFO if code == 404 else logging.WARNING,  # 404: archived or gone
                        "session %s: %s", self.session_id, self._closed_info.detail)
                await self.ccr.close(self._cfg.close_grace)
            closing.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(pump)  # the pump ends with the stream: hand over what is queued
            pump.cancel()

    async def _serve_outbound_only(self) -> None:
        """Mirror mode (docs/protocol.md §12.9): the uploaders and heartbeats only; nothing is read."""
        await self.sse.close()
        async with asyncio.TaskGroup() as tg:
            ccr_task = tg.create_task(self.ccr.run(), name=f"ccr-{self.session_id}")
            closing = tg.create_task(self._closing.wait())
            await asyncio.wait({ccr_task, closing}, return_when=asyncio.FIRST_COMPLETED)
            self._state = TransportState.CLOSING
            if self._closing.is_set():
                await self.ccr.close(self._grace)
            else:
                stop = ccr_task.result()
                self._closed_info = TransportClosed(stop.reason, stop.code, stop.detail)
            closing.cancel()
