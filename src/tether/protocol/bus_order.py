"""Fan-out notices from many server instances, taken in each session's order (docs/protocol.md §4.4).

Scale-out runs several server instances on one database and one bus (Redis). After each commit an
instance publishes a *notice* of every event it logged; the notices of two instances reach a third
in any order. A subscriber's cursor catches a hole itself (it sees every event, and re-reads the
log). A worker's cursor cannot: it reads only the inbound events, so it skips numbers all the time,
and an inbound event whose notice arrives after a later one would count as already sent: lost for
that worker. So an instance takes the notices of each session through :class:`BusOrder`:

- its *watermark* for a session is the number up to which it has seen every notice;
- the next number goes through (``deliver``) and moves the watermark;
- a number past the next one means notices are missing: subscribers still get it (their cursor
  re-reads by itself), worker streams re-read the log (``reread``), and the watermark jumps to it —
  the log already holds every event up to it, because a session's events commit in sequence order;
- a number at or below the watermark is a late notice of an event that went out already or was
  re-read (``drop``).

A session seen for the first time has no watermark: ``reread``. One notice carries one event for
both audiences (subscribers, and workers when it is inbound): two notices of one event could be
separated by another instance's.

:class:`PublisherGaps` notices a lost notice from one publisher (every publisher numbers what it
sends 1, 2, 3 …): a bus that dropped something, trimmed it, or failed a send. Then everything is
re-read and the watermarks start over.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BusOrder",
    "PublisherGaps",
    "Verdict",
]

Verdict = Literal["deliver", "reread", "drop"]
"""``deliver``: the next notice of the session. ``reread``: notices are missing before it: worker
streams re-read the log (subscribers get it all the same). ``drop``: its event already went out."""


class BusOrder:
    """Per-session watermarks of the notices seen, for the sessions someone follows here."""

    __slots__ = ("_marks", "max_sessions")

    def __init__(self, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self._marks: dict[str, int] = {}

    def notice(self, session: str, seq: int) -> Verdict:
        """A notice of logged event ``seq`` of ``session`` (ephemeral events never come here)."""
        mark = self._marks.get(session)
        if mark is None:
            if len(self._marks) >= self.max_sessions:
                self._marks.clear()  # every session starts over with one re-read
            self._marks[session] = seq
            return "reread"
        if seq <= mark:
            return "drop"
        self._marks[session] = seq
        return "deliver" if seq == mark + 1 else "reread"

    def forget(self, session: str) -> None:
        """Nobody follows ``session`` here any more."""
        self._marks.pop(session, None)

    def reset(self) -> None:
        """After a gap on the bus: every follower re-reads; every session starts over."""
        self._marks.clear()

    def watermark(self, session: str) -> int | None:
        return self._marks.get(session)

    def __len__(self) -> int:
        return len(self._marks)


class PublisherGaps:
    """The last number seen from each publisher; a number that does not follow is a gap."""

    __slots__ = ("_last", "max_publishers", "stale_s")

    def __init__(self, max_publishers: int = 10_000, stale_s: float = 3600.0) -> None:
        self.max_publishers = max_publishers
        self.stale_s = stale_s
        self._last: dict[str, tuple[int, float]] = {}

    def entry(self, publisher: str, number: int, now: float) -> bool:
        """Whether ``number`` follows what was seen from ``publisher`` (a publisher seen for the
        first time must start at 1: anything else was missed)."""
        seen = self._last.get(publisher)
        if seen is None and len(self._last) >= self.max_publishers:
            self._prune(now)
        self._last[publisher] = (number, now)
        return number == (seen[0] if seen is not None else 0) + 1

    def knows(self, publisher: str) -> bool:
        return publisher in self._last

    def forget_all(self) -> None:
        """Reading starts over from the bus's end (after an outage): nothing is expected."""
        self._last.clear()

    def expect(self, publisher: str, number: int, now: float) -> None:
        """Count ``number`` as seen from ``publisher`` without judging it (where reading starts)."""
        self._last[publisher] = (number, now)

    def _prune(self, now: float) -> None:
        for publisher, (_n, at) in tuple(self._last.items()):
            if now - at > self.stale_s:
                del self._last[publisher]
        if len(self._last) >= self.max_publishers:
            self._last.clear()
