"""Whether a credential that was good when a socket or stream opened still is (pure rules).

Two questions come up on every client action and whenever the server revokes something:

* **roles** — a socket holds the role its user had at connect time; when that role falls
  below what the socket holds, the socket must close (docs/protocol.md §1, §4.7).
* **worker tokens** — a worker token names one work item; its writes need that item to be
  live (docs/protocol.md §4.1, §4.4). A token whose item was superseded or stopped while the
  session went on with a newer item is handed over: it keeps writing until the newer item was
  acknowledged (the bridge that hosts the session adopts the new token, then acks) and for a
  short grace after that (writes already in flight), then it is *replaced* (401: the writer
  keeps its events and sends them again with the new token). A token whose item ended with no
  successor is *gone* (410: stop that worker).
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "ENDED_WORK_STATES",
    "LIVE_WORK_STATES",
    "NO_SUCCESSOR",
    "ROLE_RANK",
    "CredentialVerdict",
    "NoSuccessor",
    "WorkVerdict",
    "credential_verdict",
    "role_fell",
    "role_rank",
    "work_verdict",
]

ROLE_RANK: Final[dict[str, int]] = {"viewer": 0, "member": 1, "owner": 2}
LIVE_WORK_STATES: Final[frozenset[str]] = frozenset({"queued", "delivered", "acked"})
ENDED_WORK_STATES: Final[frozenset[str]] = frozenset({"stopped", "superseded"})

WorkVerdict = Literal["live", "replaced", "gone"]
CredentialVerdict = Literal["valid", "revoked", "expired"]


def role_rank(role: str) -> int:
    """An unknown role ranks below every known one (it may do nothing)."""
    return ROLE_RANK.get(role, -1)


def role_fell(held: str, now: str | None) -> bool:
    """True when a socket opened with ``held`` must close because its user's role is now
    ``now`` (``None``: the user is gone)."""
    return now is None or role_rank(now) < role_rank(held)


def credential_verdict(revoked: bool, expires_at: float | None, now: float) -> CredentialVerdict:
    """Whether an opaque credential (token, login link, device code) may still be used: never once
    revoked, nor from its expiry on (``None``: it does not expire)."""
    if revoked:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "valid"


class NoSuccessor:
    """The session has no live work item after the token's own."""


NO_SUCCESSOR: Final = NoSuccessor()


def work_verdict(state: str | None, *, successor_acked_at: float | NoSuccessor | None = NO_SUCCESSOR,
                 now: float = 0.0, handover_s: float = 0.0) -> WorkVerdict:
    """What a worker token's work item in ``state`` allows (``None``: no such item).

    ``successor_acked_at``: when the session's live successor item was acknowledged (None: not
    yet), or :data:`NO_SUCCESSOR`; only asked about once the token's own item has ended.
    """
    if state in LIVE_WORK_STATES:
        return "live"
    if isinstance(successor_acked_at, NoSuccessor):
        return "gone"
    if successor_acked_at is None or now - successor_acked_at < handover_s:
        return "live"  # handed over, not yet taken over
    return "replaced"
