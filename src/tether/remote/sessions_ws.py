"""SessionsWebSocket: a remote client's subscribe socket (docs/protocol.md §8.4, §4.7).

A thin adapter over :class:`tether.protocol.subscribe_policy.SubscribeReconnectPolicy`: it
opens ``/v1/sessions/ws/{id}/subscribe`` with a fresh bearer token per attempt, resumes
with ``?from_sequence_num=<last sequence number seen>`` (so a reconnect loses and repeats
nothing), pings every 30 s, hands every JSON frame to its owner through a bounded queue,
and reconnects or stops as the policy says. :meth:`reconnect` forces a reopen (500 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from tether import __version__
from tether.client.hybrid import handshake_close_code
from tether.protocol.subscribe_policy import PING_INTERVAL_S, Reconnect, Stop, SubscribeReconnectPolicy

log = logging.getLogger("tether.remote.ws")

ANTHROPIC_VERSION: Final = "2023-06-01"
CLOSE_ABNORMAL: Final = 1006
CONNECT_TIMEOUT_S: Final = 15.0
MAX_FRAME_BYTES: Final = 4 << 20  # a 1 MiB event grows a little as a frame (sequence_num, escaping)
QUEUE_SIZE: Final = 1024


@dataclass(frozen=True)
class Frame:
    """A JSON object received on the socket."""

    data: dict[str, Any]


@dataclass(frozen=True)
class Connected:
    attempt: int
    resumed_from: int | None


@dataclass(frozen=True)
class Reconnecting:
    delay: float
    attempt: int
    code: int | None
    detail: str


@dataclass(frozen=True)
class Ended:
    stop: Stop
    detail: str


SocketEvent = Frame | Connected | Reconnecting | Ended


def subscribe_url(server: str, session_id: str, *, org_uuid: str | None, from_seq: int | None) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    query: dict[str, str | int] = {}
    if org_uuid:
        query["organization_uuid"] = org_uuid
    if from_seq is not None:
        query["from_sequence_num"] = from_seq
    tail = f"?{urlencode(query)}" if query else ""
    path = parts.path.rstrip("/")
    return f"{scheme}://{parts.netloc}{path}/v1/sessions/ws/{quote(session_id, safe='')}/subscribe{tail}"


class SessionsWebSocket:
    """One session's subscribe socket, reconnecting by the reference's rules until it stops."""

    def __init__(self, server: str, session_id: str, token: Callable[[], Awaitable[str]], *,
                 resume_from: Callable[[], int | None], org_uuid: str | None = None, viewer: bool = False,
                 policy: SubscribeReconnectPolicy | None = None) -> None:
        self.server = server
        self.session_id = session_id
        self._token = token
        self._resume_from = resume_from
        self._org_uuid = org_uuid
        self.policy = policy or SubscribeReconnectPolicy(viewer=viewer)
        self.events: asyncio.Queue[SocketEvent] = asyncio.Queue(QUEUE_SIZE)
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()  # cut a reconnect delay short (reconnect(), close())
        self._forced: Reconnect | None = None
        self._closing = False
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send one frame now; False when the socket is not open (the caller tells the person)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            return False
        return True

    def reconnect(self) -> None:
        """Close and reopen the socket after 500 ms with fresh counters."""
        if self._closing:
            return
        self._forced = self.policy.forced()
        self._wake.set()
        ws = self._ws
        if ws is not None:
            asyncio.ensure_future(ws.close(4000, "reconnect requested")).add_done_callback(_quiet)

    async def close(self) -> None:
        """Detach: close the socket; :meth:`run` returns with ``Stop("stopped")``."""
        self._closing = True
        self.policy.stop()
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1000, "detached")

    async def run(self) -> Stop:
        """Connect and read until the policy stops; every happening goes to :attr:`events`."""
        while True:
            code, detail = await self._connect_once()
            decision = self._forced or self.policy.closed(code)
            self._forced = None
            if self._closing:
                decision = Stop("stopped", code)
            if isinstance(decision, Stop):
                await self.events.put(Ended(decision, detail))
                return decision
            log.info("subscribe socket closed (%s: %s); reconnecting in %.1f s", code, detail, decision.delay)
            await self.events.put(Reconnecting(decision.delay, decision.attempt, code, detail))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision.delay):
                    await self._wake.wait()
            if self._forced is not None:  # reconnect() during the delay: wait its own 500 ms
                forced, self._forced = self._forced, None
                await asyncio.sleep(forced.delay)

    async def _connect_once(self) -> tuple[int | None, str]:
        try:
            token = await self._token()
        except Exception as exc:  # an expired login is a 4003 to the person
            return 4003, f"no usable token: {exc}"
        from_seq = self._resume_from()
        url = subscribe_url(self.server, self.session_id, org_uuid=self._org_uuid, from_seq=from_seq)
        headers = {"Authorization": f"Bearer {token}", "anthropic-version": ANTHROPIC_VERSION}
        try:
            ws = await ws_connect(url, additional_headers=headers, user_agent_header=f"tether/{__version__}",
                                  open_timeout=CONNECT_TIMEOUT_S, ping_interval=PING_INTERVAL_S,
                                  ping_timeout=None, max_size=MAX_FRAME_BYTES, close_timeout=5)
        except InvalidStatus as exc:
            status = exc.response.status_code
            return handshake_close_code(status), f"upgrade refused with HTTP {status}"
        except InvalidURI as exc:
            return 1002, str(exc)
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            return None, f"connect failed: {exc or type(exc).__name__}"
        if self._closing:
            await ws.close(1000, "detached")
            return 1000, "detached"
        self._ws = ws
        self.connects += 1
        self.policy.opened()
        await self.events.put(Connected(self.connects, from_seq))
        try:
            async for raw in ws:
                data = self._parse(raw)
                if data is not None:
                    await self.events.put(Frame(data))  # a full queue pauses reading (backpressure)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
        rcvd = ws.close_code
        return (rcvd if rcvd is not None else CLOSE_ABNORMAL), ws.close_reason or ""

    def _parse(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("subscribe socket: a frame that is not JSON was dropped")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return None
        self.policy.frame_received()
        return data


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
