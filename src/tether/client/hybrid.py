"""Transport v1 for a worker: WebSocket reads + HTTP POST writes (docs/protocol.md §8.1, §8.2).

Reads: ``{ws}/v1/session_ingress/ws/{session_id}`` (``/v2/`` when the base URL's host is
``localhost``/``127.0.0.1``, as the stock CLI does), ``Authorization: Bearer <token>``,
newline-delimited JSON frames. A 10 s ping whose pong must arrive before the next
tick, 60 s sleep detection, reconnect 1 s → 30 s ±25 % for at most 10 minutes of
failure, permanent close codes 1002/4001/4003 (4003 retried once the token changed).

Writes: ``POST .../session_ingress/session/{session_id}/events`` with ``{"events":[...]}``;
``stream_event``\\ s coalesce for 100 ms, any other write flushes them first; one POST in
flight, at most 500 events each; 429/5xx/network errors are retried with
min(500 ms × 2^(n-1), 8 s) + [0, 1 s); 401/403 keep the events for a replay after the
next reconnect or token change; any other 4xx drops them. Every write gets a ``uuid``
(the server deduplicates on it), so retries and replays never duplicate an event.

The decisions live in :mod:`tether.protocol` (``WriteBatcher``, ``ReplayBuffer``,
``PingLiveness``, ``ReconnectPolicy``, backoff presets); this module only owns the
socket, the HTTP client and the timers. :meth:`HybridTransport.run` holds every task in
one task group; :meth:`HybridTransport.close` stops in a fixed order: refuse new
writes → close the socket → flush queued writes for the grace period (3 s) → cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from tether import __version__
from tether.client import acklog
from tether.client.transport import Message, TransportClosed, TransportError, TransportState
from tether.protocol import backoff as backoff_presets
from tether.protocol.backoff import Backoff
from tether.protocol.ccr import awaiting_fresh_token
from tether.protocol.ids import is_valid_id
from tether.protocol.messages import (
    KEEP_ALIVE,
    RECEIPT_FIELD,
    RECEIPTS_HEADER,
    USER,
    MessageError,
    is_ephemeral,
    parse_line,
)
from tether.protocol.reconnect import (
    CLOSE_ABNORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SESSION_NOT_FOUND,
    CLOSE_UNAUTHORIZED,
    PingLiveness,
    ReconnectPolicy,
)
from tether.protocol.replay_buffer import ReplayBuffer, message_uuid
from tether.protocol.write_batcher import BatcherFull, WriteBatcher, classify_post_status

__all__ = [
    "ANTHROPIC_VERSION",
    "HybridConfig",
    "HybridTransport",
    "TokenSource",
    "TransportStats",
    "boot_clock",
    "handshake_close_code",
    "ingress_urls",
]

log = logging.getLogger("tether.client.hybrid")

ANTHROPIC_VERSION: Final = "2023-06-01"
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1"})
_KEEP_ALIVE_FRAME: Final = '{"type":"keep_alive"}\n'
_IDLE_RECHECK: Final = 30.0  # an idle loop re-checks its state at least this often


def boot_clock() -> float:
    """Seconds from a clock that keeps counting while the machine sleeps (Linux
    ``CLOCK_BOOTTIME``; elsewhere ``time.monotonic``), so sleep detection can see the nap."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def ingress_urls(base_url: str, session_id: str) -> tuple[str, str]:
    """``(websocket URL, POST URL)`` of session ingress v1 for ``session_id`` under ``base_url``."""
    if not is_valid_id(session_id):
        raise ValueError(f"invalid session id {session_id!r}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"base URL must be http(s):// or ws(s)://, got {base_url!r}")
    secure = parts.scheme in ("https", "wss")
    version = "v2" if (parts.hostname or "") in _LOCAL_HOSTS else "v1"
    prefix = parts.path.rstrip("/")
    sid = quote(session_id, safe="")
    ws_url = f"{'wss' if secure else 'ws'}://{parts.netloc}{prefix}/{version}/session_ingress/ws/{sid}"
    post_url = f"{'https' if secure else 'http'}://{parts.netloc}{prefix}/{version}/session_ingress/session/{sid}/events"
    return ws_url, post_url


def handshake_close_code(status: int) -> int:
    """The close code a refused upgrade stands for: auth → 4003, 404 → 4001, other 4xx → 1002."""
    if status in (401, 403):
        return CLOSE_UNAUTHORIZED
    if status in (404, 410):
        return CLOSE_SESSION_NOT_FOUND
    if 400 <= status < 500 and status not in (408, 429):
        return CLOSE_PROTOCOL_ERROR
    return CLOSE_ABNORMAL


@dataclass(frozen=True)
class HybridConfig:
    """Tunables; the defaults are Claude Code's numbers (docs/protocol.md §10)."""

    ping_interval: float = 10.0
    sleep_threshold: float = 60.0
    keep_alive_interval: float = 300.0  # data-frame keep_alive on the socket; 0 disables
    connect_timeout: float = 15.0
    ws_close_timeout: float = 2.0
    max_frame_bytes: int = 4 << 20
    max_line_bytes: int = 1 << 20
    incoming_capacity: int = 1000
    batch_window: float = 0.1
    max_batch: int = 500
    max_batch_bytes: int = 8 << 20
    queue_capacity: int = 100_000
    replay_capacity: int = 1000
    post_timeout: float = 15.0
    close_grace: float = 3.0
    expired_token_grace_s: float = 0.0  # > 0: a 4003 for an expired token waits for set_token (retried)
    reconnect_backoff: Callable[[], Backoff] = backoff_presets.ws_reconnect
    post_backoff: Callable[[], Backoff] = backoff_presets.hybrid_post


@dataclass
class TransportStats:
    connects: int = 0
    reconnect_attempts: int = 0
    liveness_drops: int = 0
    received: int = 0
    bad_frames: int = 0
    written: int = 0
    posts: int = 0
    events_posted: int = 0
    post_retries: int = 0
    dropped_events: int = 0
    rejected_events: int = 0
    replayed: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # the last 100 POST sizes

    def record_batch(self, size: int) -> None:
        self.batch_sizes.append(size)
        del self.batch_sizes[:-100]


class _EndOfStream:
    pass


_EOF: Final = _EndOfStream()

TokenSource = Callable[[], str]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback that consumes a future's exception (it was abandoned on purpose)."""
    if not future.cancelled():
        future.exception()


async def _wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds (None: ``_IDLE_RECHECK``); True if set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_IDLE_RECHECK if timeout is None else max(0.0, timeout)):
            await event.wait()
    return event.is_set()


