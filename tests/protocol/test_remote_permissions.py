"""The remote client's open permission questions and its answer frames."""

from __future__ import annotations

from dataclasses import dataclass

from tether.protocol.remote_permissions import ABORTED_MESSAGE, PendingPermissions, allow_frame, deny_frame


@dataclass(frozen=True)
class Q:
    request_id: str
    tool_use_id: str | None = None


def test_shown_once_oldest_first() -> None:
    open_: PendingPermissions[Q] = PendingPermissions()
    assert open_.add(Q("r1", "t1")) and open_.add(Q("r2", "t2"))
    assert not open_.add(Q("r1", "t1"))  # sent again on reconnect
    assert open_.current() == Q("r1", "t1") and len(open_) == 2 and "r2" in open_


def test_resolved_anywhere_disappears() -> None:
    open_: PendingPermissions[Q] = PendingPermissions()
    open_.add(Q("r1"))
    assert open_.resolve("r1") == Q("r1")
    assert open_.resolve("r1") is None and open_.current() is None


def test_cancel_matches_tool_use_id_first_then_request_id() -> None:
    open_: PendingPermissions[Q] = PendingPermissions()
    open_.add(Q("r1", "t1"))
    open_.add(Q("r2", "t2"))
    assert open_.cancel("nope", "t2") == Q("r2", "t2")
    assert open_.cancel("r1", "unknown") == Q("r1", "t1")
    assert open_.cancel(None, None) is None and not open_.all()


def test_clear() -> None:
    open_: PendingPermissions[Q] = PendingPermissions()
    open_.add(Q("r1"))
    assert open_.clear() == [Q("r1")] and len(open_) == 0


def test_answer_frames_carry_only_behavior_and_input_or_message() -> None:
    assert allow_frame("r1", {"command": "ls"}) == {"type": "control_response", "response": {
        "subtype": "success", "request_id": "r1", "response": {"behavior": "allow", "updatedInput": {"command": "ls"}}}}
    assert deny_frame("r1")["response"]["response"] == {"behavior": "deny", "message": "User denied permission"}
    assert deny_frame("r1", "")["response"]["response"]["message"] == "User denied permission"
    assert deny_frame("r1", ABORTED_MESSAGE)["response"]["response"]["message"] == "User aborted"


def test_an_open_question_is_found_by_its_request_id() -> None:
    open_: PendingPermissions[Q] = PendingPermissions()
    open_.add(Q("r1", "t1"))
    open_.add(Q("r2", "t2"))
    assert open_.get("r2") == Q("r2", "t2") and open_.get("r3") is None
    open_.resolve("r2")
    assert open_.get("r2") is None
