"""The CCR v2 worker read stream: SSE decoding, client events, resume and reconnect decisions
(docs/protocol.md §8.3, §8.5, §10, §4.4).

Sans-I/O. The adapter (:mod:`tether.client.sse`) feeds the lines of the HTTP body into an
:class:`SSEDecoder`, turns its frames into :class:`ClientEvent`\\ s with
:func:`parse_client_event`, drops the sequence numbers a
:class:`~tether.protocol.sequence.SequenceTracker` has seen, and asks an
:class:`SSEReconnectPolicy` what to do whenever a connection fails or ends:

* ``401``/``403``/``404``/``410`` on connect are permanent (``401``/``403`` are retried once the
  token changed, as the env-less REPL bridge recovers from an expired JWT);
* anything else (other statuses, network errors, the server ending the stream, 45 s
  without a byte) reconnects after 1 s → 30 s ±25 %, for at most 10 minutes of continuous
  failure; an opened stream ends the failure streak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from tether.protocol.backoff import RandomSource, sse_reconnect
from tether.protocol.reconnect import ReconnectBudget, ReconnectDecision

__all__ = [
    "AUTH_STATUSES",
    "CLIENT_EVENT",
    "LIVENESS_TIMEOUT",
    "PERMANENT_STATUSES",
    "ClientEvent",
    "ClientEventError",
    "SSEDecoder",
    "SSEFrame",
    "SSEReconnectPolicy",
    "is_permanent_status",
    "parse_client_event",
    "resume_request",
]

CLIENT_EVENT: Final = "client_event"
LIVENESS_TIMEOUT: Final = 45.0  # no byte (keepalives included) for this long: the stream is dead
# 410: the worker token's work item was stopped (a Tether server rule, docs/protocol.md §4.4)
PERMANENT_STATUSES: Final[frozenset[int]] = frozenset({401, 403, 404, 410})
AUTH_STATUSES: Final[frozenset[int]] = frozenset({401, 403})


# --- frames --------------------------------------------------------------------------


@dataclass(frozen=True)
class SSEFrame:
    """One dispatched SSE event: ``event`` is None when the frame had no ``event:`` field."""

    event: str | None
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Line-by-line SSE decoder (the WHATWG event-stream rules).

    Feed one line at a time, without its line terminator. A blank line dispatches the
    frame collected so far; ``:`` lines are comments (counted, never dispatched); a
    field without a colon has an empty value; one leading space of a value is dropped;
    ``data`` lines are joined with ``\\n``; an ``id`` holding NUL is ignored. The last
    event id persists across frames, as the spec asks.
    """

    __slots__ = ("_data", "_event", "_has_data", "_retry", "comments", "last_event_id")

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._has_data = False
        self._retry: int | None = None
        self.last_event_id: str | None = None
        self.comments = 0

    @property
    def pending(self) -> bool:
        """A frame is being collected (a connection cut now loses it, which is safe: it was never seen)."""
        return self._has_data or self._event is not None

    def feed_line(self, line: str) -> SSEFrame | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def reset(self) -> None:
        """A new connection: drop the half-collected frame (the last event id is kept)."""
        self._event = None
        self._data = []
        self._has_data = False
        self._retry = None

    def _dispatch(self) -> SSEFrame | None:
        if not self._has_data:
            self._event = None  # an event name with no data dispatches nothing
            self._retry = None
            return None
        frame = SSEFrame(self._event, "\n".join(self._data), self.last_event_id, self._retry)
        self.reset()
        return frame


# --- client events -------------------------------------------------------------------


class ClientEventError(ValueError):
    """A ``client_event`` frame whose data is not a valid StreamClientEvent."""


@dataclass(frozen=True)
class ClientEvent:
    """``data:`` of an ``event: client_event`` frame (docs/protocol.md §8.3)."""

    event_id: str
    sequence_num: int | None
    event_type: str
    payload: dict[str, Any]
    source: str | None = None
    created_at: str | None = None


def _sequence(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def parse_client_event(frame: SSEFrame) -> ClientEvent:
    """The event a ``client_event`` frame carries; ``sequence_num`` falls back to the frame's ``id``."""
    try:
        data = json.loads(frame.data)
    except ValueError as exc:
        raise ClientEventError(f"client_event data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ClientEventError("client_event data is not a JSON object")
    payload = data.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise ClientEventError("client_event has no payload object with a string 'type'")
    event_id = data.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ClientEventError("client_event has no event_id")
    seq = _sequence(data.get("sequence_num"))
    if seq is None:
        seq = _sequence(frame.id)
    event_type = data.get("event_type")
    source, created = data.get("source"), data.get("created_at")
    return ClientEvent(
        event_id=event_id,
        sequence_num=seq,
        event_type=event_type if isinstance(event_type, str) else str(payload["type"]),
        payload=payload,
        source=source if isinstance(source, str) else None,
        created_at=created if isinstance(created, str) else None,
    )


def resume_request(high_water: int) -> tuple[dict[str, str], dict[str, str]]:
    """``(query, headers)`` that resume a stream after ``high_water`` (nothing when 0: a fresh
    worker asks for every inbound event not yet processed)."""
    if high_water <= 0:
        return {}, {}
    mark = str(high_water)
    return {"from_sequence_num": mark}, {"Last-Event-ID": mark}


# --- reconnects ----------------------------------------------------------------------


def is_permanent_status(status: int | None, *, token_changed: bool = False) -> bool:
    """True when a connect answered with ``status`` must not be retried."""
    if status not in PERMANENT_STATUSES:
        return False
    return not (status in AUTH_STATUSES and token_changed)


class SSEReconnectPolicy(ReconnectBudget):
    """One read stream's reconnect budget across connections (numbers of docs/protocol.md §8.3).

    :meth:`opened` is called once the stream answered 200.
    """

    __slots__ = ()

    _default_backoff = staticmethod(sse_reconnect)
    _is_permanent = staticmethod(is_permanent_status)

    def ended(self, status: int | None, now: float, rnd: RandomSource, *,
              token_changed: bool = False) -> ReconnectDecision:
        """A connect failed with HTTP ``status`` (None: network error, end of stream, liveness)."""
        return self._failed(status, now, rnd, token_changed)
