"""Whether a credential that was good when a socket or stream opened still is (pure rules).

Two questions come up on every client action and whenever the server revokes something:

* **roles** — a socket holds the role its user had at connect time; when that role falls
  below what the socket holds, the socket must close (docs/protocol.md §1, §4.7).
* **worker tokens** — a worker token names one work item; its writes need that item to be
  live (docs/protocol.md §4.1, §4.4). A token whose item was superseded or stopped while the
  session went on with a newer item was *replaced* (the bridge that hosts the session adopts
  the new token: refuse with 401 so the writer keeps its events and retries with the new
  one); a token whose item ended with no successor is *gone* (410: stop that worker).
"""

from __future__ import annotations

from typing import Final, Literal

ROLE_RANK: Final[dict[str, int]] = {"viewer": 0, "member": 1, "owner": 2}
LIVE_WORK_STATES: Final[frozenset[str]] = frozenset({"queued", "delivered", "acked"})
ENDED_WORK_STATES: Final[frozenset[str]] = frozenset({"stopped", "superseded"})

WorkVerdict = Literal["live", "replaced", "gone"]


def role_rank(role: str) -> int:
    """An unknown role ranks below every known one (it may do nothing)."""
    return ROLE_RANK.get(role, -1)


def role_fell(held: str, now: str | None) -> bool:
    """True when a socket opened with ``held`` must close because its user's role is now
    ``now`` (``None``: the user is gone)."""
    return now is None or role_rank(now) < role_rank(held)


def work_verdict(state: str | None, *, successor_live: bool) -> WorkVerdict:
    """What a worker token's work item in ``state`` allows (``None``: no such item).

    ``successor_live``: the session has another live work item (only asked about when the
    token's own item has ended).
    """
    if state in LIVE_WORK_STATES:
        return "live"
    return "replaced" if successor_live else "gone"
