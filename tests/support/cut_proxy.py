"""A loopback TCP proxy that injects network faults into the connections it carries.

* :meth:`CutProxy.cut_after`: cut the next answer that passes N more bytes (resume tests: a stream
  broken mid-frame, by a clean close or a reset);
* :meth:`CutProxy.inject`: one :class:`Fault` on a chosen live connection — a reset (RST through
  ``SO_LINGER 0``), a clean close, a half-close of one direction, or a stall (nothing forwarded
  for a while, then resume or cut) — now, or once N more bytes passed in one direction;
* :meth:`CutProxy.refuse_requests`: reset every HTTP request whose request line contains a
  pattern, for a while (e.g. a bridge that cannot reach its token refresh).

The proxy outlives its upstream: a server that restarts on the same port is reached again by
new connections (a refused upstream connect resets the client's). ``on_fault`` is called with
the fault's label each time one is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tests.support.loopback import LoopbackServer

CutMode = Literal["close", "reset"]
FaultKind = Literal["reset", "close", "half_close", "stall"]
Direction = Literal["up", "down"]  # up: client → server; down: server → client
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ")


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    direction: Direction = "down"
    after_bytes: int | None = None  # None: at once; else once this many more bytes passed in ``direction``
    stall_s: float = 0.0
    then: Literal["resume", "reset", "close"] = "resume"  # what ends a stall

    @property
    def label(self) -> str:
        if self.kind == "stall":
            return f"stall+{self.then}"
        return f"{self.kind}:{self.direction}" if self.kind == "half_close" else self.kind


@dataclass
class _Conn:
    id: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    pending: Fault | None = None
    remaining: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dead: bool = False
    shut: set[str] = field(default_factory=set)  # half-closed directions

    def __post_init__(self) -> None:
        self.flowing.set()


class CutProxy(LoopbackServer):
    def __init__(self, upstream_port: int, on_fault: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.on_fault = on_fault
        self.connections = 0
        self.cuts = 0
        self.live: dict[int, _Conn] = {}
        self._cut: tuple[int, CutMode] | None = None
        self._ids = itertools.count(1)
        self._refuse: tuple[bytes, float] | None = None
        self.refused_requests = 0
        self._timers: set[asyncio.Task[None]] = set()

    # -- arming faults -------------------------------------------------------------------------

    def cut_after(self, nbytes: int, mode: CutMode = "close") -> None:
        """Cut the first connection whose answer passes ``nbytes`` more bytes from now."""
        self._cut = (nbytes, mode)

    def inject(self, fault: Fault, rnd: random.Random) -> bool:
        """Arm ``fault`` on a random live connection without one pending; False when there is none."""
        candidates = [c for _, c in sorted(self.live.items()) if c.pending is None and not c.dead]
        if not candidates:
            return False
        conn = rnd.choice(candidates)
        if fault.after_bytes is None:
            self._apply(conn, fault)
        else:
            conn.pending, conn.remaining = fault, fault.after_bytes
        return True

    def refuse_requests(self, pattern: bytes, seconds: float) -> None:
        """Reset every connection that carries a request line containing ``pattern`` for ``seconds``."""
        self._refuse = (pattern, time.monotonic() + seconds)

    # -- serving -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self._abort(writer)
            return
        conn = _Conn(next(self._ids), writer, up_writer)
        self.live[conn.id] = conn
        try:
            await self._pipes(conn, reader, up_reader)
        except asyncio.CancelledError:
            pass  # the proxy is closing: end quietly (Python 3.11's stream callback logs a cancelled handler)
        finally:
            conn.dead = True
            self.live.pop(conn.id, None)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipes(self, conn: _Conn, reader: asyncio.StreamReader, up_reader: asyncio.StreamReader) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(conn, reader, conn.upstream, "up"))
                tg.create_task(self._pipe(conn, up_reader, conn.client, "down"))
        except* (ConnectionError, OSError):
            pass

    async def _pipe(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    direction: Direction) -> None:
        try:
            while chunk := await src.read(65536):
                await conn.flowing.wait()
                if conn.dead:
                    raise ConnectionResetError("cut by the test proxy")
                if direction == "up" and self._refused(chunk):
                    self.refused_requests += 1
                    self._kill(conn, "reset")
                    raise ConnectionResetError("request refused by the test proxy")
                if direction == "down" and self._cut is not None:
                    chunk = await self._legacy_cut(conn, chunk, dst)
                pending = conn.pending
                if pending is not None and pending.direction == direction:
                    if len(chunk) > conn.remaining:
                        head, chunk = chunk[:conn.remaining], chunk[conn.remaining:]
                        await self._forward(conn, dst, head, direction)
                        conn.pending = None
                        self._apply(conn, pending)
                        await conn.flowing.wait()  # a stall holds the rest of the chunk here
                        if conn.dead:
                            raise ConnectionResetError("cut by the test proxy")
                    else:
                        conn.remaining -= len(chunk)
                await self._forward(conn, dst, chunk, direction)
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

    async def _forward(self, conn: _Conn, dst: asyncio.StreamWriter, chunk: bytes, direction: Direction) -> None:
        if direction in conn.shut or not chunk:
            return  # half-closed that way: the peer already saw its end of stream
        if direction == "up":
            conn.bytes_up += len(chunk)
        else:
            conn.bytes_down += len(chunk)
        dst.write(chunk)
        await dst.drain()

    async def _legacy_cut(self, conn: _Conn, chunk: bytes, dst: asyncio.StreamWriter) -> bytes:
        assert self._cut is not None
        after, mode = self._cut
        if len(chunk) <= after:
            self._cut = (after - len(chunk), mode)
            return chunk
        self._cut = None
        self.cuts += 1
        dst.write(chunk[:after])
        with contextlib.suppress(ConnectionError):
            await dst.drain()
        self._kill(conn, mode)
        raise ConnectionResetError("cut by the test proxy")

    def _refused(self, chunk: bytes) -> bool:
        if self._refuse is None:
            return False
        pattern, until = self._refuse
        if time.monotonic() > until:
            self._refuse = None
            return False
        if not chunk.startswith(_HTTP_METHODS):
            return False
        return pattern in chunk.split(b"\r\n", 1)[0]

    # -- applying faults -----------------------------------------------------------------------

    def _apply(self, conn: _Conn, fault: Fault) -> None:
        if conn.dead:
            return
        if self.on_fault is not None:
            self.on_fault(fault.label)
        if fault.kind in ("reset", "close"):
            self._kill(conn, fault.kind)
        elif fault.kind == "half_close":
            target = conn.upstream if fault.direction == "up" else conn.client
            conn.shut.add(fault.direction)
            with contextlib.suppress(Exception):
                if target.can_write_eof():
                    target.write_eof()
        else:
            conn.flowing.clear()
            task = asyncio.ensure_future(self._end_stall(conn, fault))
            self._timers.add(task)
            task.add_done_callback(self._timers.discard)

    async def _end_stall(self, conn: _Conn, fault: Fault) -> None:
        await asyncio.sleep(fault.stall_s)  # the injected stall itself, not a wait for a condition
        if fault.then != "resume":
            self._kill(conn, fault.then)
        conn.flowing.set()

    def _kill(self, conn: _Conn, mode: str) -> None:
        conn.dead = True
        conn.flowing.set()
        for w in (conn.client, conn.upstream):
            if mode == "reset":
                self._abort(w)
            else:
                with contextlib.suppress(Exception):
                    w.close()

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._timers):
            task.cancel()
        await super().__aexit__(*exc)
