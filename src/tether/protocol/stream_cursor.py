"""What a catch-up-then-follow reader of a session's log sends next (docs/protocol.md §4.4, §4.7).

Every stream the server serves from a session's log — the subscribe socket, the v1 worker socket,
the v2 SSE worker stream — reads the log from where its peer stands, then follows the live feed
of committed events, and re-reads the log after the last event it sent when the feed overflowed.
An event can reach it both ways (read from the log, and queued in the feed meanwhile): the cursor
lets each sequence number out once, in order.

A reader that sees every logged event (``contiguous``: a subscriber) also notices a hole: a live
event numbered past the next one means it missed some, and it re-reads the log before going on.
A reader of a filtered log (a worker reads only the inbound events) skips numbers all the time;
for it everything below what it sent counts as seen (``SequenceTracker.advance_to``).

Ephemeral events (``stream_event``) are never stored: they carry the high-water mark of the log
and are always sent live, never deduplicated.
"""

from __future__ import annotations

from typing import Literal

from tether.protocol.sequence import SequenceTracker

__all__ = [
    "StreamCursor",
    "Verdict",
]

Verdict = Literal["send", "skip", "resync"]
"""``send``: the next event for this reader. ``skip``: already sent (or older than where it
started). ``resync``: events are missing before it: read the log after :attr:`StreamCursor.last`
first (the log holds this one too)."""


class StreamCursor:
    __slots__ = ("_contiguous", "_tracker")

    def __init__(self, after: int, *, contiguous: bool) -> None:
        self._tracker = SequenceTracker(after)
        self._contiguous = contiguous

    @property
    def last(self) -> int:
        """The last sequence number sent (or the starting point): where a re-read continues."""
        return self._tracker.high_water

    @property
    def contiguous(self) -> bool:
        return self._contiguous

    def from_log(self, seq: int) -> bool:
        """An event read from the log (in sequence order): send it unless it was sent already."""
        return not self._tracker.seen(seq)

    def live(self, seq: int, *, ephemeral: bool = False) -> Verdict:
        """An event from the live feed."""
        if ephemeral:
            return "send"
        if self._tracker.seen(seq):
            return "skip"
        if self._contiguous and seq > self._tracker.high_water + 1:
            return "resync"
        return "send"

    def sent(self, seq: int) -> None:
        """``seq`` went out: it and everything before it will not be sent again."""
        self._tracker.advance_to(seq)
