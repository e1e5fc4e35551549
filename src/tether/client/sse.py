"""The CCR v2 read stream of a worker: ``GET {session_url}/worker/events/stream`` (docs/protocol.md §8.3).

Auth is the worker token (``Authorization: Bearer``); ``Accept: text/event-stream``,
``anthropic-version: 2023-06-01``. The transport keeps the highest sequence number it has
handed over and resumes after it on every reconnect (``from_sequence_num`` and
``Last-Event-ID``); a transport built with ``from_sequence_num`` (the mark carried over from
an earlier transport of the same session) starts there. Sequence numbers already seen are
dropped (:class:`~tether.protocol.sequence.SequenceTracker`), so a server that replays
never makes it deliver twice.

Liveness: a connection that yields no byte (the server's ``:keepalive`` comments count) for
45 s is dropped and reopened. Reconnects: 1 s → 30 s ±25 %, given up after 10 minutes of
continuous failure (``SSEClosed("gave_up")``; the v2 transport maps that to close code
4092). ``401``/``403``/``404``/``410`` on connect are permanent (``SSEClosed("permanent", status)``)
unless the token changed meanwhile. The decisions live in :mod:`tether.protocol.sse`; this
module owns the HTTP request, the timers and the hand-over queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx

from tether import __version__
from tether.client.hybrid import boot_clock
from tether.client.transport import TransportState
from tether.protocol import backoff as backoff_presets
from tether.protocol.backoff import Backoff
from tether.protocol.ccr import awaiting_fresh_token
from tether.protocol.sequence import SequenceTracker
from tether.protocol.sse import (
    CLIENT_EVENT,
    LIVENESS_TIMEOUT,
    ClientEvent,
    ClientEventError,
    SSEDecoder,
    SSEFrame,
    SSEReconnectPolicy,
    parse_client_event,
    resume_request,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "SSEClosed",
    "SSEConfig",
    "SSEStats",
    "SSETransport",
    "TokenSource",
    "drain",
    "stream_url",
]

log = logging.getLogger("tether.client.sse")

ANTHROPIC_VERSION: Final = "2023-06-01"
_IDLE_RECHECK: Final = 30.0

TokenSource = Callable[[], str]


def stream_url(session_url: str) -> str:
    return session_url.rstrip("/") + "/worker/events/stream"


@dataclass(frozen=True)
class SSEConfig:
    """Tunables; the defaults are Claude Code's numbers (docs/protocol.md §8.3, §10)."""

    liveness_timeout: float = LIVENESS_TIMEOUT
    connect_timeout: float = 15.0
    incoming_capacity: int = 1000
    reconnect_backoff: Callable[[], Backoff] = backoff_presets.sse_reconnect
    expired_token_grace_s: float = 0.0  # > 0: a 401/403 for an expired token waits for set_token (retried)


@dataclass(frozen=True)
class SSEClosed:
    """Why the stream stopped: ``closed`` (by its owner), ``permanent`` (401/403/404, ``code`` is
    the status) or ``gave_up`` (the reconnect budget ran out)."""

    reason: str
    code: int | None = None
    detail: str = ""


@dataclass
class SSEStats:
    connects: int = 0
    reconnect_attempts: int = 0
    liveness_drops: int = 0
    drops: int = 0
    events: int = 0
    duplicates: int = 0
    gaps: int = 0
    bad_frames: int = 0
    ignored_frames: int = 0
    comments: int = 0


