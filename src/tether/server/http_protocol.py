"""uvicorn's HTTP protocol with two guards it lacks: a deadline for request headers, and a
connection cap that answers in the API's error shape.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but waits forever for
the headers of a request that has begun, or of the first request on a new connection: 1,500
half-open connections held 1,524 descriptors after 45 s (issue #11). Here every connection
must complete its request headers within ``header_timeout_s`` of being opened (and of its
previous response); it is answered 408 and closed otherwise. Once the headers are in, the
deadline is off: request bodies, long polls, SSE streams and WebSockets are not limited by it.

Past ``max_connections`` open connections (WebSockets and streams count), a new connection's
request is answered 503 with ``Retry-After`` and the one JSON error shape, then closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.auto import AutoHTTPProtocol

_BUSY_BODY = orjson.dumps({"type": "error", "error": {
    "type": "overloaded_error",
    "message": "The server has too many open connections; retry in a few seconds."}})
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n"
                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))
_TIMEOUT_BODY = orjson.dumps({"type": "error", "error": {
    "type": "timeout_error", "message": "The request headers did not arrive in time."}})
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))
_END_OF_HEADERS = b"\r\n\r\n"


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol (httptools or h11) with the two guards."""
    base: Any = AutoHTTPProtocol

    class Guarded(base):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None
        _refusing: bytearray | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refusing = bytearray()  # read its headers, then answer 503
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refusing is not None:
                self._refuse(data)
                return
            super().data_received(data)
            # The headers are in once a new request cycle started, or the connection
            # became a WebSocket (another protocol object owns the transport now).
            if self.cycle is not self._armed_cycle or self.transport.get_protocol() is not self:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._armed_cycle = self.cycle
            self._deadline = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            if self.cycle is not self._armed_cycle:
                return  # a request is being served
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()

        def _refuse(self, data: bytes) -> None:
            assert self._refusing is not None
            self._refusing += data
            if _END_OF_HEADERS in self._refusing or len(self._refusing) > 65536:
                self._disarm()
                self.transport.write(BUSY_RESPONSE)
                self.transport.close()
                self._refusing = bytearray()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
