from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol import session_status as s
from tether.protocol.session_tracker import SessionTracker

CUES: tuple[s.Cue, ...] = get_args(s.Cue)
LIVE: tuple[s.SessionStatus, ...] = ("idle", "running", "requires_action")


def ask(rid: str | None = "r1") -> dict[str, Any]:
    return {"type": "control_request", **({"request_id": rid} if rid else {}),
            "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {}}}


def test_a_turn_with_a_permission() -> None:
    status: s.SessionStatus = "idle"
    for cue, expected in [("prompt", "running"), ("agent_output", "running"), ("permission_asked", "requires_action"),
                          ("permissions_settled", "running"), ("permission_asked", "requires_action"),
                          ("prompt", "running"), ("turn_ended", "idle"), ("archived", "archived")]:
        status = s.next_status(status, cue)  # type: ignore[arg-type]
        assert status == expected, cue
    assert s.next_status("running", None) == "running"


@given(st.sampled_from(CUES))
def test_archived_is_final(cue: s.Cue) -> None:
    assert s.next_status("archived", cue) == "archived"


@pytest.mark.parametrize("status", LIVE)
def test_every_live_status_archives_and_ends_its_turn(status: s.SessionStatus) -> None:
    assert s.next_status(status, "archived") == "archived"
    assert s.next_status(status, "turn_ended") == "idle"


def test_the_table_names_only_known_statuses_and_cues() -> None:
    for (before, cue), after in s.TRANSITIONS.items():
        assert {before, after} <= s.STATUSES and cue in CUES
    assert s.next_status("idle", "worker_gone") == "idle"  # pairs not in the table leave it alone
    assert s.next_status("requires_action", "worker_gone") == "idle"


def test_cues_of_messages() -> None:
    assert s.inbound_cue({"type": "user"}) == "prompt"
    assert s.inbound_cue({"type": "control_request"}) is None
    assert s.outbound_cue({"type": "assistant"}) == "agent_output"
    assert s.outbound_cue({"type": "user"}) == "agent_output"
    assert s.outbound_cue({"type": "result"}) == "turn_ended"
    assert s.outbound_cue(ask()) == "permission_asked"
    assert s.outbound_cue(ask(None)) is None  # a request nobody could answer asks nothing
    assert s.outbound_cue({"type": "control_request", "request_id": "x", "request": {"subtype": "hook_callback"}}) is None
    assert s.outbound_cue({"type": "system"}) is None
    assert s.settled_cue(0) == "permissions_settled" and s.settled_cue(2) is None


def test_a_worker_stated_status_wins_unless_archived() -> None:
    assert s.reported_status("idle", "requires_action") == "requires_action"
    assert s.reported_status("running", None) == "running"
    assert s.reported_status("archived", "running") == "archived"


def test_worker_presence() -> None:
    assert not s.worker_connected(None, 10.0, 10.0, 60.0)
    assert not s.worker_connected("disconnected", 10.0, 10.0, 60.0)
    assert s.worker_connected("connected", None, 1e9, 60.0)  # a v1 socket is open: no TTL
    assert s.worker_connected("idle", 100.0, 159.9, 60.0)
    assert not s.worker_connected("running", 100.0, 160.0, 60.0)
    assert not s.worker_connected("idle", None, 0.0, 60.0)
    assert s.presence_on_heartbeat(None) == "idle" and s.presence_on_heartbeat("disconnected") == "idle"
    assert s.presence_on_heartbeat("running") is None
    assert s.presence_on_report("running", "idle", True) == "disconnected"
    assert s.presence_on_report(None, "requires_action", False) == "requires_action"
    assert s.presence_on_report("disconnected", None, False) == "idle"
    assert s.presence_on_report("running", None, False) == "running"


@given(st.lists(st.sampled_from(["prompt", "assistant", "ask", "cancel", "answer", "result"]), max_size=30))
def test_the_session_tracker_follows_the_same_table(steps: list[str]) -> None:
    """A host's tracker and the server's table agree on every sequence of messages."""
    tracker = SessionTracker()
    status: s.SessionStatus = "idle"
    pending: list[str] = []
    for n, step in enumerate(steps):
        if step == "prompt":
            msg, inbound = {"type": "user", "message": {"role": "user", "content": "hi"}}, True
        elif step == "assistant":
            msg, inbound = {"type": "assistant", "message": {"content": []}}, False
        elif step == "ask":
            msg, inbound = ask(f"r{n}"), False
            pending.append(f"r{n}")
        elif step == "result":
            msg, inbound = {"type": "result", "subtype": "success"}, False
            pending.clear()
        else:
            rid = pending.pop(0) if pending else "none"
            msg, inbound = ({"type": "control_cancel_request", "request_id": rid}, False) if step == "cancel" else (
                {"type": "control_response", "response": {"subtype": "success", "request_id": rid}}, True)
            status = s.next_status(status, s.settled_cue(len(pending)) if rid != "none" else None)
        if step != "cancel" and step != "answer":
            status = s.next_status(status, s.inbound_cue(msg) if inbound else s.outbound_cue(msg))
        (tracker.observe_inbound if inbound else tracker.observe_outbound)(msg, float(n))
        assert tracker.state == status, steps[: n + 1]