class SSETransport:
    """One worker's read stream. Run :meth:`run` as a task; read :meth:`events`."""

    def __init__(
        self,
        url: str,
        token: str | TokenSource,
        *,
        from_sequence_num: int | None = None,
        config: SSEConfig | None = None,
        clock: Callable[[], float] = boot_clock,
        rnd: random.Random | None = None,
        extra_headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._token_source: TokenSource = token if callable(token) else functools.partial(str, token)
        self._cfg = config or SSEConfig()
        self._clock = clock
        self._rnd = rnd or random.Random()
        self._extra_headers = dict(extra_headers or {})
        self._http = http
        self._tracker = SequenceTracker(from_sequence_num or 0)
        self._policy = SSEReconnectPolicy(self._cfg.reconnect_backoff())
        self._queue: asyncio.Queue[ClientEvent] = asyncio.Queue(self._cfg.incoming_capacity)
        self._state = TransportState.IDLE
        self._closed_info: SSEClosed | None = None
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()
        self._closing = asyncio.Event()
        self._interrupt = asyncio.Event()  # end the current connection (drop() or close())
        self._wake = asyncio.Event()  # cut a reconnect delay short
        self._immediate = False
        self.stats = SSEStats()

    # -- views -------------------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def closed_info(self) -> SSEClosed | None:
        return self._closed_info

    @property
    def high_water(self) -> int:
        """The highest sequence number handed over (the resume point for the next stream)."""
        return self._tracker.high_water

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        return await _wait_any(self._connected, self._finished, timeout=timeout) and self._connected.is_set()

    async def wait_closed(self, timeout: float) -> bool:
        return await _wait_any(self._finished, timeout=timeout)

    # -- control -----------------------------------------------------------------------

    def set_token(self, token: str) -> None:
        """Use ``token`` from the next (re)connect on; a stream waiting to reconnect goes now."""
        if not token:
            raise ValueError("token must not be empty")
        self._token_source = functools.partial(str, token)
        if self._state is TransportState.RECONNECTING:
            self._immediate = True
            self._wake.set()

    def drop(self) -> None:
        """Drop the current connection and reconnect at once (resuming after the high-water mark)."""
        if self._state in (TransportState.CONNECTED, TransportState.CONNECTING, TransportState.RECONNECTING):
            self._immediate = True
            self._interrupt.set()
            self._wake.set()

    async def close(self) -> None:
        if self._state is TransportState.IDLE:
            self._finish(SSEClosed("closed", None, "closed before it ran"))
            return
        if self._closed_info is None:
            self._closed_info = SSEClosed("closed", None, "closed by its owner")
        self._closing.set()
        self._interrupt.set()
        self._wake.set()
        await _wait_any(self._finished, timeout=10.0)

    # -- reads -------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ClientEvent]:
        """New events in sequence order, until the stream is closed for good."""
        async for event in drain(self._queue, self._finished):
            yield event

    # -- run ---------------------------------------------------------------------------

    async def run(self) -> SSEClosed:
        if self._finished.is_set():
            assert self._closed_info is not None
            return self._closed_info
        if self._state is not TransportState.IDLE:
            raise RuntimeError("SSETransport.run() may be called once")
        self._state = TransportState.CONNECTING
        http = self._http or httpx.AsyncClient(timeout=httpx.Timeout(
            self._cfg.connect_timeout, read=None))
        try:
            await self._loop(http)
        finally:
            if self._http is None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(http.aclose())
            self._finish(self._closed_info or SSEClosed("closed", None, "stopped"))
        assert self._closed_info is not None
        return self._closed_info

    def _finish(self, info: SSEClosed) -> None:
        if self._closed_info is None:
            self._closed_info = info
        self._state = TransportState.CLOSED
        self._connected.clear()
        self._finished.set()

    async def _loop(self, http: httpx.AsyncClient) -> None:
        while not self._closing.is_set():
            token = self._safe_token()
            if token is None:
                status, detail = None, "the token source failed"
            else:
                status, detail = await self._connection(http, token)
            if self._closing.is_set():
                return
            changed = token is not None and (self._safe_token() != token or (
                status in (401, 403) and awaiting_fresh_token(token, time.time(), self._cfg.expired_token_grace_s)))
            decision = self._policy.ended(status, self._clock(), self._rnd, token_changed=changed)
            if decision.give_up:
                # 404: the session is archived or gone, an ordinary end (its owner says so), not a fault
                log.log(logging.INFO if status == 404 else logging.WARNING,
                        "%s: stream closed for good (%s, HTTP %s: %s)", self.url, decision.reason, status, detail)
                self._closed_info = SSEClosed(decision.reason, status, detail)
                return
            self._state = TransportState.RECONNECTING
            self.stats.reconnect_attempts += 1
            delay = 0.0 if self._immediate else (decision.delay or 0.0)
            self._immediate = False
            log.info("%s: stream ended (%s); reconnecting in %.1f s (attempt %d)",
                     self.url, detail or f"HTTP {status}", delay, decision.attempt)
            self._wake.clear()
            await _wait_any(self._wake, timeout=delay)
            self._immediate = False

    def _safe_token(self) -> str | None:
        try:
            return self._token_source()
        except Exception:
            log.exception("%s: the token source failed", self.url)
            return None

    def _headers(self, token: str) -> tuple[dict[str, str], dict[str, str]]:
        query, resume = resume_request(self._tracker.high_water)
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "anthropic-version": ANTHROPIC_VERSION,
            "User-Agent": f"tether/{__version__}",
            **self._extra_headers,
            **resume,
        }
        return query, headers

    async def _connection(self, http: httpx.AsyncClient, token: str) -> tuple[int | None, str]:
        """One connection, until it ends: ``(status, detail)``; status None for anything that is
        not an HTTP refusal (network error, end of stream, liveness, drop)."""
        self._interrupt.clear()
        conn = asyncio.ensure_future(self._read(http, token))
        stop = asyncio.ensure_future(self._interrupt.wait())
        try:
            await asyncio.wait({conn, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not conn.done():
                conn.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn
        self._connected.clear()
        if conn.cancelled():
            self.stats.drops += 1
            return None, "closing" if self._closing.is_set() else "dropped by the client"
        return conn.result()

    async def _read(self, http: httpx.AsyncClient, token: str) -> tuple[int | None, str]:
        query, headers = self._headers(token)
        decoder = SSEDecoder()
        try:
            async with http.stream("GET", self.url, params=query, headers=headers,
                                   timeout=httpx.Timeout(self._cfg.connect_timeout, read=None)) as resp:
                if resp.status_code != 200:
                    body = await _short_body(resp)
                    return resp.status_code, f"HTTP {resp.status_code}: {body}"
                self._policy.opened(self._clock())
                self._state = TransportState.CONNECTED
                self._connected.set()
                self.stats.connects += 1
                log.info("%s: stream open (after %d)", self.url, self._tracker.high_water)
                lines = resp.aiter_lines()
                while True:
                    try:
                        async with asyncio.timeout(self._cfg.liveness_timeout):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        return None, "the server ended the stream"
                    except TimeoutError:
                        self.stats.liveness_drops += 1
                        return None, f"no data for {self._cfg.liveness_timeout:.0f} s"
                    frame = decoder.feed_line(line)
                    if frame is not None:
                        await self._on_frame(frame)
                    self.stats.comments = decoder.comments
        except (httpx.HTTPError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def _on_frame(self, frame: SSEFrame) -> None:
        if frame.event != CLIENT_EVENT:
            self.stats.ignored_frames += 1
            if frame.event is not None:
                log.warning("%s: ignoring an SSE %r frame", self.url, frame.event)
            return
        try:
            event = parse_client_event(frame)
        except ClientEventError as exc:
            self.stats.bad_frames += 1
            log.warning("%s: ignoring a bad client_event: %s", self.url, exc)
            return
        seq = event.sequence_num
        if seq is not None and self._tracker.seen(seq):
            self.stats.duplicates += 1
            log.warning("%s: dropping already-seen sequence number %d", self.url, seq)
            return
        await self._queue.put(event)  # a drop while waiting here leaves seq unseen: resumed, not lost
        if seq is not None and self._tracker.observe(seq) == "gap":
            self.stats.gaps += 1
        self.stats.events += 1


T = TypeVar("T")


async def drain(queue: asyncio.Queue[T], finished: asyncio.Event) -> AsyncIterator[T]:
    """Items of ``queue`` as they come, until ``finished`` is set and the queue is empty."""
    while True:
        if not queue.empty():
            yield queue.get_nowait()
            continue
        if finished.is_set():
            return
        getter = asyncio.ensure_future(queue.get())
        done = asyncio.ensure_future(finished.wait())
        try:
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            yield getter.result()


async def _short_body(resp: httpx.Response) -> str:
    try:
        async with asyncio.timeout(2.0):
            raw = await resp.aread()
    except (httpx.HTTPError, TimeoutError, OSError):
        return ""
    return raw[:300].decode("utf-8", "replace")


async def _wait_any(*events: asyncio.Event, timeout: float | None) -> bool:
    """Wait until one of ``events`` is set (at most ``timeout`` s); True if one is."""
    if any(e.is_set() for e in events):
        return True
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=_IDLE_RECHECK if timeout is None else max(0.0, timeout),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return any(e.is_set() for e in events)
