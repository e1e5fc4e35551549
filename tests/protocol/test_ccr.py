from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.ccr import (
    CLOSE_EPOCH_SUPERSEDED,
    CLOSE_SESSION_GONE,
    CLOSE_UNAUTHORIZED,
    DeliveryQueue,
    DeliveryTracker,
    RequestHealth,
    WorkerStateQueue,
    WorkerStatusTracker,
    api_base_of_session_url,
    awaiting_fresh_token,
    event_envelope,
    heartbeat_delay,
    is_ephemeral_event,
    merge_patches,
    session_id_of_url,
    session_url_from_sdk_url,
    stop_code,
    token_expiry,
)


def test_session_url_from_sdk_url() -> None:
    assert session_url_from_sdk_url("https://h.example/v1/code/sessions/cse_abc/") == \
        "https://h.example/v1/code/sessions/cse_abc"
    assert session_url_from_sdk_url("wss://api.anthropic.com/v1/session_ingress/ws/session_x") == \
        "https://api.anthropic.com/v1/session_ingress/ws/session_x"
    assert session_url_from_sdk_url("ws://127.0.0.1:8/p/v1/code/sessions/cse_x/worker/events/stream") == \
        "http://127.0.0.1:8/p/v1/code/sessions/cse_x"
    assert session_id_of_url("https://h/v1/code/sessions/cse_abc") == "cse_abc"
    for bad in ("ftp://h/x", "https:///x", "https://h/v1/code/sessions/a.b"):
        with pytest.raises(ValueError):
            session_url_from_sdk_url(bad)


def jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256'})}.{part(claims)}.sig"


def test_token_expiry() -> None:
    assert token_expiry(jwt({"exp": 1700000000})) == 1700000000.0
    assert token_expiry("sk-ant-si-" + jwt({"exp": 5})) == 5.0
    assert token_expiry(jwt({"sub": "x"})) is None
    assert token_expiry(jwt({"exp": True})) is None
    assert token_expiry("opaque-token") is None
    assert token_expiry("a.!!!.c") is None


def test_request_health_classification() -> None:
    h = RequestHealth()
    assert h.observe(200) == "ok" and h.observe(204) == "ok"
    assert h.observe(None) == "retry"
    assert h.observe(429) == h.observe(500) == h.observe(503) == h.observe(408) == "retry"
    assert h.observe(400) == h.observe(413) == h.observe(422) == "drop"
    assert h.observe(409) == "superseded"
    assert h.observe(409, error_type="epoch_superseded") == "superseded"
    assert h.observe(409, error_type="already_archived") == "gone"  # archived: an end, not a takeover
    assert h.observe(410) == "gone"  # the worker token's work was stopped: stop at once
    assert h.observe(401, token_expired=True) == "unauthorized"


def test_an_expired_token_is_awaited_only_within_the_grace() -> None:
    token = jwt({"exp": 1000})
    assert not awaiting_fresh_token(token, 1010.0, 0.0), "no grace: a worker nobody refreshes stops"
    assert awaiting_fresh_token(token, 1010.0, 600.0)
    assert awaiting_fresh_token(token, 996.0, 600.0), "within the clock skew of its exp"
    assert not awaiting_fresh_token(token, 900.0, 600.0), "a live token refused is not an expiry"
    assert not awaiting_fresh_token(token, 1600.0, 600.0), "the grace ran out"
    assert not awaiting_fresh_token("opaque", 1010.0, 600.0)


def test_an_awaited_token_refusal_is_retried_without_counting() -> None:
    h = RequestHealth()
    assert [h.observe(401, token_expired=True, awaiting_token=True) for _ in range(50)] == ["retry"] * 50
    assert h.auth_failures == 0
    assert h.observe(401, token_expired=True) == "unauthorized"


def test_ten_consecutive_auth_failures_stop_and_a_success_resets() -> None:
    h = RequestHealth()
    assert [h.observe(401 if i % 2 else 403) for i in range(9)] == ["retry"] * 9
    assert h.observe(200) == "ok"
    assert [h.observe(401) for _ in range(9)] == ["retry"] * 9
    assert h.observe(403) == "unauthorized"


