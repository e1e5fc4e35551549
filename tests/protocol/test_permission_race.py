"""A permission question in the terminal and on every client: the first answer wins (docs/protocol.md §12.7)."""

from __future__ import annotations

from typing import Any

import pytest

from tether.protocol.messages import MessageError, PermissionAllow, PermissionDeny, control_request
from tether.protocol.permission_race import MAX_OPEN, PermissionRace
from tether.protocol.permissions import AlreadyResolved

AT = "2026-01-01T00:00:00Z"


def ask(rid: str = "req-1") -> dict[str, Any]:
    return control_request("can_use_tool", rid, tool_name="Bash", input={"command": "ls"}, tool_use_id="t1")


def answer(rid: str, decision: dict[str, Any] | None = None, subtype: str = "success") -> dict[str, Any]:
    body: dict[str, Any] = {"subtype": subtype, "request_id": rid}
    if decision is not None:
        body["response"] = decision
    if subtype == "error":
        body["error"] = "nope"
    return {"type": "control_response", "response": body}


def test_local_answer_wins_and_tells_every_client() -> None:
    race = PermissionRace("session_s")
    race.open(ask(), AT)
    out = race.answer_locally("req-1", PermissionAllow({}), AT)
    assert out[0] == {"type": "control_response", "response": {
        "subtype": "success", "request_id": "req-1", "response": {"behavior": "allow", "updatedInput": {}}}}
    assert out[1] == {"type": "control_cancel_request", "request_id": "req-1"}
    late = race.answer_remotely(answer("req-1", {"behavior": "deny", "message": "no"}), AT)
    assert late.outcome == "already_resolved" and late.decision is None
    with pytest.raises(AlreadyResolved):
        race.answer_locally("req-1", PermissionDeny("again"), AT)


def test_remote_answer_wins_and_the_local_answer_is_refused() -> None:
    race = PermissionRace()
    race.open(ask("r2"), AT)
    won = race.answer_remotely(answer("r2", {"behavior": "deny", "message": "not now", "interrupt": True}), AT)
    assert won.outcome == "won" and won.decision == PermissionDeny("not now", interrupt=True)
    assert race.pending == ()
    with pytest.raises(AlreadyResolved):
        race.answer_locally("r2", PermissionAllow({}), AT)


def test_invalid_and_unknown_remote_answers_change_nothing() -> None:
    race = PermissionRace()
    race.open(ask("r3"), AT)
    assert race.answer_remotely(answer("r3", {"behavior": "maybe"}), AT).outcome == "invalid"
    assert race.answer_remotely(answer("r3", subtype="error"), AT).outcome == "invalid"
    assert race.answer_remotely({"type": "control_response", "response": {}}, AT).outcome == "invalid"
    assert race.answer_remotely(answer("other", {"behavior": "allow"}), AT).outcome == "unknown"
    assert race.pending == ("r3",)
    assert race.answer_remotely(answer("r3", {"behavior": "allow", "updatedInput": {"command": "ls -l"}}),
                                AT).decision == PermissionAllow({"command": "ls -l"})


def test_withdrawn_by_the_agent() -> None:
    race = PermissionRace()
    race.open(ask("a"), AT)
    race.open(ask("b"), AT)
    assert race.withdraw("a", AT) == {"type": "control_cancel_request", "request_id": "a"}
    assert race.withdraw("a", AT) is None
    assert race.withdraw_all(AT) == [{"type": "control_cancel_request", "request_id": "b"}]
    assert race.answer_remotely(answer("b", {"behavior": "allow"}), AT).outcome == "already_resolved"
    assert race.settled("a") and race.settled("b") and not race.settled("never-asked")


def test_malformed_question() -> None:
    with pytest.raises(MessageError):
        PermissionRace().open(control_request("can_use_tool", "x"), AT)


def test_an_open_question_can_be_looked_up_until_it_is_answered() -> None:
    race = PermissionRace("session_s")
    race.open(ask("q"), AT)
    req = race.get("q")
    assert req is not None and req.request_id == "q" and req.tool_name == "Bash"
    race.answer_locally("q", PermissionAllow({}), AT)
    assert race.get("q") is None and race.get("never-asked") is None


def test_at_most_max_open_questions_stay_open_and_the_oldest_is_forgotten() -> None:
    race = PermissionRace()
    for i in range(MAX_OPEN + 1):
        race.open(ask(f"r{i}"), AT)
    assert len(race.pending) == MAX_OPEN
    assert race.get("r0") is None and race.pending[0] == "r1" and race.pending[-1] == f"r{MAX_OPEN}"
    # forgotten is not answered: a late answer to it is someone else's, not ours
    assert race.answer_remotely(answer("r0", {"behavior": "allow"}), AT).outcome == "unknown"
