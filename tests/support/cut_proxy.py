"""A loopback TCP proxy that can cut its connections at a chosen byte of the server's answer
(for resume tests: a stream broken mid-frame, by a clean close or a reset)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Literal

from tests.support.loopback import LoopbackServer

CutMode = Literal["close", "reset"]


@dataclass
class _Cut:
    after: int
    mode: CutMode


class CutProxy(LoopbackServer):
    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.connections = 0
        self.cuts = 0
        self._cut: _Cut | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def cut_after(self, nbytes: int, mode: CutMode = "close") -> None:
        """Cut the first connection whose answer passes ``nbytes`` more bytes from now."""
        self._cut = _Cut(nbytes, mode)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self._abort(writer)
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(reader, up_writer, downstream=None))
                tg.create_task(self._pipe(up_reader, writer, downstream=writer))
        except* (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    downstream: asyncio.StreamWriter | None) -> None:
        try:
            while chunk := await src.read(65536):
                cut = self._cut if downstream is not None else None
                if cut is not None and len(chunk) > cut.after:
                    self._cut = None
                    self.cuts += 1
                    dst.write(chunk[:cut.after])
                    with contextlib.suppress(ConnectionError):
                        await dst.drain()
                    if cut.mode == "reset":
                        self._abort(dst)
                    else:
                        dst.close()
                    raise ConnectionResetError("cut by the test proxy")
                if cut is not None:
                    cut.after -= len(chunk)
                dst.write(chunk)
                await dst.drain()
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
