"""What the standalone bridge does with a polled work item (tether.protocol.work_intake)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.protocol.bridge_policy import SPAWN_MODES
from tether.protocol.work_intake import (
    MAX_HELD,
    IntakeView,
    WorkDecision,
    classify_work,
    session_placement,
)
from tether.protocol.work_secret import WorkSecret, encode_work_secret

SID = "session_01bbbbbbbbbbbbbbbbbbbbbbbb"
KEY = "01bbbbbbbbbbbbbbbbbbbbbbbb"
OTHER = "session_01cccccccccccccccccccccccc"
TOKEN = "tok-1"
SECRET = encode_work_secret(WorkSecret(TOKEN, "http://tether.test"))


@dataclass(frozen=True)
class Item:
    id: str = "work_1"
    data_type: str = "session"
    data_id: str = SID
    secret: str = SECRET


def view(**kw: Any) -> IntakeView:
    base: dict[str, Any] = dict(hosted={}, completed=set(), held=set(), closing=set(), max_sessions=2,
                                spawn_mode="same-dir")
    base.update(kw)
    return IntakeView(**base)


FULL = {"k1": "work_a", "k2": "work_b"}  # two hosted sessions: at capacity for max_sessions=2

# (the case, the item, what the bridge knows) → (action, reason, new work)
ROWS: list[tuple[str, Item, IntakeView, tuple[str, str, bool]]] = [
    ("finished here before", Item(), view(completed={"work_1"}), ("ignore", "seen", False)),
    ("finished here wins over everything", Item(secret="bad"), view(completed={"work_1"}),
     ("ignore", "seen", False)),
    ("already held", Item(), view(hosted=FULL, held={"work_1"}), ("ignore", "held", False)),
    ("secret not base64 JSON", Item(secret="not*base64"), view(), ("reject", "bad_secret", True)),
    ("secret of an unknown version",
     Item(secret=encode_work_secret(WorkSecret(TOKEN, "http://x", version=2))), view(),
     ("reject", "bad_secret", True)),
    ("a bad secret of a healthcheck", Item(data_type="healthcheck", secret=""), view(),
     ("reject", "bad_secret", True)),
    ("healthcheck", Item(data_type="healthcheck", data_id=""), view(), ("ack", "healthcheck", True)),
    ("healthcheck at capacity", Item(data_type="healthcheck"), view(hosted=FULL), ("ack", "healthcheck", True)),
    ("unknown type", Item(data_type="future_thing"), view(), ("ack", "unknown_type", True)),
    ("invalid session id", Item(data_id="../etc/passwd"), view(), ("reject", "invalid_session", True)),
    ("empty session id", Item(data_id=""), view(), ("reject", "invalid_session", True)),
    ("the hosted session's item again (its ack was lost)", Item(), view(hosted={KEY: "work_1"}),
     ("ack", "same_item", False)),
    ("re-dispatch of a hosted session", Item(id="work_2"), view(hosted={KEY: "work_1"}),
     ("adopt", "redispatch", True)),
    ("re-dispatch under the v2 costume (cse_)", Item(id="work_2", data_id=f"cse_{KEY}"),
     view(hosted={KEY: "work_1"}), ("adopt", "redispatch", True)),
    ("re-dispatch at capacity is still adopted", Item(id="work_2"), view(hosted={KEY: "work_1", "k2": "w"}),
     ("adopt", "redispatch", True)),
    ("a session that just ended here", Item(), view(closing={KEY}), ("ignore", "closing", False)),
    ("at capacity", Item(), view(hosted=FULL), ("hold", "at_capacity", True)),
    ("at capacity, the held queue full", Item(),
     view(hosted=FULL, held={f"w{i}" for i in range(MAX_HELD)}), ("leave", "held_full", True)),
    ("a new session", Item(), view(), ("spawn", "new_session", True)),
    ("a new session with room left", Item(), view(hosted={"k1": "work_a"}), ("spawn", "new_session", True)),
]


@pytest.mark.parametrize(("case", "item", "known", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_every_row(case: str, item: Item, known: IntakeView, expected: tuple[str, str, bool]) -> None:
    decision = classify_work(item, known)
    assert (decision.action, decision.reason, decision.new_work) == expected, case


def test_what_a_decision_carries() -> None:
    spawn = classify_work(Item(), view())
    assert spawn.token == TOKEN and spawn.session_key == KEY
    assert spawn.placement == "directory" and spawn.initial is False
    adopt = classify_work(Item(id="work_2"), view(hosted={KEY: "work_1"}))
    assert adopt.token == TOKEN and adopt.session_key == KEY
    hold = classify_work(Item(), view(hosted=FULL))
    assert hold.token == TOKEN and hold.session_key == KEY and hold.placement is None
    bad = classify_work(Item(secret="not*base64"), view())
    assert bad.secret is None and bad.detail is not None and "base64" in bad.detail
    with pytest.raises(ValueError, match="reject"):
        _ = bad.token
    assert classify_work(Item(data_id="bad id"), view()).detail is None


@pytest.mark.parametrize(("mode", "workspaces", "initial", "expected"), [
    ("same-dir", False, False, "directory"),
    ("session", False, False, "directory"),
    ("worktree", False, False, "worktree"),
    ("worktree", False, True, "directory"),  # the directory's own session stays in the directory
    ("worktree", True, False, "workspace"),  # a runner: always its own work directory
    ("same-dir", True, True, "workspace"),
])
def test_placement(mode: Any, workspaces: bool, initial: bool, expected: str) -> None:
    assert session_placement(mode, workspaces=workspaces, initial=initial) == expected


def test_spawn_places_by_mode_and_knows_the_initial_session() -> None:
    worktree = view(spawn_mode="worktree", initial_session=OTHER)
    assert classify_work(Item(), worktree).placement == "worktree"
    initial = classify_work(Item(data_id=f"cse_{KEY}"), replace(worktree, initial_session=SID))
    assert initial.initial is True and initial.placement == "directory"
    runner = classify_work(Item(), view(workspaces=True))
    assert runner.placement == "workspace"


ids = st.sampled_from(["work_1", "work_2", "work_3"])
keys = st.sampled_from([KEY, "k1", "k2"])


@given(item_id=ids, data_type=st.sampled_from(["session", "healthcheck", "other"]),
       secret=st.sampled_from([SECRET, "", "not*base64"]), hosted=st.dictionaries(keys, ids, max_size=3),
       completed=st.sets(ids), held=st.sets(ids), closing=st.sets(keys), max_sessions=st.integers(1, 3),
       mode=st.sampled_from(SPAWN_MODES))
def test_invariants(item_id: str, data_type: str, secret: str, hosted: dict[str, str], completed: set[str],
                    held: set[str], closing: set[str], max_sessions: int, mode: Any) -> None:
    """Whatever the bridge knows: a finished item is never touched again, a hosted session never
    gets a second agent, nothing starts beyond capacity, and every acting decision carries a token."""
    known = view(hosted=hosted, completed=completed, held=held, closing=closing, max_sessions=max_sessions,
                 spawn_mode=mode)
    decision: WorkDecision = classify_work(Item(id=item_id, data_type=data_type, secret=secret), known)
    if item_id in completed or item_id in held:
        assert decision.action == "ignore"
    if decision.action == "spawn":
        assert KEY not in hosted and KEY not in closing and len(hosted) < max_sessions
    if KEY in hosted and data_type == "session" and decision.action not in ("ignore", "reject"):
        assert decision.action in ("adopt", "ack")
    if decision.action in ("ack", "adopt", "hold", "leave", "spawn"):
        assert decision.token == TOKEN
    assert decision.new_work == (decision.action not in ("ignore",) and decision.reason != "same_item")
