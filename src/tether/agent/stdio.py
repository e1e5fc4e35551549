"""stdin frames and the single stdout writer of ``tether agent`` (the only I/O on the standard streams)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any, Final

from tether.protocol.line_splitter import LineSplitter
from tether.protocol.line_splitter import Oversize as _Oversize
from tether.protocol.messages import Message

READ_CHUNK: Final = 65536
OUTPUT_QUEUE: Final = 1000


class OutputClosed(Exception):
    """stdout is gone (the host closed the pipe)."""


@dataclass(frozen=True)
class Line:
    """stdin line ``number`` (1-based), without its newline."""

    number: int
    data: bytes


@dataclass(frozen=True)
class Oversize:
    """stdin line ``number`` was longer than ``limit`` bytes; it was dropped."""

    number: int
    limit: int


Framed = Line | Oversize


def _numbered(pieces: list[bytes | _Oversize], start: int, limit: int) -> list[Framed]:
    return [Oversize(start + i, limit) if isinstance(p, _Oversize) else Line(start + i, p)
            for i, p in enumerate(pieces, start=1)]


async def read_frames(stream: IO[bytes], max_line_bytes: int) -> AsyncIterator[Framed]:
    """Lines of ``stream`` (size-limited), then the unterminated last line at EOF."""
    loop = asyncio.get_running_loop()
    splitter = LineSplitter(max_line_bytes)
    number = 0
    fd = stream.fileno()
    was_blocking = os.get_blocking(fd)
    # A duplicate descriptor: closing the transport must not close the real stdin.
    dup = os.fdopen(os.dup(fd), "rb", buffering=0)
    pipe_reader = asyncio.StreamReader(limit=READ_CHUNK * 2)
    reader: asyncio.StreamReader | None = pipe_reader
    transport: asyncio.BaseTransport | None = None
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(pipe_reader), dup)
    except (ValueError, OSError):
        reader = None  # a regular file: plain reads never block for long
    try:
        while True:
            chunk = await reader.read(READ_CHUNK) if reader is not None else await asyncio.to_thread(
                os.read, fd, READ_CHUNK)
            if not chunk:
                break
            for item in _numbered(splitter.feed(chunk), number, max_line_bytes):
                number = item.number
                yield item
        for item in _numbered(splitter.close(), number, max_line_bytes):
            yield item
    finally:
        if transport is not None:
            transport.close()
        else:
            dup.close()
        _restore_blocking(fd, was_blocking)


def _restore_blocking(fd: int, blocking: bool) -> None:
    try:
        os.set_blocking(fd, blocking)
    except OSError:
        pass


def encode(message: Message) -> bytes:
    return (json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()


class Output:
    """A bounded queue drained by one writer task, so lines never interleave and order is kept."""

    def __init__(self, stream: IO[bytes] | None = None, maxsize: int = OUTPUT_QUEUE) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize)
        self._closed = False

    async def send(self, message: Message) -> None:
        if self._closed:
            raise OutputClosed("output already closed")
        await self._queue.put(encode(message))

    async def close(self) -> None:
        """Ask the writer to finish once everything sent before is written."""
        if not self._closed:
            self._closed = True
            await self._queue.put(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        fd = self._stream.fileno()
        was_blocking = os.get_blocking(fd)
        dup = os.fdopen(os.dup(fd), "wb", buffering=0)
        try:
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, dup)
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        except (ValueError, OSError):
            dup.close()
            writer = None  # a regular file: blocking writes are fine
        try:
            while (data := await self._queue.get()) is not None:
                if writer is not None:
                    writer.write(data)
                    await writer.drain()
                else:
                    self._stream.write(data)
                    self._stream.flush()
            if writer is not None:  # everything must reach the pipe before the process ends
                writer.transport.set_write_buffer_limits(high=0)
                await writer.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise OutputClosed(f"stdout closed: {exc}") from None
        finally:
            self._closed = True
            if writer is not None:
                writer.close()
            _restore_blocking(fd, was_blocking)


def stderr_line(text: str) -> None:
    try:
        print(f"tether agent: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def describe(value: Any) -> str:
    return json.dumps(value)[:80] if not isinstance(value, str) else value[:80]
