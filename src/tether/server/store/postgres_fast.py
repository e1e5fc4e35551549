"""The event append on PostgreSQL in one statement (the counterpart of ``sqlite_fast.py``).

On PostgreSQL every statement is a round trip to another process, and on a loaded machine each
one waits for that process to be scheduled: the append used to be three (the uuids already
logged, the insert, ``last_seq`` advanced), each also paying SQLAlchemy's per-statement work.
Here one statement does all three, straight on the asyncpg connection of the transaction: the
new events are those whose ``uuid`` the log does not hold yet (read after the session row was
locked, so under READ COMMITTED this statement's snapshot sees every earlier writer's events),
numbered after ``last_seq`` in the order given, inserted, and the session row advanced when any
were. Duplicates inside the batch are removed by the caller (first one wins), as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.server.store.records import StoredEvent

__all__ = ["APPEND", "append_args", "stored_from"]

APPEND = """
WITH item AS (
    SELECT u.ord, u.uuid, u.event_id, u.source, u.event_type, u.payload, u.delivery
    FROM unnest($2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[], $6::text[], $7::varchar[])
         WITH ORDINALITY AS u(uuid, event_id, source, event_type, payload, delivery, ord)
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.session_id = $1 AND e.uuid = u.uuid)
), ins AS (
    INSERT INTO events (session_id, seq, event_id, uuid, source, event_type, payload, delivery, created_at)
    SELECT $1, $8 + row_number() OVER (ORDER BY ord), event_id, uuid, source, event_type, payload, delivery, $9
    FROM item
    RETURNING seq, uuid
), adv AS (
    UPDATE sessions SET last_seq = $8 + (SELECT count(*) FROM ins), updated_at = $9
    WHERE id = $1 AND EXISTS (SELECT 1 FROM ins)
)
SELECT seq, uuid FROM ins
"""


def append_args(body: str, last_seq: int, candidates: Sequence[StoredEvent], now: float) -> list[Any]:
    """The statement's parameters for ``candidates`` (numbered provisionally; the database renumbers
    the ones it keeps)."""
    return [body, [ev.uuid for ev in candidates], [ev.event_id for ev in candidates],
            [ev.source for ev in candidates], [ev.event_type for ev in candidates],
            [ev.payload_json for ev in candidates], [ev.delivery for ev in candidates], last_seq, now]


def stored_from(rows: Sequence[Any], candidates: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The events the statement inserted, in sequence order, with the numbers it gave them."""
    seq_of = {row[1]: row[0] for row in rows}
    kept = [ev for ev in candidates if ev.uuid in seq_of]
    for ev in kept:
        ev.seq = seq_of[ev.uuid]
    kept.sort(key=lambda ev: ev.seq)
    return kept