class HybridTransport:
    """Session-ingress v1 transport of one session (implements ``SessionTransport``)."""

    def __init__(
        self,
        base_url: str,
        session_id: str,
        token: str | TokenSource,
        *,
        config: HybridConfig | None = None,
        clock: Callable[[], float] = boot_clock,
        rnd: random.Random | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.session_id = session_id
        self.ws_url, self.post_url = ingress_urls(base_url, session_id)
        self._token_source: TokenSource = token if callable(token) else functools.partial(str, token)
        self._cfg = config or HybridConfig()
        self._clock = clock
        self._rnd = rnd or random.Random()
        self._extra_headers = dict(extra_headers or {})
        cfg = self._cfg
        self._batcher = WriteBatcher(cfg.batch_window, cfg.max_batch, cfg.queue_capacity, cfg.max_batch_bytes)
        self._replay = ReplayBuffer(cfg.replay_capacity)
        self._policy = ReconnectPolicy(cfg.reconnect_backoff())
        self._post_backoff = cfg.post_backoff()
        self._liveness = PingLiveness(cfg.ping_interval, cfg.sleep_threshold)
        self._incoming: asyncio.Queue[Message | _EndOfStream] = asyncio.Queue(cfg.incoming_capacity)
        self._state = TransportState.IDLE
        self._closed_info: TransportClosed | None = None
        self._finished = False
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = asyncio.Event()  # close() was called or the socket gave up
        self._drop = asyncio.Event()  # drop the current socket (close / reconnect())
        self._connector_wake = asyncio.Event()  # cut a reconnect delay short
        self._uploader_wake = asyncio.Event()  # a write arrived
        self._retry_now = asyncio.Event()  # cut a POST retry delay short
        self._idle = asyncio.Event()  # nothing queued, nothing in flight
        self._idle.set()
        self._grace_deadline: float | None = None
        self._drop_reason = ""
        self._immediate_reconnect = False
        self._generation = 0
        self._last_sent_uuid: str | None = None
        self._carry: Message | None = None  # read from a socket that dropped before it was handed over
        self.stats = TransportStats()
        self._ack_log = acklog.from_env()

    # -- views -------------------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def closed_info(self) -> TransportClosed | None:
        return self._closed_info

    @property
    def pending_writes(self) -> int:
        return len(self._batcher) + (0 if self._idle.is_set() else 1)

    @property
    def replay_buffer(self) -> ReplayBuffer:
        return self._replay

    def current_token(self) -> str:
        return self._token_source()

    def undelivered(self) -> list[Message]:
        """Messages written but not acknowledged by the server yet, oldest first (for the transport
        that replaces this one; the server deduplicates by ``uuid``)."""
        return self._replay.unacked()

    # -- credential --------------------------------------------------------------------

    def set_token(self, token: str) -> None:
        """Use ``token`` from the next POST and the next (re)connect on."""
        if not token:
            raise ValueError("token must not be empty")
        changed = token != self._safe_token()
        self._token_source = functools.partial(str, token)
        if not changed:
            return
        self._requeue_rejected()
        self._retry_now.set()
        if self._state is TransportState.RECONNECTING:
            self._immediate_reconnect = True
            self._connector_wake.set()

    def _safe_token(self) -> str | None:
        try:
            return self._token_source()
        except Exception:  # a token callable that fails is reported where it is used
            return None

    # -- writes ------------------------------------------------------------------------

    def write(self, message: Message) -> None:
        """Queue ``message`` for the server (never blocks). Raises :class:`TransportError`
        once the transport is closing/closed or its queue is full."""
        if self._closing.is_set() or self._state in (TransportState.CLOSING, TransportState.CLOSED):
            raise TransportError("the transport is closed")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise TransportError("a message must be a JSON object with a string 'type'")
        if message["type"] == KEEP_ALIVE:
            return  # liveness is the socket's business; never POSTed
        if message_uuid(message) is None:
            message = {**message, "uuid": str(uuidlib.uuid4())}
        try:
            size = len(orjson.dumps(message))
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise TransportError(f"message is not JSON-serialisable: {exc}") from None
        try:
            self._batcher.add(message, self._clock(), size)
        except BatcherFull as exc:
            raise TransportError(str(exc)) from None
        if not is_ephemeral(message):
            self._replay.record(message)
        self._last_sent_uuid = message["uuid"]
        self.stats.written += 1
        self._idle.clear()
        self._uploader_wake.set()

    def write_many(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.write(message)

    async def flush(self, timeout: float) -> bool:
        """Send coalescing stream events now and wait until every queued write was answered."""
        self._batcher.flush()
        self._uploader_wake.set()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- reads -------------------------------------------------------------------------

    async def incoming(self) -> AsyncIterator[Message]:
        """Messages from the server, in order, until the transport is closed."""
        while True:
            if self._finished and self._incoming.empty():
                return
            item = await self._incoming.get()
            if isinstance(item, _EndOfStream):
                return
            yield item

    async def wait_connected(self, timeout: float) -> bool:
        """True once the socket is open; False on timeout or when the transport closed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._connected.is_set() and not self._closed.is_set():
                    waiters = [asyncio.ensure_future(self._connected.wait()),
                               asyncio.ensure_future(self._closed.wait())]
                    try:
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in waiters:
                            waiter.cancel()
        return self._connected.is_set()

    async def wait_closed(self, timeout: float) -> bool:
        return await _wait_event(self._closed, timeout)

    # -- lifecycle ---------------------------------------------------------------------

    def reconnect(self) -> None:
        """Drop the socket and reconnect at once (e.g. after the machine woke up)."""
        if self._state in (TransportState.CONNECTED, TransportState.RECONNECTING):
            self._drop_reason = "reconnect requested"
            self._immediate_reconnect = True
            self._drop.set()
            self._connector_wake.set()

    async def close(self, grace: float | None = None) -> None:
        """Refuse new writes, close the socket, flush queued writes for ``grace`` seconds, stop."""
        if self._state is TransportState.IDLE:
            self._closed_info = TransportClosed("closed", None, "closed before it ran")
            self._finish()
            return
        grace = self._cfg.close_grace if grace is None else max(0.0, grace)
        if not self._closing.is_set():
            self._begin_closing(TransportClosed("closed", 1000, "closed by its owner"), grace)
        await _wait_event(self._closed, grace + self._cfg.ws_close_timeout + 5)

    def _begin_closing(self, info: TransportClosed, grace: float) -> None:
        if self._closed_info is None:
            self._closed_info = info
        self._grace_deadline = asyncio.get_running_loop().time() + max(0.0, grace)
        self._state = TransportState.CLOSING
        self._closing.set()
        self._drop_reason = self._drop_reason or "closing"
        self._drop.set()
        self._connector_wake.set()
        self._batcher.flush()
        self._uploader_wake.set()
        self._retry_now.set()

    async def run(self) -> TransportClosed:
        """Connect, read, write and reconnect until closed; returns why it stopped."""
        if self._closed.is_set():  # closed before it ran
            assert self._closed_info is not None
            return self._closed_info
        if self._state is not TransportState.IDLE:
            raise RuntimeError("HybridTransport.run() may be called once")
        self._state = TransportState.CONNECTING
        http = httpx.AsyncClient(timeout=httpx.Timeout(self._cfg.post_timeout))
        try:
            async with asyncio.TaskGroup() as tg:
                uploader = tg.create_task(self._upload_loop(http), name=f"hybrid-upload-{self.session_id}")
                await self._connection_loop()
                await self._drain()
                uploader.cancel()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(http.aclose())
            self._finish()
        assert self._closed_info is not None
        return self._closed_info

    def _finish(self) -> None:
        if self._closed_info is None:
            self._closed_info = TransportClosed("closed", None, "stopped")
        self._state = TransportState.CLOSED
        self._finished = True
        self._connected.clear()
        self._closed.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._incoming.put_nowait(_EOF)

    async def _drain(self) -> None:
        """Give queued writes until the grace deadline to go out."""
        loop = asyncio.get_running_loop()
        deadline = self._grace_deadline if self._grace_deadline is not None else loop.time()
        self._batcher.flush()
        self._uploader_wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._idle.wait()
        if not self._idle.is_set():
            log.warning("session %s: closing with %d write(s) not delivered", self.session_id, self.pending_writes)

    # -- the socket --------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        while not self._closing.is_set():
            token = self._safe_token()
            if token is None:
                code: int | None = CLOSE_ABNORMAL
                detail, opened = "the token source failed", False
                log.error("session %s: the token source failed", self.session_id)
            else:
                code, detail, opened = await self._connect_once(token)
            if self._closing.is_set():
                return
            changed = token is not None and (self._safe_token() != token or (
                code == CLOSE_UNAUTHORIZED
                and awaiting_fresh_token(token, time.time(), self._cfg.expired_token_grace_s)))
            decision = self._policy.closed(code, self._clock(), self._rnd, token_changed=changed)
            if decision.give_up:
                # the server closes with 4001 "session archived" when someone archived it: an ordinary end
                archived = code == CLOSE_SESSION_NOT_FOUND and detail == "session archived"
                log.log(logging.INFO if archived else logging.WARNING,
                        "session %s: socket closed for good (%s, code %s: %s)",
                        self.session_id, decision.reason, code, detail)
                self._begin_closing(TransportClosed(decision.reason, code, detail), self._cfg.close_grace)
                return
            self._state = TransportState.RECONNECTING
            self.stats.reconnect_attempts += 1
            delay = 0.0 if self._immediate_reconnect else (decision.delay or 0.0)
            self._immediate_reconnect = False
            log.info("session %s: socket closed (code %s: %s); reconnecting in %.1f s (attempt %d)",
                     self.session_id, code, detail, delay, decision.attempt)
            self._connector_wake.clear()
            await _wait_event(self._connector_wake, delay)
            self._immediate_reconnect = False

    def _ws_headers(self, token: str) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {token}",
            "anthropic-version": ANTHROPIC_VERSION,
            **self._extra_headers,
        }
        if self._last_sent_uuid is not None and self.stats.connects:
            headers["X-Last-Request-Id"] = self._last_sent_uuid
        headers[RECEIPTS_HEADER] = "1"  # we confirm control messages explicitly (see _receipt)
        return headers

    async def _connect_once(self, token: str) -> tuple[int | None, str, bool]:
        """One connection: open, read until it ends; returns ``(close code, detail, opened)``."""
        opening: asyncio.Future[ClientConnection] = asyncio.ensure_future(ws_connect(
            self.ws_url, additional_headers=self._ws_headers(token),
            user_agent_header=f"tether/{__version__}", open_timeout=None,
            ping_interval=None, ping_timeout=None, close_timeout=self._cfg.ws_close_timeout,
            max_size=self._cfg.max_frame_bytes, compression=None,
        ))
        closing: asyncio.Future[Any] = asyncio.ensure_future(self._closing.wait())
        waiters: set[asyncio.Future[Any]] = {opening, closing}
        try:
            await asyncio.wait(waiters, timeout=self._cfg.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not opening.done():  # timed out, closing, or we are being cancelled
                opening.cancel()
                opening.add_done_callback(_retrieve)
        if not opening.done() or opening.cancelled():
            return CLOSE_ABNORMAL, "closing" if self._closing.is_set() else "connect timed out", False
        try:
            ws = opening.result()
        except InvalidStatus as exc:
            status = exc.response.status_code
            return handshake_close_code(status), f"upgrade refused with HTTP {status}", False
        except InvalidURI as exc:
            return CLOSE_PROTOCOL_ERROR, str(exc), False
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            return CLOSE_ABNORMAL, f"connect failed: {exc or type(exc).__name__}", False
        code, detail = await self._serve(ws)
        return code, detail, True

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str]:
        if self._closing.is_set():
            await self._shut(ws, graceful=True)
            return ws.close_code, "closing"
        self._generation += 1
        now = self._clock()
        self._policy.opened(now)
        self._liveness.start(now)
        self._drop.clear()
        self._drop_reason = ""
        self._state = TransportState.CONNECTED
        self._connected.set()
        self.stats.connects += 1
        log.info("session %s: socket connected (%s)", self.session_id, self.ws_url)
        self._requeue_rejected()
        self._retry_now.set()  # the server answers again: retry a backed-off POST now
        dropped = False
        try:
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read_loop(ws))
                pinger = tg.create_task(self._ping_loop(ws, self._generation))
                stopper = tg.create_task(self._drop.wait())
                await asyncio.wait({reader, pinger, stopper}, return_when=asyncio.FIRST_COMPLETED)
                dropped = not reader.done()
                for task in (reader, pinger, stopper):
                    task.cancel()
        finally:
            self._connected.clear()
            await self._shut(ws, graceful=self._closing.is_set())
        if dropped and not self._closing.is_set():
            return CLOSE_ABNORMAL, self._drop_reason or "dropped"
        return ws.close_code, ws.close_reason or self._drop_reason

    async def _shut(self, ws: ClientConnection, *, graceful: bool) -> None:
        if graceful:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._cfg.ws_close_timeout):
                    await ws.close(1000, "closing")
                    return
        with contextlib.suppress(Exception):
            ws.transport.abort()

    async def _hand_over(self, message: Message) -> None:
        """Queue ``message`` for :meth:`incoming`; if the socket drops while the queue is full,
        the message is kept and handed over first on the next connection."""
        self._carry = message
        await self._incoming.put(message)
        self._carry = None

    async def _read_loop(self, ws: ClientConnection) -> None:
        limit = self._cfg.max_line_bytes
        if self._carry is not None:
            await self._hand_over(self._carry)
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                if isinstance(frame, bytes):
                    try:
                        frame = frame.decode("utf-8")
                    except UnicodeDecodeError:
                        self._bad_frame("a binary frame that is not UTF-8")
                        continue
                for line in frame.split("\n"):
                    if not line.strip():
                        continue
                    try:
                        message = parse_line(line, limit)
                    except MessageError as exc:
                        self._bad_frame(str(exc))
                        continue
                    if message["type"] == KEEP_ALIVE:
                        continue
                    self.stats.received += 1
                    await self._hand_over(message)
                    await self._receipt(ws, message)

    async def _receipt(self, ws: ClientConnection, message: Message) -> None:
        """Tell the server a control message reached this worker (a ``keep_alive`` frame with
        ``tether_received``; servers that do not know the field ignore the frame). Only this
        proves it: output the worker posts meanwhile may predate it, and a socket that dies
        takes the frames it had not read with it (docs/protocol.md §4.4)."""
        uuid = message_uuid(message)
        if message.get("type") == USER or uuid is None:
            return  # a prompt is confirmed by the agent's echo
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps({"type": KEEP_ALIVE, RECEIPT_FIELD: [uuid]}).decode() + "\n")

    def _bad_frame(self, why: str) -> None:
        self.stats.bad_frames += 1
        log.warning("session %s: ignoring a bad frame from the server: %s", self.session_id, why)

    async def _ping_loop(self, ws: ClientConnection, generation: int) -> None:
        keep_alive = self._cfg.keep_alive_interval
        next_keep_alive = self._clock() + keep_alive if keep_alive > 0 else None
        while True:
            await asyncio.sleep(max(0.0, self._liveness.next_tick() - self._clock()))
            now = self._clock()
            verdict = self._liveness.tick(now)
            if verdict != "ping":
                self.stats.liveness_drops += 1
                self._drop_reason = "no pong before the next ping" if verdict == "dead" else "the machine slept"
                log.warning("session %s: %s; reconnecting", self.session_id, self._drop_reason)
                return
            try:
                waiter = asyncio.ensure_future(await ws.ping())
                waiter.add_done_callback(functools.partial(self._on_pong, generation))
                if next_keep_alive is not None and now >= next_keep_alive:
                    await ws.send(_KEEP_ALIVE_FRAME)
                    next_keep_alive = now + keep_alive
            except ConnectionClosed:
                return

    def _on_pong(self, generation: int, waiter: asyncio.Future[float]) -> None:
        if waiter.cancelled() or waiter.exception() is not None or generation != self._generation:
            return
        self._liveness.pong(self._clock())

    # -- the POST side -----------------------------------------------------------------

    def _requeue_rejected(self) -> None:
        replay = self._replay.take_replay()
        if not replay:
            return
        self._batcher.add_front([(m, len(orjson.dumps(m))) for m in replay])
        self.stats.replayed += len(replay)
        log.info("session %s: re-sending %d write(s) refused earlier", self.session_id, len(replay))
        self._idle.clear()
        self._uploader_wake.set()

    async def _upload_loop(self, http: httpx.AsyncClient) -> None:
        while True:
            now = self._clock()
            batch = self._batcher.take(now)
            if not batch:
                wait = self._batcher.wait_time(now)
                if wait is None:
                    self._idle.set()
                self._uploader_wake.clear()
                await _wait_event(self._uploader_wake, wait)
                continue
            self._idle.clear()
            await self._send_batch(http, batch)

    async def _send_batch(self, http: httpx.AsyncClient, batch: list[Message]) -> None:
        uuids = [u for u in map(message_uuid, batch) if u is not None]
        body = orjson.dumps({"events": batch})
        while True:
            token = self._safe_token()
            status, retry_after, detail = (None, None, "the token source failed") if token is None \
                else await self._post(http, body, token)
            verdict = classify_post_status(status)
            if verdict == "ok":
                self._replay.ack(uuids)
                if self._ack_log is not None:
                    self._ack_log.record(self.session_id, [m for m in batch if not is_ephemeral(m)])
                self._post_backoff.success(self._clock())
                self.stats.posts += 1
                self.stats.events_posted += len(batch)
                self.stats.record_batch(len(batch))
                return
            if verdict == "drop":
                self._replay.ack(uuids)
                self.stats.dropped_events += len(batch)
                log.error("session %s: the server refused %d event(s) for good (HTTP %s): %s",
                          self.session_id, len(batch), status, detail)
                return
            if verdict == "reject":
                self._replay.mark_rejected(uuids)
                self.stats.rejected_events += len(batch)
                log.warning("session %s: %d event(s) refused (HTTP %s: %s); kept for the next reconnect "
                            "or token", self.session_id, len(batch), status, detail)
                return
            decision = self._post_backoff.failure(self._clock(), self._rnd, retry_after)
            self.stats.post_retries += 1
            if decision.give_up:
                self.stats.dropped_events += len(batch)
                log.error("session %s: giving up on %d event(s) after %d attempts",
                          self.session_id, len(batch), decision.attempt)
                return
            log.info("session %s: POST failed (%s); retry %d in %.1f s",
                     self.session_id, detail, decision.attempt, decision.delay or 0.0)
            self._retry_now.clear()
            await _wait_event(self._retry_now, decision.delay)

    async def _post(self, http: httpx.AsyncClient, body: bytes, token: str) -> tuple[int | None, float | None, str]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": f"tether/{__version__}",
            **self._extra_headers,
        }
        try:
            async with asyncio.timeout(self._cfg.post_timeout + 1):
                resp = await http.post(self.post_url, content=body, headers=headers)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            return None, None, f"{type(exc).__name__}: {exc}"
        retry_after: float | None = None
        raw = resp.headers.get("retry-after")
        if raw:
            with contextlib.suppress(ValueError):
                retry_after = float(raw)
        detail = "" if resp.is_success else resp.text[:300]
        return resp.status_code, retry_after, detail
