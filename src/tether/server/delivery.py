"""Delivery states that streams cause, told at once and written in batches (docs/protocol.md §4.4).

A v1 worker socket moves each inbound event it sends to ``received``, and each control message it
sent to ``processed`` once the worker speaks again. Those moves used to be one write transaction
each, whose ``delivery_update`` went back onto the topic the sending stream itself was reading.
Here a move goes through the :class:`~tether.protocol.delivery.DeliveryLedger`: when it is news,
subscribers get the ``delivery_update`` frame on the session's client topic (worker streams never
read that topic), and the move is written with the next batch — one write transaction per
``delivery_flush_s`` for every session, by the ``delivery-writer`` task of the server's lifespan,
and a last one at shutdown. A crash loses at most one batch: those events are sent to their worker
again, which deduplicates by uuid.

Moves a worker acknowledges itself (CCR v2 W9) are written before the answer, then reported with
:meth:`DeliveryRecorder.saved`, which filters out what subscribers were told already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from tether.protocol.delivery import STATES, DeliveryLedger
from tether.server.broker import Broker, Live, client_topic, delivery_frame
from tether.server.metrics import Metrics
from tether.server.store import Store, StoredEvent

log = logging.getLogger("tether.server.delivery")

MAX_UNSAVED = 10_000  # past this many unwritten moves the writer does not wait for the interval


class DeliveryRecorder:
    def __init__(self, store: Store, broker: Broker, metrics: Metrics, flush_s: float) -> None:
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.flush_s = flush_s
        self.ledger = DeliveryLedger()
        self._due = asyncio.Event()

    def state(self, ev: StoredEvent) -> str | None:
        """The furthest state known for ``ev``: the ledger's, ahead of the row it was read from."""
        return self.ledger.state(ev.session_id, ev.uuid) or ev.delivery

    def moved(self, ev: StoredEvent, status: str) -> None:
        """A stream moved ``ev`` to ``status`` (synchronous: callable from a direct write)."""
        if self.ledger.move(ev.session_id, ev.uuid, status, seen=ev.delivery):
            self.broker.publish(client_topic(ev.session_id), delivery_frame(ev.event_id, ev.uuid, ev.seq, status))
            self._due.set()

    def saved(self, moved: Iterable[StoredEvent]) -> list[Live]:
        """Frames for the moves just written (``ev.delivery`` is the new state) that are news."""
        return [delivery_frame(ev.event_id, ev.uuid, ev.seq, ev.delivery)
                for ev in moved if ev.delivery and self.ledger.saved(ev.session_id, ev.uuid, ev.delivery)]

    async def run(self) -> None:
        """Write what moved, one transaction per interval, until cancelled."""
        while True:
            await self._due.wait()
            self._due.clear()
            if self.ledger.unsaved_count < MAX_UNSAVED:
                await asyncio.sleep(self.flush_s)  # gather the moves of a burst into one write
            try:
                await self.flush()
            except Exception:  # the batch went back into the ledger; the next move retries it
                log.exception("writing delivery states failed")

    async def flush(self) -> int:
        """Write every unwritten move now; the number written."""
        batch = self.ledger.take_unsaved()
        if not batch:
            return 0
        count = 0
        try:
            async with self.store.write() as tx:
                # sessions in one order: on PostgreSQL each move locks its session's row, and two
                # instances flushing the same sessions must not take those locks crosswise
                for session_id, by_state in sorted(batch.items()):
                    for status in STATES:  # in order: an event may have moved twice since
                        uuids = by_state.get(status)
                        if uuids:
                            await tx.events.set_delivery(session_id, uuids=uuids, status=status)
                            count += len(uuids)
        except BaseException:
            self.ledger.restore(batch)
            raise
        self.metrics.inc("delivery_writes_total")
        self.metrics.inc("delivery_moves_written_total", count)
        return count
