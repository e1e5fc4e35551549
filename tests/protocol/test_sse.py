from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.backoff import Backoff
from tether.protocol.sse import (
    ClientEventError,
    SSEDecoder,
    SSEFrame,
    SSEReconnectPolicy,
    is_permanent_status,
    parse_client_event,
    resume_request,
)


def feed(decoder: SSEDecoder, text: str) -> list[SSEFrame]:
    return [f for line in text.split("\n") if (f := decoder.feed_line(line)) is not None]


def test_frames_comments_and_multiline_data() -> None:
    d = SSEDecoder()
    frames = feed(d, ": connected\n\nevent: client_event\nid: 7\ndata: {\"a\":\ndata: 1}\n\n:keepalive\n\n"
                     "data:no-space\n\n")
    assert frames == [SSEFrame("client_event", '{"a":\n1}', "7"), SSEFrame(None, "no-space", "7")]
    assert d.comments == 2 and d.last_event_id == "7"


def test_event_without_data_dispatches_nothing_and_reset_drops_a_half_frame() -> None:
    d = SSEDecoder()
    assert feed(d, "event: ping\n\n") == []
    d.feed_line("event: client_event")
    d.feed_line("data: {")
    assert d.pending
    d.reset()  # the connection broke mid-frame
    assert not d.pending
    assert feed(d, "data: x\n\n") == [SSEFrame(None, "x", None)]


def test_field_rules() -> None:
    d = SSEDecoder()
    assert feed(d, "id: a\0b\nretry: 15\nretry: x\nunknown: y\ndata\n\n") == [SSEFrame(None, "", None, 15)]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.integers(1, 10_000), st.text(alphabet="abc{}\":, ", max_size=30)), max_size=8),
       st.lists(st.integers(0, 5), max_size=8))
def test_decoding_is_independent_of_how_the_stream_is_split(events: list[tuple[int, str]], comments: list[int]) -> None:
    text = ""
    for i, (seq, data) in enumerate(events):
        text += ":keepalive\n\n" * (comments[i] if i < len(comments) else 0)
        text += f"event: client_event\nid: {seq}\ndata: {data}\n\n"
    frames = feed(SSEDecoder(), text)
    assert [(f.id, f.data) for f in frames] == [(str(s), d) for s, d in events]


def event_frame(data: object, frame_id: str | None = "3") -> SSEFrame:
    return SSEFrame("client_event", json.dumps(data), frame_id)


def test_parse_client_event() -> None:
    ev = parse_client_event(event_frame({"event_id": "evt_1", "sequence_num": 3, "event_type": "user",
                                         "source": "client", "payload": {"type": "user", "uuid": "u"},
                                         "created_at": "t"}))
    assert (ev.event_id, ev.sequence_num, ev.event_type, ev.source, ev.payload["uuid"]) == (
        "evt_1", 3, "user", "client", "u")
    # the sequence number falls back to the frame id; the type to the payload's
    ev = parse_client_event(event_frame({"event_id": "e", "payload": {"type": "control_request"}}, "12"))
    assert ev.sequence_num == 12 and ev.event_type == "control_request"
    assert parse_client_event(event_frame({"event_id": "e", "payload": {"type": "x"}}, None)).sequence_num is None


@pytest.mark.parametrize("data", [
    "not json", "[1]", json.dumps({"event_id": "e"}), json.dumps({"event_id": "e", "payload": {"no": "type"}}),
    json.dumps({"payload": {"type": "user"}}), json.dumps({"event_id": "", "payload": {"type": "user"}}),
])
def test_bad_client_events(data: str) -> None:
    with pytest.raises(ClientEventError):
        parse_client_event(SSEFrame("client_event", data, "1"))


def test_resume_request() -> None:
    assert resume_request(0) == ({}, {})
    assert resume_request(42) == ({"from_sequence_num": "42"}, {"Last-Event-ID": "42"})


def test_permanent_statuses() -> None:
    assert is_permanent_status(404) and is_permanent_status(401) and is_permanent_status(403)
    assert not is_permanent_status(401, token_changed=True)
    assert is_permanent_status(404, token_changed=True)
    assert is_permanent_status(410) and is_permanent_status(410, token_changed=True)  # work stopped
    assert not any(is_permanent_status(s) for s in (None, 400, 409, 429, 500, 503))


def test_reconnect_policy_backoff_budget_and_reset() -> None:
    policy = SSEReconnectPolicy()
    rnd = random.Random(1)
    delays = []
    now = 0.0
    for _ in range(12):
        d = policy.ended(None, now, rnd)
        assert d.delay is not None
        delays.append(d.delay)
        now += d.delay
    assert 0.75 <= delays[0] <= 1.25 and all(d <= 37.5 for d in delays) and delays[-1] >= 22.5
    while (d := policy.ended(None, now, rnd)).delay is not None:  # 10 minutes of failures
        now += d.delay
    assert d.reason == "gave_up" and now >= 600 - 37.5
    policy.opened(now)  # an opened stream ends the streak
    assert policy.ended(None, now + 1, rnd).delay is not None
    assert policy.ended(404, now + 2, rnd).reason == "permanent"
    assert policy.ended(401, now + 3, rnd, token_changed=True).reason == "backoff"


def test_reconnect_policy_sleep_detection_restarts_the_budget() -> None:
    policy = SSEReconnectPolicy(Backoff(1.0, 30.0, 0.25, 600.0, 60.0))
    policy.ended(None, 0.0, 0.5)
    policy.ended(None, 500.0, 0.5)  # > 60 s since the previous failure: the machine slept
    assert policy.ended(None, 550.0, 0.5).delay is not None


@pytest.mark.parametrize(("sequence_num", "frame_id", "expected"), [
    (7, "3", 7),
    ("7", "3", 7),
    (0, "3", 0),
    (True, "3", 3),  # a boolean is not a sequence number
    (-1, "3", 3),
    ("7a", "3", 3),
    (1.5, None, None),
    (None, "x", None),
])
def test_client_event_sequence_numbers(sequence_num: object, frame_id: str | None, expected: int | None) -> None:
    ev = parse_client_event(event_frame({"event_id": "e", "sequence_num": sequence_num, "payload": {"type": "user"}},
                                        frame_id))
    assert ev.sequence_num == expected
