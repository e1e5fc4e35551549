"""Fan-out of what a session's writes committed: the one way committed events and frames reach
the broker (docs/protocol.md §4.3, §8.4). Writers (``tether.server.service``) register
:meth:`Hub.publish` / :meth:`Hub.publish_frames` with ``tx.after_commit``, so subscribers see
events in commit (= sequence) order; readers subscribe to :func:`session_topic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from tether.protocol.session_status import SessionStatus
from tether.server.broker import Broker
from tether.server.clock import now
from tether.server.store import StoredEvent
from tether.server.store.records import ws_text_frame

__all__ = ["Hub", "Ingest", "Live", "SessionClosed", "delivery_frame", "session_topic"]

MAX_TRACKED_SESSIONS = 100_000  # high-water marks and last session_update frames kept per session


def session_topic(body: str) -> str:
    return f"s:{body}"


@dataclass(frozen=True)
class SessionClosed:
    """Published on a session topic when it is archived: worker sockets close with 4001."""

    reason: str = "archived"


@dataclass(frozen=True)
class Live:
    """A non-log frame for subscribers (session_update, delivery_update)."""

    frame: bytes
    to_worker: bool = False

    @cached_property
    def ws_frame(self) -> bytes:
        """``frame`` as a complete WebSocket text frame (built once for all subscribers)."""
        return ws_text_frame(self.frame)


@dataclass
class Ingest:
    """What one write did: the new events, and the frames to fan out after commit."""

    stored: list[StoredEvent] = field(default_factory=list)
    ordered: list[StoredEvent] | None = None  # stored + ephemeral in input order, when there are both
    live: list[Any] = field(default_factory=list)
    status: SessionStatus | None = None  # the session's status after the write
    title: str | None = None  # its title after the write (None: as it was)
    replies: list[dict[str, Any]] = field(default_factory=list)  # server → worker control responses


def delivery_frame(ev: StoredEvent) -> Live:
    return Live(orjson.dumps({
        "type": "delivery_update", "event_id": ev.event_id, "uuid": ev.uuid, "sequence_num": ev.seq,
        "status": ev.delivery,
    }))


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        # last sequence number fanned out per session: the mark ephemeral events carry
        self.hwm: dict[str, int] = {}
        self.last_update: dict[str, bytes] = {}

    def publish(self, body: str, result: Ingest) -> None:
        topic = session_topic(body)
        for ev in result.ordered if result.ordered is not None else result.stored:
            self.broker.publish(topic, ev)
        extra = [ev for ev in result.stored if ev.source == "server"] if result.ordered is not None else []
        for ev in extra:
            self.broker.publish(topic, ev)
        if result.stored:
            if len(self.hwm) > MAX_TRACKED_SESSIONS:
                self.hwm.clear()
            self.hwm[body] = max(self.hwm.get(body, 0), max(ev.seq for ev in result.stored))
        self.publish_frames(body, result.live)

    def publish_frames(self, body: str, frames: Sequence[Any]) -> None:
        topic = session_topic(body)
        for frame in frames:
            if isinstance(frame, Live) and frame.frame.startswith(b'{"type":"session_update"'):
                if self.last_update.get(body) == frame.frame:
                    continue  # the same state again says nothing new
                if len(self.last_update) > MAX_TRACKED_SESSIONS:
                    self.last_update.clear()
                self.last_update[body] = frame.frame
            self.broker.publish(topic, frame)

    def publish_ephemeral(self, body: str, hwm: int, payloads: Sequence[tuple[dict[str, Any], str]]) -> None:
        topic = session_topic(body)
        t = now()
        for payload, text in payloads:
            ev = StoredEvent(body, hwm, "", payload.get("uuid", ""), "worker", payload["type"], text, t,
                             ephemeral=True)
            self.broker.publish(topic, ev)