def test_three_consecutive_404s_mean_the_session_is_gone() -> None:
    h = RequestHealth()
    assert [h.observe(404) for _ in range(2)] == ["retry", "retry"]
    h.observe(200)
    assert [h.observe(404) for _ in range(3)] == ["retry", "retry", "gone"]
    assert (stop_code("superseded"), stop_code("unauthorized"), stop_code("gone")) == (
        CLOSE_EPOCH_SUPERSEDED, CLOSE_UNAUTHORIZED, CLOSE_SESSION_GONE)



@pytest.mark.parametrize(("auth", "not_found"), [(0, 3), (10, 0)])
def test_request_health_limits_must_be_positive(auth: int, not_found: int) -> None:
    with pytest.raises(ValueError):
        RequestHealth(auth, not_found)


def test_heartbeat_delay_is_twenty_seconds_plus_minus_ten_percent() -> None:
    rnd = random.Random(3)
    delays = [heartbeat_delay(20.0, 0.1, rnd) for _ in range(500)]
    assert 18.0 <= min(delays) < 18.5 and 21.5 < max(delays) <= 22.0
    assert heartbeat_delay(20.0, 0.1, 0.5) == 20.0
    with pytest.raises(ValueError):
        heartbeat_delay(0, 0.1, 0.5)


def test_ephemeral_events() -> None:
    assert is_ephemeral_event({"type": "stream_event"})
    assert is_ephemeral_event({"type": "system", "subtype": "thinking_tokens"})
    assert not is_ephemeral_event({"type": "system", "subtype": "init"})
    assert event_envelope({"type": "stream_event", "uuid": "u"}) == {
        "payload": {"type": "stream_event", "uuid": "u"}, "ephemeral": True}
    assert event_envelope({"type": "assistant", "uuid": "u"}) == {"payload": {"type": "assistant", "uuid": "u"}}


def test_merge_patches_keeps_null_and_merges_metadata_one_level() -> None:
    a = {"worker_status": "running", "external_metadata": {"a": 1, "b": {"x": 1}}}
    b = {"worker_status": "idle", "external_metadata": {"a": None, "b": {"y": 2}}, "internal_metadata": {"c": 3}}
    assert merge_patches(a, b) == {"worker_status": "idle", "external_metadata": {"a": None, "b": {"y": 2}},
                                   "internal_metadata": {"c": 3}}


def test_worker_state_queue_one_in_flight_one_pending() -> None:
    q = WorkerStateQueue()
    assert q.take() is None and q.idle
    assert q.report_state("running")
    first = q.take()
    assert first == {"worker_status": "running", "requires_action_details": None}
    assert q.take() is None  # one in flight at a time
    assert not q.report_state("running")  # identical: suppressed
    q.report_metadata(external={"model": "m"})
    q.report_state("requires_action", {"tool_name": "Bash", "request_id": "r"})
    q.report_metadata(external={"pending_action": {"x": 1}}, internal={"cost": 1})
    # the in-flight PUT failed: it is resent with everything reported since merged over it
    again = q.failed()
    assert again == {"worker_status": "requires_action",
                     "requires_action_details": {"tool_name": "Bash", "request_id": "r"},
                     "external_metadata": {"model": "m", "pending_action": {"x": 1}},
                     "internal_metadata": {"cost": 1}}
    assert q.pending is None and q.take() is None
    q.succeeded()
    assert q.idle
    assert q.report_state("requires_action", {"tool_name": "Bash", "request_id": "other"})  # new details
    with pytest.raises(ValueError):
        q.report_state("bogus")



def test_worker_state_queue_failure_without_a_patch_in_flight_is_a_bug() -> None:
    q = WorkerStateQueue()
    q.report_state("running")
    with pytest.raises(RuntimeError, match="no patch in flight"):
        q.failed()
    assert q.take() is not None and q.failed() == {"worker_status": "running", "requires_action_details": None}


def test_empty_metadata_reports_queue_nothing() -> None:
    q = WorkerStateQueue()
    q.report_metadata()
    q.report_metadata(external={}, internal={})
    assert q.idle and q.take() is None


