"""A scripted HTTP/1.1 server on loopback, in the test's own event loop (for client edge cases
a real server never produces on cue: replayed sequence numbers, silent streams, 429s, 409s…).

One request per connection (every answer says ``Connection: close``). The handler gets a
:class:`Request` and returns a :class:`Reply`; a reply with ``stream`` sends its chunks as
they come (an SSE body) and closes the connection when the iterator ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.loopback import LoopbackServer


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None


Handler = Callable[[Request], Awaitable[Reply]]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


class FakeHTTP(LoopbackServer):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[Request] = []
        self.changed = asyncio.Event()

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        assert self._server is not None
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    def matching(self, method: str, path_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    async def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.requests):
                self.changed.clear()
                await self.changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            parts = urlsplit(target)
            request = Request(method, parts.path, dict(parse_qsl(parts.query)), headers, body)
            self.requests.append(request)
            self.changed.set()
            reply = await self.handler(request)
            await self._write(writer, reply)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _write(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        status_line = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
        headers = {"connection": "close", **{k.lower(): v for k, v in reply.headers.items()}}
        if reply.stream is not None:
            headers.setdefault("content-type", "text/event-stream")
            writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
            await writer.drain()
            async for chunk in reply.stream:
                writer.write(chunk)
                await writer.drain()
            return
        if isinstance(reply.body, bytes):
            payload = reply.body
        else:
            payload = json.dumps({} if reply.body is None else reply.body).encode()
            headers.setdefault("content-type", "application/json")
        headers["content-length"] = str(len(payload))
        writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
                     + payload)
        await writer.drain()


def sse_event(seq: int, payload: dict[str, Any], event_id: str | None = None) -> bytes:
    data = {"event_id": event_id or f"evt_{seq:04d}", "sequence_num": seq, "event_type": payload["type"],
            "source": "client", "payload": payload, "created_at": "2026-01-01T00:00:00Z"}
    return f"event: client_event\nid: {seq}\ndata: {json.dumps(data)}\n\n".encode()
