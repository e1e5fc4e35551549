"""Work-item leases and environment liveness (docs/protocol.md §4.1, §11.5).

A work item is ``queued`` until a poll hands it out (``delivered``), then ``acked``
by the bridge. Heartbeats and acks keep its lease alive; a lapsed lease lets the
dispatcher re-queue the session. ``stopped`` and ``superseded`` are terminal: their
work id answers heartbeat and ack with 410. Times are float seconds on one clock
chosen by the caller; nothing here reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "DEFAULT_ENVIRONMENT_TTL_S",
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_RECLAIM_OLDER_THAN_S",
    "LIVE_STATES",
    "TERMINAL_STATES",
    "Lease",
    "LeaseGone",
    "LeaseState",
    "LeaseStateError",
    "ack",
    "deliver",
    "deliverable",
    "environment_expired",
    "environment_online",
    "extend",
    "heartbeat",
    "lease_expired",
    "should_redeliver",
    "stop",
    "supersede",
]

LeaseState = Literal["queued", "delivered", "acked", "stopped", "superseded"]
LIVE_STATES: Final[frozenset[str]] = frozenset({"delivered", "acked"})
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"stopped", "superseded"})

DEFAULT_LEASE_TTL_S: Final = 300.0
DEFAULT_RECLAIM_OLDER_THAN_S: Final = 5.0
DEFAULT_POLL_INTERVAL_S: Final = 2.0
DEFAULT_ENVIRONMENT_TTL_S: Final = 4 * 3600.0


class LeaseStateError(ValueError):
    """A transition the lease rules do not allow."""


class LeaseGone(LeaseStateError):
    """The work item is stopped or superseded (maps to 410)."""


@dataclass(frozen=True)
class Lease:
    work_id: str
    state: LeaseState = "queued"
    delivered_at: float | None = None
    lease_expires_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def should_redeliver(item: Lease, now: float, reclaim_older_than_s: float) -> bool:
    """Delivered, never acked, and handed out more than ``reclaim_older_than_s`` ago."""
    return (
        item.state == "delivered"
        and item.delivered_at is not None
        and now - item.delivered_at > reclaim_older_than_s
    )


def deliverable(item: Lease, now: float, reclaim_older_than_s: float) -> bool:
    """A poll may hand this item out: queued, or reclaimable."""
    return item.state == "queued" or should_redeliver(item, now, reclaim_older_than_s)


def lease_expired(item: Lease, now: float) -> bool:
    """A live item whose lease deadline has passed (its session may be re-dispatched)."""
    return item.state in LIVE_STATES and item.lease_expires_at is not None and now >= item.lease_expires_at


def _require_live(item: Lease) -> None:
    if item.terminal:
        raise LeaseGone(f"work {item.work_id} is {item.state}")


def deliver(item: Lease, now: float, ttl: float = DEFAULT_LEASE_TTL_S) -> Lease:
    """Hand the item to a poll (first time or reclaim); starts a lease."""
    _require_live(item)
    if item.state == "acked":
        raise LeaseStateError(f"work {item.work_id} is already acked")
    return replace(item, state="delivered", delivered_at=now, lease_expires_at=now + ttl)


def ack(item: Lease, now: float, ttl: float = DEFAULT_LEASE_TTL_S) -> Lease:
    """The bridge took the item (idempotent for an acked one); refreshes the lease."""
    _require_live(item)
    if item.state == "queued":
        raise LeaseStateError(f"work {item.work_id} was never delivered")
    return replace(item, state="acked", lease_expires_at=now + ttl)


def extend(item: Lease, now: float, ttl: float = DEFAULT_LEASE_TTL_S) -> Lease:
    """Heartbeat: move the deadline to ``now + ttl``. Only live items have a lease."""
    _require_live(item)
    if item.state == "queued":
        raise LeaseStateError(f"work {item.work_id} was never delivered")
    return replace(item, lease_expires_at=now + ttl)


def heartbeat(item: Lease, now: float, ttl: float = DEFAULT_LEASE_TTL_S) -> Lease:
    """A heartbeat from the bridge: the lease moves to ``now + ttl``, and a delivered item counts
    as taken (``acked``: the bridge could not heartbeat work it never received)."""
    extended = extend(item, now, ttl)
    return replace(extended, state="acked") if extended.state == "delivered" else extended


def stop(item: Lease) -> Lease:
    """End the item (idempotent for a stopped one)."""
    if item.state == "superseded":
        raise LeaseGone(f"work {item.work_id} is superseded")
    return replace(item, state="stopped", lease_expires_at=None)


def supersede(item: Lease) -> Lease:
    """A re-dispatch replaced this item (idempotent for a superseded one)."""
    if item.state == "stopped":
        raise LeaseGone(f"work {item.work_id} is stopped")
    return replace(item, state="superseded", lease_expires_at=None)


def environment_online(
    last_poll_at: float | None, now: float, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
) -> bool:
    """Online when the last poll (or work heartbeat) is less than ``2 × max(poll interval, 4 s) + 8 s``
    old (docs/protocol.md §3): a bridge at capacity polls rarely but heartbeats its work, and a
    long poll in progress counts as a poll."""
    return last_poll_at is not None and now - last_poll_at < 2 * max(poll_interval_s, 4.0) + 8.0


def environment_expired(last_poll_at: float, now: float, ttl_s: float = DEFAULT_ENVIRONMENT_TTL_S) -> bool:
    """No poll for more than ``ttl_s`` (default 4 h). Pass the registration time if it never polled."""
    return now - last_poll_at > ttl_s
