"""The worker-token key ring as each server instance holds it, and what changed since (pure).

Signing keys live in the database (docs/protocol.md §9.2). Every instance holds them in memory,
so that verifying a worker token never reads the database; it re-reads the key table when told
that the keys changed (a notice on the bus) and every ``key_refresh_s`` regardless. What it then
does follows from :func:`key_changes`: a new or newly active key is used from then on, a key that
is gone (retired) verifies nothing any more and the streams opened with its tokens close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["KeyChanges", "active_kid", "key_changes"]


@dataclass(frozen=True)
class KeyChanges:
    added: frozenset[str]
    retired: frozenset[str]  # gone from the table (or its secret replaced): its tokens are refused
    active_changed: bool

    @property
    def any(self) -> bool:
        return bool(self.added or self.retired or self.active_changed)


def active_kid(rows: Sequence[tuple[str, bool]]) -> str:
    """The key new tokens are signed with: the newest row marked active (rows oldest first), or the
    newest row when none is (a table edited by hand). ``rows`` must not be empty."""
    if not rows:
        raise ValueError("no signing keys")
    marked = [kid for kid, active in rows if active]
    return marked[-1] if marked else rows[-1][0]


def key_changes(held: Mapping[str, str], held_active: str, stored: Mapping[str, str],
                stored_active: str) -> KeyChanges:
    """What differs between the ring an instance holds and the keys just read (kid → secret)."""
    retired = frozenset(kid for kid, secret in held.items() if stored.get(kid) != secret)
    added = frozenset(kid for kid, secret in stored.items() if held.get(kid) != secret)
    return KeyChanges(added, retired, held_active != stored_active)
