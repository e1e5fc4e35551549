"""A recording TCP proxy in front of a server: every HTTP request line that passes is recorded in
order (method, path, time), so a test sees calls exactly as the server receives them.

Requests are parsed only on the client → server side (request line, headers, a Content-Length
body); responses are piped through untouched. After a WebSocket upgrade (or a chunked request
body, which the bridge never sends) the connection is piped raw in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    at: float
    method: str
    path: str


class RecordingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def recorded(self, method: str | None = None, contains: str = "") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if (method is None or c.method == method) and contains in c.path]

    def start(self) -> RecordingProxy:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True, name="recording-proxy")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording proxy did not start")
        return self

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._server = await asyncio.start_server(self._client, sock=sock)
            self._ready.set()
            async with self._server:
                await self._server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop) if not self._loop.is_closed() else ():
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        back = asyncio.ensure_future(_pipe(up_reader, writer))
        try:
            await self._requests(reader, up_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await back
            for w in (up_writer, writer):
                w.close()

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                up.write_eof()
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path = [*lines[0].split(" ", 2), "", ""][:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            with self._lock:
                self.calls.append(Call(time.monotonic(), method, path))
            up.write(head)
            if headers.get("upgrade", "").lower() == "websocket" or "chunked" in headers.get("transfer-encoding", ""):
                await _pipe(reader, up)
                return
            length = int(headers.get("content-length", "0") or 0)
            if length:
                up.write(await reader.readexactly(length))
            await up.drain()

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
