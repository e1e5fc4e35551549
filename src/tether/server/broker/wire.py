"""What travels on the bus between server instances (broker/redis.py), and its encoding.

One bus entry is a batch of notices in publish order, encoded once by the publishing instance and
decoded once by each other instance (never per subscriber). A notice is a list:

- ``["e", body, inbound, seq, event_id, uuid, source, event_type, payload_json, created_at,
  delivery, ephemeral]`` — a logged (or live ephemeral) event for the session's subscribers, and for
  its worker streams too when ``inbound`` (one notice for both: broker/redis.py keeps them in order);
- ``["l", body, frame]`` — a :class:`~tether.server.broker.items.Live` frame for subscribers;
- ``["c", body, reason]`` — the session was closed (:class:`SessionClosed`): worker streams end;
- ``["w", env_id]`` — work was queued for an environment (long polls look again);
- ``["k", key, code, reason]`` / ``["u", user_id, role, code, reason]`` — a credential or a role
  fell: open streams close everywhere (server/streams.py);
- ``["s"]`` — the worker-token signing keys changed: every instance re-reads them (auth/service.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tether.server.broker.items import Live, SessionClosed
from tether.server.store.records import StoredEvent


@dataclass(frozen=True)
class KeyClosed:
    """Streams opened under ``key`` (token:…, user:…, work:…) close with ``code``."""

    key: str
    code: int
    reason: str


@dataclass(frozen=True)
class RoleFell:
    """The user's role is now ``role`` (None: gone): streams that hold more close with ``code``."""

    user_id: str
    role: str | None
    code: int
    reason: str


Control = KeyClosed | RoleFell


@dataclass(frozen=True)
class KeysChanged:
    """The signing keys were rotated or one was retired: re-read them from the database."""


KEYS_CHANGED = KeysChanged()


class EventNotice:
    """A logged event on its way out; ``inbound`` is set when its worker notice follows."""

    __slots__ = ("body", "event", "inbound")

    def __init__(self, body: str, event: StoredEvent) -> None:
        self.body = body
        self.event = event
        self.inbound = False


Outgoing = EventNotice | tuple[str, Live | SessionClosed] | tuple[str, None] | Control | KeysChanged


def encode(batch: list[Any]) -> bytes:
    """A batch of outgoing notices (see the module doc) as one bus payload."""
    out: list[list[Any]] = []
    for item in batch:
        if isinstance(item, EventNotice):
            ev = item.event
            out.append(["e", item.body, item.inbound, ev.seq, ev.event_id, ev.uuid, ev.source, ev.event_type,
                        ev.payload_json, ev.created_at, ev.delivery, ev.ephemeral])
        elif isinstance(item, KeyClosed):
            out.append(["k", item.key, item.code, item.reason])
        elif isinstance(item, RoleFell):
            out.append(["u", item.user_id, item.role, item.code, item.reason])
        elif isinstance(item, KeysChanged):
            out.append(["s"])
        else:
            name, value = item
            kind, rest = name[0], name[2:]
            if isinstance(value, Live):
                out.append(["l", rest, value.frame.decode()])
            elif isinstance(value, SessionClosed):
                out.append(["c", rest, value.reason])
            elif kind == "w":
                out.append(["w", rest])
    return orjson.dumps(out)


@dataclass(frozen=True)
class Received:
    """One decoded notice: what it is, and for which session or environment."""

    kind: str  # e | l | c | w | k | u | s
    target: str  # session body, environment id, or "" for controls
    value: StoredEvent | Live | SessionClosed | Control | KeysChanged | None
    inbound: bool = False


class BadEntry(ValueError):
    """A bus entry that no Tether instance writes (another program on the same stream)."""


def decode(payload: bytes) -> list[Received]:
    try:
        raw = orjson.loads(payload)
        return [_decode_one(item) for item in raw]
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
        raise BadEntry(str(exc)) from exc


def _decode_one(item: list[Any]) -> Received:
    kind = item[0]
    if kind == "e":
        (_, body, inbound, seq, event_id, uuid, source, event_type, payload_json, created_at, delivery,
         ephemeral) = item
        ev = StoredEvent(body, int(seq), event_id, uuid, source, event_type, payload_json, float(created_at),
                         delivery, bool(ephemeral))
        return Received("e", body, ev, bool(inbound))
    if kind == "l":
        return Received("l", item[1], Live(item[2].encode()))
    if kind == "c":
        return Received("c", item[1], SessionClosed(item[2]))
    if kind == "w":
        return Received("w", item[1], None)
    if kind == "k":
        return Received("k", "", KeyClosed(item[1], int(item[2]), item[3]))
    if kind == "u":
        return Received("u", "", RoleFell(item[1], item[2], int(item[3]), item[4]))
    if kind == "s":
        return Received("s", "", KEYS_CHANGED)
    raise ValueError(f"unknown notice kind {kind!r}")
