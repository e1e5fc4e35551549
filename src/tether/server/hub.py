"""Fan-out of what a session's writes committed: the one way committed events and frames reach
the broker (docs/protocol.md §4.3, §8.4). Writers (``tether.server.service``) register
:meth:`Hub.publish` / :meth:`Hub.publish_frames` with ``tx.after_commit``, so subscribers see
events in commit (= sequence) order; readers (server/reader.py) subscribe to the session's
client or inbound topic (server/broker/items.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.protocol.session_status import SessionStatus
from tether.server.broker import Broker, Live, SessionClosed, client_topic, inbound_topic
from tether.server.broker import delivery_frame as _delivery_frame
from tether.server.clock import now
from tether.server.store import StoredEvent

__all__ = ["Hub", "Ingest", "Live", "SessionClosed", "delivery_frame"]

MAX_TRACKED_SESSIONS = 100_000  # high-water marks and last session_update frames kept per session


@dataclass
class Ingest:
    """What one write did: the new events, and the frames to fan out after commit."""

    stored: list[StoredEvent] = field(default_factory=list)
    ordered: list[StoredEvent] | None = None  # stored + ephemeral in input order, when there are both
    live: list[Live | SessionClosed] = field(default_factory=list)
    status: SessionStatus | None = None  # the session's status after the write
    title: str | None = None  # its title after the write (None: as it was)
    replies: list[dict[str, Any]] = field(default_factory=list)  # server → worker control responses


def delivery_frame(ev: StoredEvent) -> Live:
    return _delivery_frame(ev.event_id, ev.uuid, ev.seq, ev.delivery or "pending")


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        # last sequence number fanned out per session: the mark ephemeral events carry
        self.hwm: dict[str, int] = {}
        self.last_update: dict[str, bytes] = {}

    def publish(self, body: str, result: Ingest) -> None:
        """Every event to the session's subscribers; the inbound ones (with a delivery state)
        also to its worker streams, which read nothing else (broker/items.py)."""
        clients, inbound, broker = client_topic(body), inbound_topic(body), self.broker
        for ev in result.ordered if result.ordered is not None else result.stored:
            broker.publish(clients, ev)
            if ev.delivery is not None and not ev.ephemeral:
                broker.publish(inbound, ev)
        extra = [ev for ev in result.stored if ev.source == "server"] if result.ordered is not None else []
        for ev in extra:
            broker.publish(clients, ev)
            if ev.delivery is not None:
                broker.publish(inbound, ev)
        if result.stored:
            if len(self.hwm) > MAX_TRACKED_SESSIONS:
                self.hwm.clear()
            self.hwm[body] = max(self.hwm.get(body, 0), max(ev.seq for ev in result.stored))
        self.publish_frames(body, result.live)

    def publish_frames(self, body: str, frames: Sequence[Live | SessionClosed]) -> None:
        """``Live`` frames to the session's subscribers, ``SessionClosed`` to its worker streams."""
        clients = client_topic(body)
        for frame in frames:
            if isinstance(frame, SessionClosed):
                self.broker.publish(inbound_topic(body), frame)
                continue
            if frame.frame.startswith(b'{"type":"session_update"'):
                if self.last_update.get(body) == frame.frame:
                    continue  # the same state again says nothing new
                if len(self.last_update) > MAX_TRACKED_SESSIONS:
                    self.last_update.clear()
                self.last_update[body] = frame.frame
            self.broker.publish(clients, frame)

    def publish_ephemeral(self, body: str, hwm: int, payloads: Sequence[tuple[dict[str, Any], str]]) -> None:
        topic = client_topic(body)
        t = now()
        for payload, text in payloads:
            ev = StoredEvent(body, hwm, "", payload.get("uuid", ""), "worker", payload["type"], text, t,
                             ephemeral=True)
            self.broker.publish(topic, ev)
