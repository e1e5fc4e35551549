"""`tether sessions` states and how `tether attach SESSION` finds a session."""

from __future__ import annotations

from typing import Any

import pytest

from tether.protocol.session_view import (
    Ambiguous,
    Found,
    NoMatch,
    format_ago,
    resolve_session_ref,
    session_state,
)

BODY_A = "01m8y02hfg1r1m7wdjba6wmxxy"
BODY_B = "01m8y02hfg1r1m7wdjba6wmxxz"


def s(status: str = "idle", online: bool | None = True, connected: bool = False, **extra: Any) -> dict[str, Any]:
    return {"session_status": status, "environment": {"online": online}, "worker": {"connected": connected},
            **extra}


@pytest.mark.parametrize(("session", "state"), [
    (s("archived", online=False), "archived"),
    (s("running", online=False), "offline"),
    (s("requires_action", connected=True), "waiting for you"),
    (s("running", connected=True), "running"),
    (s("idle", connected=True), "worker connected"),
    (s("idle"), "idle"),
    (s("idle", online=None), "idle"),  # env-less session: no machine to be offline
    ({}, "idle"),
])
def test_session_state(session: dict[str, Any], state: str) -> None:
    assert session_state(session) == state


SESSIONS = [
    {"id": f"session_{BODY_A}", "title": "Fix the login bug"},
    {"id": f"session_{BODY_B}", "title": "Fix the logout bug"},
    {"id": "session_01m8y02hfg1r1m7wdjba6wmxx0", "title": "Docs"},
    {"id": "session_01m8y02hfg1r1m7wdjba6wmxx1", "title": "docs site"},
]


@pytest.mark.parametrize(("ref", "expected"), [
    (f"session_{BODY_A}", SESSIONS[0]),
    (f"cse_{BODY_B}", SESSIONS[1]),  # the other costume, compared by body
    ("fix the logi", SESSIONS[0]),  # case-insensitive prefix
    ("Docs", SESSIONS[2]),  # an exact title beats a longer one with the same prefix
])
def test_found(ref: str, expected: dict[str, Any]) -> None:
    found = resolve_session_ref(ref, SESSIONS)
    assert isinstance(found, Found) and found.session == expected


def test_ambiguous_prefix_lists_the_candidates() -> None:
    found = resolve_session_ref("Fix the", SESSIONS)
    assert isinstance(found, Ambiguous) and found.candidates == SESSIONS[:2]


@pytest.mark.parametrize("ref", ["nothing", "", "   ", "session_01m8y02hfg1r1m7wdjba6wmxx9"])
def test_no_match(ref: str) -> None:
    assert isinstance(resolve_session_ref(ref, SESSIONS), NoMatch)


@pytest.mark.parametrize(("seconds", "text"), [(0, "just now"), (42, "42s ago"), (300, "5m ago"),
                                               (3 * 3600 + 5, "3h ago"), (2 * 86400, "2d ago")])
def test_format_ago(seconds: float, text: str) -> None:
    assert format_ago(seconds) == text