@settings(deadline=None, max_examples=80)
@given(st.lists(st.one_of(st.sampled_from(["idle", "running", "requires_action"]),
                          st.dictionaries(st.sampled_from("abc"), st.one_of(st.none(), st.integers(0, 3)),
                                          max_size=2),
                          st.sampled_from(["take", "ok", "fail"])), max_size=30))
def test_worker_state_queue_converges_to_the_last_reports(ops: list[object]) -> None:
    """Whatever fails or succeeds in between, once everything went out the server holds the
    last status reported and every metadata key's last value."""
    q = WorkerStateQueue()
    server: dict[str, object] = {}
    meta: dict[str, object] = {}
    last_status: str | None = None

    def apply(patch: dict[str, object]) -> None:
        for key, value in patch.items():
            if key == "external_metadata":
                assert isinstance(value, dict)
                cur = dict(server.get(key) or {})  # type: ignore[call-overload]
                for k, v in value.items():
                    if v is None:
                        cur.pop(k, None)
                    else:
                        cur[k] = v
                server[key] = cur
            else:
                server[key] = value

    for op in ops:
        if isinstance(op, dict):
            q.report_metadata(external=op)
            meta.update(op)
        elif op in ("idle", "running", "requires_action"):
            q.report_state(str(op))
            last_status = str(op)
        elif op == "take":
            q.take()
        elif op == "ok" and q.in_flight is not None:
            apply(q.in_flight)
            q.succeeded()
        elif op == "fail" and q.in_flight is not None:
            q.failed()
    while not q.idle:
        patch = q.in_flight or q.take()
        assert patch is not None
        apply(patch)
        q.succeeded()
    if last_status is not None:
        assert server["worker_status"] == last_status
    expected = {k: v for k, v in meta.items() if v is not None}
    assert server.get("external_metadata", {}) == expected


def test_delivery_queue_batches_dedup_and_put_back() -> None:
    q = DeliveryQueue()
    for i in range(70):
        q.add(f"e{i}", "received")
    assert not q.add("e0", "received") and q.add("e0", "processed")
    first = q.take()
    assert len(first) == 64 and first[0] == {"event_id": "e0", "status": "received"}
    q.add("late", "received")
    q.put_back(first)  # failed: it goes first again
    again = q.take()
    assert again == first
    rest = q.take()
    assert [u["event_id"] for u in rest] == ["e64", "e65", "e66", "e67", "e68", "e69", "e0", "late"]
    assert q.take() == [] and len(q) == 0
    small = DeliveryQueue(capacity=2)
    small.add("a", "received")
    small.add("b", "received")
    small.add("c", "received")
    assert small.dropped == 1 and [u["event_id"] for u in small.take()] == ["b", "c"]



def test_delivery_queue_put_back_never_duplicates_an_update_queued_again() -> None:
    q = DeliveryQueue()
    q.add("a", "received")
    q.add("b", "received")
    batch = q.take()
    q.add("b", "received")  # reported again while the failed batch was in flight
    q.put_back(batch)
    assert q.take() == [{"event_id": "a", "status": "received"}, {"event_id": "b", "status": "received"}]
    assert len(q) == 0


def test_delivery_queue_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DeliveryQueue(capacity=0)


def test_delivery_tracker_processing_and_processed() -> None:
    t = DeliveryTracker()
    p1 = {"type": "user", "uuid": "p1", "message": {"role": "user", "content": "a"}}
    p2 = {"type": "user", "uuid": "p2", "message": {"role": "user", "content": "b"}}
    assert t.inbound(p1) == [] and t.inbound(p2) == []
    assert t.inbound({"type": "control_request", "uuid": "c1", "request_id": "r"}) == [("c1", "processed")]
    assert t.inbound({"type": "control_response"}) == []  # no uuid: nothing to key an ack on
    assert t.outbound({**p1, "isReplay": True}) == [("p1", "processing")]
    assert t.outbound({**p1, "isReplay": True}) == []  # a second echo changes nothing
    assert t.outbound({"type": "assistant"}) == []
    assert t.outbound({"type": "result"}) == [("p1", "processed")]
    assert t.waiting == ("p2",) and t.started == ()
    # without an echo, a result finishes the oldest waiting prompt
    assert t.outbound({"type": "result"}) == [("p2", "processed")]
    # a re-delivery of something processed is acknowledged again
    assert t.inbound(p1) == [("p1", "processed")]
    assert t.outbound({"type": "result"}) == []



