"""Plain records the store hands out (rows become frozen dataclasses at the boundary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson
from websockets.frames import Frame, Opcode

from tether.server import jsonio
from tether.server.clock import iso


def ws_text_frame(payload: bytes) -> bytes:
    """A complete unmasked server-to-client WebSocket text frame (RFC 6455 §5.2)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@dataclass(frozen=True)
class EventIn:
    """An event about to be appended to a session's log."""

    uuid: str
    source: str  # worker | client | server
    event_type: str
    payload: dict[str, Any]
    payload_json: str
    delivery: str | None = None  # "pending" for inbound events that the worker must process


@dataclass
class StoredEvent:
    """A committed event of a session's log (or a live ephemeral one, with ``ephemeral``)."""

    session_id: str
    seq: int
    event_id: str
    uuid: str
    source: str
    event_type: str
    payload_json: str
    created_at: float
    delivery: str | None = None
    ephemeral: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def payload(self) -> dict[str, Any]:
        try:
            value = orjson.loads(self.payload_json)
        except orjson.JSONDecodeError:  # a row no release of Tether stores (1,024+ levels deep)
            return {}
        return value if isinstance(value, dict) else {}

    @cached_property
    def client_frame(self) -> bytes:
        """The frame subscribers receive: the payload with ``sequence_num`` (computed once)."""
        body = dict(self.payload)
        body["sequence_num"] = self.seq
        if self.ephemeral:
            body["ephemeral"] = True
        return jsonio.dumps(body)  # a row stored before the depth limit is served clamped

    @cached_property
    def client_ws_frame(self) -> bytes:
        """``client_frame`` as a complete WebSocket text frame (built once for all subscribers)."""
        return ws_text_frame(self.client_frame)

    @cached_property
    def client_text(self) -> str:
        return self.client_frame.decode()

    @cached_property
    def worker_text(self) -> str:
        return self.payload_json + "\n"

    @cached_property
    def worker_sse_frame(self) -> bytes:
        """The v2 worker stream's ``client_event`` frame (docs/protocol.md §8.3), built once for
        every stream that sends it."""
        data = {"event_id": self.event_id, "sequence_num": self.seq, "event_type": self.event_type,
                "source": self.source, "payload": self.payload, "created_at": iso(self.created_at)}
        return b"event: client_event\nid: %d\ndata: %s\n\n" % (self.seq, jsonio.dumps(data))

    @cached_property
    def worker_frame(self) -> bytes:
        """The v1 worker frame: the payload as one newline-terminated JSON line."""
        return self.payload_json.encode() + b"\n"
