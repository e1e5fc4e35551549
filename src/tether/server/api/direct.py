"""Fan-out without a task switch: ready-made WebSocket frames written straight to a socket.

Through ASGI, every frame to every subscriber costs a queue hand-off, a task wake-up and a
``send`` call that re-frames the same payload for each connection. For the common case —
a subscriber whose sender is idle, on uvicorn's ``websockets-sansio`` protocol, with no
extension negotiated and the transport accepting writes — the frame is the same bytes for
every subscriber, so it is built once per event (``StoredEvent.client_ws_frame``,
``Live.ws_frame``), taken synchronously during the publish, and written to each transport
at the end of the loop step — all frames of a batch in one write.

Anything else (another server, a paused transport, a closing socket, a backlog in the
subscriber's queue) takes the ordinary path, so frames are never reordered and flow control
is kept: ``DirectWriter.write`` says whether it wrote. The metrics
``subscriber_frames_direct_total`` / ``subscriber_direct_writes_total`` count this path;
``tests/server/test_direct.py`` checks that the running server takes it, so a uvicorn upgrade that changes the
protocol's attributes is noticed rather than silently slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket
from websockets.protocol import State

_PROTOCOL_ATTRS = ("conn", "transport", "writable", "close_sent", "disconnected")


class DirectWriter:
    """Buffers whole frames for an accepted socket and writes them to its transport in one
    call at the end of the current event-loop step (a batch of events is one syscall)."""

    __slots__ = ("on_flush", "pending", "proto")  # one per subscriber socket: keep it small

    def __init__(self, ws: WebSocket, on_flush: Callable[[int], None] | None = None) -> None:
        proto: Any = getattr(getattr(ws, "_send", None), "__self__", None)
        supported = (type(proto).__name__ == "WebSocketsSansIOProtocol"
                     and all(hasattr(proto, name) for name in _PROTOCOL_ATTRS)
                     and not getattr(proto.conn, "extensions", True))
        self.proto: Any = proto if supported else None
        self.pending: list[bytes] = []
        self.on_flush = on_flush  # told how many frames each write carried (metrics)

    @property
    def available(self) -> bool:
        return self.proto is not None

    def _open(self) -> bool:
        proto = self.proto
        return not (proto is None or proto.close_sent or proto.disconnected or proto.conn.state is not State.OPEN
                    or proto.transport.is_closing())

    def write(self, frame: bytes) -> bool:
        """Take ``frame`` and return True, or return False: the caller sends it the ordinary way
        (the socket is closing, or its transport asked us to pause)."""
        if not self._open() or not self.proto.writable.is_set():
            return False
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(frame)
        return True

    def flush(self) -> None:
        """Write what is buffered. Frames already taken go out even if the transport asked to
        pause meanwhile (at most one batch more); a socket that closed meanwhile drops them —
        its client resumes with ``from_sequence_num``."""
        frames, self.pending = self.pending, []
        if frames and self._open():
            self.proto.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            if self.on_flush is not None:
                self.on_flush(len(frames))


FRAMES_FIRST_MAX_EVENTS = 8


async def frames_first(events: int) -> None:
    """Order the answer of a worker's POST against the subscribers' frames it produced.

    The commit queued those frames (DirectWriter writes them at the end of this loop step). For a
    few events — a streaming agent's usual POST, where latency is what counts — one yield puts
    the frames on the wire before this answer. A big batch means the worker is behind: the
    answer goes first, so its next batch overlaps this one's fan-out (measured: 1×10 fan-out
    with 50 events/POST went from ≈55 % to ≈100 % of the raw websockets rate, bench/relay.py).
    """
    if events <= FRAMES_FIRST_MAX_EVENTS:
        await asyncio.sleep(0)


_CYCLE_ATTRS = ("transport", "flow", "disconnected", "response_started", "response_complete", "chunked_encoding")


class ChunkWriter:
    """:class:`DirectWriter` for a chunked HTTP/1.1 response (the v2 worker's SSE stream).

    On uvicorn's httptools protocol the ASGI ``send`` of a response is a method of its request
    cycle, which holds the transport and the flow control. While the response is streaming and
    the transport accepts writes, ready-made SSE frames (``StoredEvent.worker_sse_frame``, the
    same bytes for every stream) are taken synchronously during the publish and written at the
    end of the loop step, all frames of a batch as one chunk. The metrics
    ``sse_frames_direct_total`` / ``sse_direct_writes_total`` count this path (tests/server/test_direct.py).
    """

    __slots__ = ("cycle", "on_flush", "pending")

    def __init__(self, send: object, on_flush: Callable[[int], None] | None = None) -> None:
        cycle: Any = getattr(send, "__self__", None)
        supported = (type(cycle).__name__ == "RequestResponseCycle"
                     and type(cycle).__module__.endswith("httptools_impl")
                     and all(hasattr(cycle, name) for name in _CYCLE_ATTRS))
        self.cycle: Any = cycle if supported else None
        self.pending: list[bytes] = []
        self.on_flush = on_flush

    @property
    def available(self) -> bool:
        return self.cycle is not None

    def _open(self) -> bool:
        cycle = self.cycle
        return not (cycle is None or not cycle.response_started or cycle.response_complete or cycle.disconnected
                    or not cycle.chunked_encoding or cycle.transport.is_closing())

    def write(self, frame: bytes) -> bool:
        """Take ``frame`` and return True, or return False: send it the ordinary way."""
        if not self._open() or self.cycle.flow.write_paused:
            return False
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(frame)
        return True

    def flush(self) -> None:
        """Write what is buffered as one chunk; a response that ended meanwhile drops it (its
        worker resumes with ``Last-Event-ID``)."""
        frames, self.pending = self.pending, []
        if frames and self._open():
            body = frames[0] if len(frames) == 1 else b"".join(frames)
            self.cycle.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            if self.on_flush is not None:
                self.on_flush(len(frames))