def test_delivery_tracker_a_prompt_redelivered_while_it_runs_stays_started() -> None:
    t = DeliveryTracker()
    p1 = {"type": "user", "uuid": "p1", "message": {"role": "user", "content": "a"}}
    t.inbound(p1)
    assert t.outbound({**p1, "isReplay": True}) == [("p1", "processing")]
    assert t.inbound(p1) == [], "not acknowledged twice, not waiting again"
    assert t.waiting == () and t.started == ("p1",)
    assert t.outbound({"type": "result"}) == [("p1", "processed")]


def test_worker_status_tracker() -> None:
    s = WorkerStatusTracker()
    assert s.outbound({"type": "user", "isReplay": True}) == ("running", None)
    assert s.outbound({"type": "system", "subtype": "init"}) is None  # already running
    ask = {"type": "control_request", "request_id": "r1", "request": {
        "subtype": "can_use_tool", "tool_name": "Bash", "description": "run it", "tool_use_id": "t1"}}
    status, details = s.outbound(ask) or ("", None)
    assert status == "requires_action" and details == {
        "tool_name": "Bash", "action_description": "run it", "request_id": "r1", "tool_use_id": "t1"}
    assert s.inbound({"type": "control_response", "response": {"request_id": "other"}}) is None
    assert s.inbound({"type": "control_response", "response": {"subtype": "success", "request_id": "r1"}}) == (
        "running", None)
    s.outbound(ask)
    assert s.outbound({"type": "control_cancel_request", "request_id": "r1"}) == ("running", None)
    assert s.outbound({"type": "result"}) == ("idle", None)
    assert s.outbound({"type": "result"}) is None



def test_worker_status_tracker_ignores_what_does_not_change_the_status() -> None:
    s = WorkerStatusTracker()
    s.outbound({"type": "user", "isReplay": True})
    assert s.outbound({"type": "assistant", "message": {}}) is None
    assert s.outbound({"type": "control_request", "request": {"subtype": "can_use_tool", "tool_name": "Bash"}}) is None, \
        "a question without a request_id cannot be answered, so it does not wait for one"
    assert s.outbound({"type": "control_request", "request_id": "r", "request": {"subtype": "interrupt"}}) is None
    assert s.inbound({"type": "user", "uuid": "u"}) is None
    assert s.outbound({"type": "control_cancel_request"}) is None
    assert s.status == "running"


def test_worker_status_tracker_reports_the_newest_open_question() -> None:
    s = WorkerStatusTracker()

    def ask(rid: str, tool: str) -> dict[str, object]:
        return {"type": "control_request", "request_id": rid, "request": {"subtype": "can_use_tool", "tool_name": tool}}

    assert s.outbound(ask("r1", "Bash")) == ("requires_action", {"tool_name": "Bash", "action_description": "Bash",
                                                                 "request_id": "r1", "tool_use_id": None})
    status, details = s.outbound(ask("r2", "Edit")) or ("", None)
    assert status == "requires_action" and details is not None and details["request_id"] == "r2"
    # answering one still leaves the other open
    status, details = s.inbound({"type": "control_response", "response": {"request_id": "r2"}}) or ("", None)
    assert status == "requires_action" and details is not None and details["request_id"] == "r1"
    assert s.outbound({"type": "user", "isReplay": True}) is None, "a question is still open"


def test_api_base_of_a_session_url() -> None:
    assert api_base_of_session_url("https://h:8/v1/code/sessions/cse_01abc") == "https://h:8"
    assert api_base_of_session_url("https://h/prefix/v1/code/sessions/cse_01abc/") == "https://h/prefix"
    assert api_base_of_session_url("http://127.0.0.1:9/v2/session_ingress/ws/session_01") == "http://127.0.0.1:9"
    assert api_base_of_session_url("https://h/v1/session_ingress/ws/session_01") == "https://h"
    assert api_base_of_session_url("https://h/other/cse_01") == "https://h/other"
