"""What the broker carries: one closed set of item types per kind of topic.

A session has two topics. Its *client* topic carries everything a subscriber shows: the logged
events (and live ephemeral ones) in sequence order, and :class:`Live` frames that are not events
(``session_update``, ``delivery_update``). Its *inbound* topic carries only what a worker reads —
the logged events with a delivery state — and :class:`SessionClosed`: a worker stream is never
woken by its own output or by the delivery notices its own sends cause. An environment's *work*
topic carries :class:`WorkQueued` wake-ups for long polls.

Every subscription can also receive :class:`ServerClosing` (broadcast at shutdown) and
:class:`Revoked` (its holder's credential or work ended, server/streams.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar

import orjson

from tether.server.store.records import StoredEvent, ws_text_frame


class ServerClosing:
    """Broadcast to every subscription when the server begins to shut down: streams end now
    (clients resume elsewhere or after the restart) instead of holding up the graceful exit."""


SERVER_CLOSING = ServerClosing()


class Revoked:
    """Put into one subscription by its stream's holder (server/streams.py): the credential or
    work it was opened with is gone; the stream ends with the holder's close code."""


REVOKED = Revoked()


@dataclass(frozen=True)
class SessionClosed:
    """On a session's inbound topic when it is archived: worker streams end (sockets close 4001)."""

    reason: str = "archived"


@dataclass(frozen=True)
class Live:
    """A frame for subscribers that is not a logged event (session_update, delivery_update)."""

    frame: bytes

    @cached_property
    def ws_frame(self) -> bytes:
        """``frame`` as a complete WebSocket text frame (built once for all subscribers)."""
        return ws_text_frame(self.frame)


class WorkQueued:
    """On an environment's work topic: a work item was queued, a long poll looks again."""


WORK_QUEUED = WorkQueued()

ClientItem = StoredEvent | Live | ServerClosing | Revoked
InboundItem = StoredEvent | SessionClosed | ServerClosing | Revoked
WorkItem = WorkQueued | ServerClosing

T = TypeVar("T")


class Topic(Generic[T]):
    """A topic's name, typed by what is published on it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Topic({self.name!r})"


def client_topic(body: str) -> Topic[StoredEvent | Live]:
    return Topic(f"s:{body}")


def inbound_topic(body: str) -> Topic[StoredEvent | SessionClosed]:
    return Topic(f"i:{body}")


def work_topic(env_id: str) -> Topic[WorkQueued]:
    return Topic(f"w:{env_id}")


def delivery_frame(event_id: str, uuid: str, seq: int, status: str) -> Live:
    """The ``delivery_update`` frame subscribers get when an inbound event's state moves (§8.4)."""
    return Live(orjson.dumps({"type": "delivery_update", "event_id": event_id, "uuid": uuid,
                              "sequence_num": seq, "status": status}))
