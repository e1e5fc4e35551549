"""The interface every worker transport implements (v1 :class:`~tether.client.hybrid.HybridTransport`,
v2 :class:`~tether.client.v2.V2Transport`: SSE + ``CCRClient``; :func:`tether.client.factory.make_transport`
picks one from the work secret), modelled on the reference's ``ReplBridgeTransport``.

A transport carries stream-json messages between one session's worker and the server:

* :meth:`SessionTransport.run` owns the transport's tasks; run it in the owner's task group.
  It returns (never raises for network trouble) once the transport is closed for good,
  with a :class:`TransportClosed` that says why;
* :meth:`SessionTransport.write` queues a message for the server and never blocks;
* :meth:`SessionTransport.incoming` yields what the server sends, until the transport closes;
* :meth:`SessionTransport.set_token` swaps the credential for the next request/reconnect;
* :meth:`SessionTransport.close` flushes queued writes for a short grace period, then stops;
* :meth:`SessionTransport.undelivered` lists what was written but not accepted yet, so a bridge
  that replaces the transport can hand it to the next one.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from tether.errors import TetherError

__all__ = [
    "Message",
    "SessionTransport",
    "TransportClosed",
    "TransportError",
    "TransportState",
]

Message = dict[str, Any]


class TransportState(enum.StrEnum):
    IDLE = "idle"  # created, run() not called yet
    CONNECTING = "connecting"  # first connect in progress
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # lost the socket, backing off / reconnecting
    CLOSING = "closing"  # close() called: flushing writes
    CLOSED = "closed"


@dataclass(frozen=True)
class TransportClosed:
    """Why a transport stopped: ``reason`` is ``closed`` (by its owner), ``permanent``
    (a permanent close code) or ``gave_up`` (the reconnect budget ran out)."""

    reason: str
    code: int | None = None
    detail: str = ""


class TransportError(TetherError):
    """A write was refused: the transport is closing/closed, or its queue is full."""


class SessionTransport(Protocol):
    @property
    def state(self) -> TransportState: ...

    @property
    def closed_info(self) -> TransportClosed | None: ...

    async def run(self) -> TransportClosed: ...

    async def wait_connected(self, timeout: float) -> bool: ...

    def write(self, message: Message) -> None: ...

    def write_many(self, messages: Iterable[Message]) -> None: ...

    def incoming(self) -> AsyncIterator[Message]: ...

    def set_token(self, token: str) -> None: ...

    async def flush(self, timeout: float) -> bool: ...

    def undelivered(self) -> list[Message]: ...

    async def close(self, grace: float | None = None) -> None: ...
