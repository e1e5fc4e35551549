"""The catch-up-then-follow decision (tether.protocol.stream_cursor): each sequence number goes
out once and in order, whether it comes from the log or the live feed; a reader of the whole log
re-reads when the feed skipped a number; a worker's filtered reader does not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.stream_cursor import StreamCursor


def test_log_then_live_overlap_sends_each_event_once() -> None:
    cursor = StreamCursor(3, contiguous=True)
    sent = []
    for seq in (4, 5, 6):  # the catch-up read
        if cursor.from_log(seq):
            sent.append(seq)
            cursor.sent(seq)
    for seq in (5, 6, 7):  # queued in the feed meanwhile
        if cursor.live(seq) == "send":
            sent.append(seq)
            cursor.sent(seq)
    assert sent == [4, 5, 6, 7] and cursor.last == 7


def test_a_hole_in_the_feed_means_resync_for_a_contiguous_reader_only() -> None:
    whole = StreamCursor(10, contiguous=True)
    assert whole.live(11) == "send"
    assert whole.live(13) == "resync", "12 is missing: read the log after 10 first"
    assert whole.last == 10, "deciding changes nothing"
    filtered = StreamCursor(10, contiguous=False)
    assert filtered.live(13) == "send", "a worker reads only inbound events: holes are normal"
    filtered.sent(13)
    assert filtered.live(12) == "skip" and filtered.from_log(11) is False


def test_events_at_or_before_the_start_are_skipped_and_ephemeral_ones_always_sent() -> None:
    cursor = StreamCursor(5, contiguous=True)
    assert cursor.live(5) == "skip" and cursor.live(4) == "skip" and not cursor.from_log(5)
    assert cursor.live(5, ephemeral=True) == "send"
    assert cursor.live(99, ephemeral=True) == "send", "an ephemeral event carries the high-water mark, not a slot"
    assert cursor.contiguous


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=80), st.integers(min_value=0, max_value=20))
def test_whatever_arrives_what_goes_out_is_strictly_increasing(arrivals: list[int], start: int) -> None:
    cursor = StreamCursor(start, contiguous=False)
    out = []
    for seq in arrivals:
        if cursor.live(seq) == "send":
            out.append(seq)
            cursor.sent(seq)
    assert out == sorted(set(out)) and all(s > start for s in out)
