"""Sequence numbers of a session's event log: receive-side dedup.

The server numbers every stored event 1, 2, 3 … per session (docs/protocol.md §4.3). A
reader (SSE worker, subscribe client) remembers what it has seen so that a
reconnect replay never delivers an event twice, and resumes from the highest
number seen (``from_sequence_num`` / ``Last-Event-ID``, docs/protocol.md §8.3).
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_WINDOW",
    "Observation",
    "SequenceTracker",
]

Observation = Literal["new", "gap", "duplicate"]
"""``new``: first sighting, no hole before it. ``gap``: first sighting, numbers
between the previous high-water mark and it are missing (it is still accepted).
``duplicate``: already seen (or too old to tell): drop it."""

DEFAULT_MAX_ENTRIES: Final = 1000
DEFAULT_WINDOW: Final = 200


class SequenceTracker:
    """Seen sequence numbers, bounded.

    Everything at or below ``floor`` counts as seen. The floor advances over
    contiguous runs, so in the common in-order case the set stays empty. When holes
    keep more than ``max_entries`` numbers in the set, the floor jumps to
    ``high_water - window`` (the reference prunes the same way; the window is
    capped at ``max_entries`` so the bound always holds): a number that old
    which never arrived is then treated as a duplicate. That errs on the side of
    never delivering twice, which is what an append-only replayed log needs.
    """

    __slots__ = ("_floor", "_high_water", "_max_entries", "_seen", "_window")

    def __init__(
        self, start: int = 0, *, max_entries: int = DEFAULT_MAX_ENTRIES, window: int = DEFAULT_WINDOW
    ) -> None:
        _check_seq(start)
        if max_entries < 1 or window < 0:
            raise ValueError("max_entries must be >= 1 and window >= 0")
        self._floor = start
        self._high_water = start
        self._seen: set[int] = set()
        self._max_entries = max_entries
        self._window = window

    @property
    def high_water(self) -> int:
        """Highest sequence number seen (the ``start`` when none)."""
        return self._high_water

    @property
    def resume_from(self) -> int:
        """Value for ``from_sequence_num`` / ``Last-Event-ID`` on reconnect."""
        return self._high_water

    @property
    def floor(self) -> int:
        return self._floor

    def __len__(self) -> int:
        """Numbers held individually above the floor (bounded by ``max_entries``)."""
        return len(self._seen)

    def seen(self, seq: int) -> bool:
        return seq <= self._floor or seq in self._seen

    def observe(self, seq: int) -> Observation:
        """Record ``seq`` and classify it."""
        _check_seq(seq)
        if self.seen(seq):
            return "duplicate"
        result: Observation = "gap" if seq > self._high_water + 1 else "new"
        self._seen.add(seq)
        self._high_water = max(self._high_water, seq)
        self._advance_floor()
        if len(self._seen) > self._max_entries:
            self._prune()
        return result

    def advance_to(self, seq: int) -> None:
        """Count every number up to ``seq`` as seen.

        For an in-order reader of a *filtered* log (a worker stream reads only the inbound
        events): the numbers it skipped were never meant for it, and none below ``seq`` can
        still come, so they collapse into the floor instead of filling the set."""
        _check_seq(seq)
        if seq > self._floor:
            self._floor = seq
            self._high_water = max(self._high_water, seq)
            self._seen = {s for s in self._seen if s > seq} if self._seen else self._seen
            self._advance_floor()

    def _advance_floor(self) -> None:
        while self._floor + 1 in self._seen:
            self._floor += 1
            self._seen.remove(self._floor)

    def _prune(self) -> None:
        # At most min(window, max_entries) numbers can remain above the new floor.
        self._floor = max(self._floor, self._high_water - min(self._window, self._max_entries))
        self._seen = {s for s in self._seen if s > self._floor}
        self._advance_floor()


def _check_seq(seq: object) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"sequence number must be a non-negative integer, got {seq!r}")
